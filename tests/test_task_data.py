"""Fine-tuning data: the readers of GLUE-style TSV and CSV, JSONL, CoNLL and SQuAD files and their quirks, the
one-line errors (file and line) and warnings for data that cannot be used as given, and the check of a task
against the model's head."""

from __future__ import annotations

import csv
import json
import re

import pytest
from click.testing import CliRunner

from bertforge.errors import ConfigError, InputError
from bertforge.model import BertForTokenClassification
from bertforge.tasks import build_task, check_head
from bertforge.io.datasets import TextExample, read_conll, read_squad, read_text_examples
from bertforge.tasks.classification import ClassificationTask
from bertforge.tasks.ner import TokenClassificationTask
from bertforge.tokenization import BertTokenizer
from conftest import REPO, fixture_data, require_data
from task_helpers import SMALL, sst2_slice


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

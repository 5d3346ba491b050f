"""`bertforge distill`'s mistakes end in one line: a teacher fine-tuned for another task, a student deeper or wider
than its teacher or pre-trained on another vocabulary or casing, labels the teacher does not know, classifier
pooling for a task without a sentence classifier; --teacher and --student are taken as a file of their folder."""

from __future__ import annotations

import pytest

from distill_helpers import _one_line_error, _pretrained

pytestmark = pytest.mark.usefixtures("one_thread")


def test_classifier_pooling_is_refused_for_a_task_without_a_sentence_classifier(teachers, conll, tmp_path):
    line = _one_line_error("--task", "ner", "--teacher", teachers["ner"], "--train", conll,
                           "--classifier-pooling", "mean", "--output", tmp_path / "out")
    assert line == "error: --classifier-pooling is for a sentence classifier (--task classification or " \
                   "pair-classification), not --task ner"


def test_a_teacher_fine_tuned_for_another_task_is_refused(teachers, sst2, tmp_path):
    line = _one_line_error("--task", "classification", "--teacher", teachers["ner"], "--train", sst2 / "train.tsv",
                           "--output", tmp_path / "out")
    assert "BertForSequenceClassification" in line and "BertForTokenClassification" in line


def test_a_student_deeper_or_wider_than_its_teacher_is_refused(teachers, sst2, tmp_path):
    line = _one_line_error("--task", "classification", "--teacher", teachers["classification"], "--train",
                           sst2 / "train.tsv", "--student-layers", 5, "--output", tmp_path / "out")
    assert "--student-layers 5: the teacher has 4 layers" in line
    line = _one_line_error("--task", "classification", "--teacher", teachers["classification"], "--train",
                           sst2 / "train.tsv", "--student-size", "L2-H128", "--output", tmp_path / "out")
    assert "--student-size L2-H128" in line and "larger than its teacher (L4-H32)" in line


def test_a_pretrained_student_must_fit_its_teacher(teachers, sst2, tokenizer, tmp_path):
    start = ("--task", "classification", "--teacher", teachers["classification"], "--train", sst2 / "train.tsv")
    wide = _pretrained(tmp_path / "wide", tokenizer, layers=2, hidden=64)
    line = _one_line_error(*start, "--student", wide, "--output", tmp_path / "out")
    assert f"--student {wide}: the student (L2-H64) is larger than its teacher (L4-H32)" in line
    other = _pretrained(tmp_path / "other", tokenizer, layers=2, hidden=16)
    words = (other / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (other / "vocab.txt").write_text("\n".join(words[:2000] + ["notaword"] + words[2001:]) + "\n", encoding="utf-8")
    line = _one_line_error(*start, "--student", other, "--output", tmp_path / "out")
    assert f"--student {other}: its vocabulary differs from the teacher's" in line
    cased = _pretrained(tmp_path / "cased", type(tokenizer).from_pretrained(do_lower_case=False), layers=2, hidden=16)
    line = _one_line_error(*start, "--student", cased, "--output", tmp_path / "out")  # it said "vocabulary differs"
    assert line == f"error: --student {cased}: its tokenizer has do_lower_case false, the teacher's true; a student " \
                   "must have been pre-trained on text cased as the teacher's inputs are"
    line = _one_line_error(*start, "--student", other, "--student-size", "L2-H16", "--output", tmp_path / "out")
    assert "without --student-layers, --student-size and --save-as" in line
    empty = tmp_path / "empty"  # beside the output: one inside the --student folder is refused before this
    empty.mkdir()
    line = _one_line_error(*start, "--student", empty, "--output", tmp_path / "out")
    assert f"--student {empty}: no config.json (or Google's bert_config.json) there" in line
    line = _one_line_error("--task", "mlm", "--teacher", teachers["mlm"], "--train", empty, "--student", other,
                           "--output", tmp_path / "out")
    assert "--task mlm: the student starts from the teacher's layers (--student-layers), not --student-size, " \
           "--student or --prune" in line
    line = _one_line_error("--task", "mlm", "--teacher", teachers["mlm"], "--train", empty, "--prune",
                           "--output", tmp_path / "out")
    assert "not --student-size, --student or --prune" in line
    line = _one_line_error("--task", "mlm", "--teacher", teachers["mlm"], "--train", empty, "--layer-lr-decay", 0.8,
                           "--output", tmp_path / "out")
    assert "--layer-lr-decay 0.8 is for fine-tuning a task student; --task mlm trains all of its layers at one rate" \
        in line


def test_labels_the_teacher_does_not_know_are_refused(teachers, sst2, tmp_path):
    rows = (sst2 / "train.tsv").read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.tsv"
    bad.write_text("\n".join(rows[:6] + ["a sentence with a new label\tneutral"]) + "\n", encoding="utf-8")
    line = _one_line_error("--task", "classification", "--teacher", teachers["classification"], "--train", bad,
                           "--output", tmp_path / "out")
    assert f"{bad}:7" in line and "'neutral'" in line and "teacher" in line


def test_teacher_and_student_are_taken_as_a_file_of_their_folder_as_predict_takes_a_model(teachers, sst2, tokenizer,
                                                                                          tmp_path):
    """--teacher and --student were click directories: given model/config.json, which predict --model takes, they
    stopped at click's `Directory '.../config.json' is a file.`"""
    wide = _pretrained(tmp_path / "wide", tokenizer, layers=2, hidden=64)
    line = _one_line_error("--task", "classification", "--teacher", teachers["classification"] / "config.json",
                           "--train", sst2 / "train.tsv", "--student", wide / "config.json", "--output", tmp_path / "out")
    assert f"--student {wide}: the student (L2-H64) is larger than its teacher (L4-H32)" in line

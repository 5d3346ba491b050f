"""`distill --prune`: a student cut from its teacher (the cut itself, bertforge.distillation.prune, is tested in
test_prune.py) starts closer to it than a fresh one; --prune-depth keeps the layers that matter or evenly spaced
ones; a cut with no size to cut to, or with no training inputs to measure the teacher on, is refused."""

from __future__ import annotations

import pytest

from bertforge.distillation.prune import important_layers
from bertforge.model import BertForSequenceClassification
from bertforge.tasks import ClassificationTask, read_task_data

from distill_helpers import SST2_LABELS, _distill, _one_line_error, _train_log

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_student_cut_from_its_teacher_starts_closer_to_it_than_a_fresh_one(wide_teacher, sst2, tmp_path):
    common = ("--task", "classification", "--teacher", wide_teacher, "--train", sst2 / "train.tsv", "--student-size",
              "L2-H128", "--epochs", 2, "--learning-rate", "1e-4")
    student = _distill(*common, "--prune", "--output", tmp_path / "pruned")["student"]
    assert (student["layers"], student["hidden_size"], student["attention_heads"]) == (2, 128, 1)
    assert student["from_teacher_layers"] == [0, 2] and student["layers_chosen_by"] == "spaced"
    assert student["pruned_on"] == 96
    assert BertForSequenceClassification.from_pretrained(tmp_path / "pruned").config.hidden_size == 128
    _distill(*common, "--output", tmp_path / "fresh")
    assert _train_log(tmp_path / "pruned", "soft_loss")[0] < 0.75 * _train_log(tmp_path / "fresh", "soft_loss")[0]


def test_prune_keeps_the_layers_that_matter_or_evenly_spaced_ones(wide_teacher, sst2, tokenizer, tmp_path):
    teacher = BertForSequenceClassification.from_pretrained(wide_teacher)
    first = teacher.bert.encoder.layers[0]
    for linear in (first.attention.out, first.output):  # it adds nothing: its LayerNorms pass the input through
        linear.weight.data.zero_()
        linear.bias.data.zero_()
    teacher.save_pretrained(tmp_path / "teacher", tokenizer)
    common = ("--task", "classification", "--teacher", tmp_path / "teacher", "--train", sst2 / "train.tsv",
              "--student-size", "L2-H128", "--max-steps", 1, "--prune")
    assert _distill(*common, "--output", tmp_path / "spaced")["student"]["from_teacher_layers"] == [0, 2]
    important = _distill(*common, "--prune-depth", "importance", "--output", tmp_path / "important")["student"]
    assert important["layers_chosen_by"] == "importance"
    teacher.eval()
    sentences = ClassificationTask(list(SST2_LABELS.values())).train_features(
        read_task_data("classification", sst2 / "train.tsv"), tokenizer, 128)
    assert important["from_teacher_layers"] == important_layers(teacher, 2, sentences)
    assert len(important["from_teacher_layers"]) == 2 and 0 not in important["from_teacher_layers"]


def test_prune_on_an_empty_training_set_is_refused(wide_teacher, tmp_path):
    """--prune measures the teacher on training inputs: a file without any is named before the cut."""
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n", encoding="utf-8")
    line = _one_line_error("--task", "classification", "--teacher", wide_teacher, "--train", tmp_path / "train.tsv",
                           "--student-size", "L2-H128", "--prune", "--output", tmp_path / "out")
    assert f"{tmp_path / 'train.tsv'}: no training examples in the file" in line


@pytest.mark.parametrize("options, message", [
    (("--prune",), "error: --prune needs --student-size, the size to cut the teacher down to (e.g. L4-H256)"),
    (("--prune", "--student-layers", 2), "error: --student-layers 2 with --prune: --prune cuts the teacher down to a "
                                         "--student-size (e.g. L4-H256); give --student-size instead"),
    (("--prune", "--student-size", "L2-H128", "--student", "."), "give one of them"),
    (("--prune-depth", "spaced", "--student-size", "L2-H128"), "give --prune too"),
])
def test_prune_without_a_size_to_cut_to_is_refused(wide_teacher, sst2, tmp_path, options, message):
    line = _one_line_error("--task", "classification", "--teacher", wide_teacher, "--train", sst2 / "train.tsv",
                           *options, "--output", tmp_path / "out")
    assert message in line

"""Resuming and repeating a distillation: a run continues only with the same targets and settings (also from a
checkpoint written before --attention-weight), one killed mid-epoch and resumed is bit-identical to one run
whole, the digest that identifies its data sees every change of the targets and the teacher's outputs, and the
same seed gives the same student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill_helpers import _distill, _one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_run_continues_only_with_the_same_targets(teachers, sst2, tmp_path):
    """--resume goes through the engine's checkpoint check: other distillation settings are refused."""
    output = tmp_path / "run"
    arguments = ["--task", "classification", "--teacher", teachers["classification"], "--train", sst2 / "train.tsv",
                 "--student-layers", 2, "--max-steps", 4, "--checkpoint-every", 2, "--output", output]
    _distill(*arguments)
    line = _one_line_error(*arguments, "--resume", output, "--alpha", 0.9)
    assert "alpha: checkpoint 0.5, now 0.9" in line
    # distill's --layer-lr-decay (finetune's option) reaches the run; its default is none, not finetune's 0.8
    assert json.loads((output / "checkpoint" / "checkpoint.json").read_text())["run"]["layer_lr_decay"] == 1.0
    line = _one_line_error(*arguments, "--resume", output, "--layer-lr-decay", 0.5)
    assert "layer_lr_decay: checkpoint 1.0, now 0.5" in line
    line = _one_line_error(*arguments, "--resume", output, "--lr-scheduler-type", "cosine")  # reaches the run too
    assert "lr_scheduler_type: checkpoint 'linear', now 'cosine'" in line
    line = _one_line_error(*arguments, "--resume", output, "--weight-decay", 0)
    assert "weight_decay: checkpoint 0.01, now 0.0" in line
    _as_written_before_attention_weight(output)
    assert _one_line_error(*arguments, "--resume", output, "--attention-weight", 1).endswith(
        "attention_weight: checkpoint 0.0, now 1.0")
    assert _distill(*arguments, "--resume", output)["steps"] == 4


def _as_written_before_attention_weight(run: Path) -> None:
    """Rewrite `run`'s checkpoint as bertforge wrote it before --attention-weight: no such setting, and the
    objective's statistics without "attention"."""
    manifest = run / "checkpoint" / "checkpoint.json"
    state = json.loads(manifest.read_text())
    del state["run"]["attention_weight"]
    state["cumulative"] = state["cumulative"][:-1]
    manifest.write_text(json.dumps(state))


@pytest.mark.slow
def test_distillation_killed_mid_epoch_then_resumed_is_bit_identical(teachers, sst2, tmp_path):
    import subprocess
    import sys

    from conftest import kill_at_first_checkpoint

    def command(output):
        return [sys.executable, "-m", "bertforge", "distill", "--task", "classification", "--teacher",
                str(teachers["classification"]), "--train", str(sst2 / "train.tsv"), "--unlabelled",
                str(sst2 / "unlabelled.tsv"), "--student-layers", "2", "--epochs", "2", "--batch-size", "16",
                "--checkpoint-every", "3", "--threads", "1", "--output", str(output)]

    whole = subprocess.run(command(tmp_path / "whole"), capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-2000:]
    steps = json.loads(whole.stdout.strip().splitlines()[-1])["steps"]  # 128 rows / 16 = 8 per epoch
    run = tmp_path / "killed"
    killed_at = kill_at_first_checkpoint(command(run), run, timeout=300)
    assert not (run / "model.safetensors").exists(), "the run finished before it could be killed"
    assert 0 < killed_at < steps and killed_at % (steps // 2), (killed_at, steps)  # mid-epoch
    _as_written_before_attention_weight(run)  # an older bertforge's checkpoint continues just the same
    resumed = subprocess.run([*command(run), "--resume", str(run)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()


def test_distilling_twice_with_the_same_seed_gives_identical_students(teachers, conll, tmp_path):
    """A fresh student (--student-size) is drawn after the seed is set, like a fine-tuning head."""
    weights = []
    for name in ("a", "b"):
        _distill("--task", "ner", "--teacher", teachers["ner"], "--train", conll, "--student-size", "L2-H128",
                 "--max-steps", 3, "--threads", 1, "--seed", 5, "--output", tmp_path / name)
        weights.append((tmp_path / name / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]


def test_a_resumed_distillation_sees_every_change_of_its_targets():
    """Distillation identifies its training data by fine-tuning's digest plus the teacher's outputs, so a
    change of any target (a QA answer's end, the segment ids) or of the teacher's logits is seen."""
    import numpy as np

    from bertforge.tasks.trainer import features_digest

    def digest(**change):
        feature = {"input_ids": [101, 2054, 102, 3000, 102], "token_type_ids": [0, 0, 0, 1, 1], "start_positions": 3,
                   "end_positions": 3, "teacher_logits": np.zeros((5, 2), dtype=np.float32), **change}
        return features_digest([feature], arrays=("teacher_logits", "teacher_hidden"))

    same = digest()
    assert digest() == same
    for change in ({"end_positions": 4}, {"start_positions": 4}, {"token_type_ids": [0, 0, 0, 0, 1]},
                   {"teacher_logits": np.ones((5, 2), dtype=np.float32)},
                   {"teacher_hidden": np.zeros((5, 4), dtype=np.float32)}):
        assert digest(**change) != same, change

"""A fine-tuning run reproduced and resumed: the same seed (or its run card) gives the same weights and so does
gradient checkpointing, a run killed with SIGKILL or stopped with Ctrl-C mid-epoch resumes to the uninterrupted
run's weights byte for byte, and --resume refuses a checkpoint made with other settings, data or directory
(one from before a setting existed resumes with that setting's old default)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bertforge.cli.main import cli
from bertforge.model import BertConfig, BertForSequenceClassification
from bertforge.runcard import CARD_FILE, read_card
from bertforge.tasks.trainer import FinetuneArgs
from bertforge.training.engine import SETTINGS_ADDED_LATER
from bertforge.training.state import Checkpoint

from conftest import kill_at_first_checkpoint
from training_helpers import SST2, _finetune_command


pytestmark = pytest.mark.usefixtures("one_thread")


def test_finetune_twice_with_the_same_seed_gives_identical_weights(tiny_encoder, tmp_path):
    """The classification head is new (random): it must be drawn after the seed is set. The run
    card made by the first run reruns it to the same weights too."""
    files = []
    for name in ("a", "b"):
        result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / name, "--max-steps", "3"))
        assert result.exit_code == 0, result.output
        files.append((tmp_path / name / "model.safetensors").read_bytes())
    assert files[0] == files[1]
    card = read_card(tmp_path / "a")
    assert card["seed"] == 7 and card["threads"] == 1 and card["options"]["max_steps"] == 3
    assert card["figures"]["steps"] == 3 and len(card["inputs"]) == 2  # the training file and the model
    result = CliRunner().invoke(cli, ["rerun", str(tmp_path / "a" / CARD_FILE), "--output", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "model.safetensors").read_bytes() == files[0]


def test_gradient_checkpointing_trains_the_same_weights_and_may_change_on_resume(tiny_encoder, tmp_path,
                                                                                 monkeypatch):
    """Recomputing the layers in the backward pass (dropout's random state replayed) changes memory, not the run:
    the same weights, bit for bit, and a run may be resumed with it switched."""
    import bertforge.model.pretrained as pretrained

    plain = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "plain", "--max-steps", "3"))
    assert plain.exit_code == 0, plain.output
    checkpointed = []
    monkeypatch.setattr(pretrained, "checkpoint", lambda layer, *inputs, **options: (
        checkpointed.append(options), torch.utils.checkpoint.checkpoint(layer, *inputs, **options))[1])
    command = _finetune_command(tiny_encoder, tmp_path / "recomputed", "--max-steps", "3", "--gradient-checkpointing")
    recomputed = CliRunner().invoke(cli, command)
    assert recomputed.exit_code == 0, recomputed.output
    layers = BertConfig.from_json_file(tiny_encoder / "config.json").num_hidden_layers
    assert checkpointed == [{"use_reentrant": False}] * 3 * 2 * layers  # every layer of every micro-batch
    assert (tmp_path / "recomputed" / "model.safetensors").read_bytes() == \
        (tmp_path / "plain" / "model.safetensors").read_bytes()
    # what a checkpoint must match to be resumed leaves it out
    assert FinetuneArgs(output_dir="a", gradient_checkpointing=True).settings() == FinetuneArgs(output_dir="a").settings()


def test_checkpoint_from_before_a_setting_existed_resumes_with_its_default(tiny_encoder, tmp_path):
    """A checkpoint written before `layer_lr_decay` existed was made without the decay: it resumes
    without it, not with classification's default 0.8 taken since; one made with another value does not."""
    output = tmp_path / "run"
    command = _finetune_command(tiny_encoder, output, "--max-steps", "4", "--layer-lr-decay", "1")
    assert CliRunner().invoke(cli, command).exit_code == 0
    manifest = output / "checkpoint" / "checkpoint.json"
    written = json.loads(manifest.read_text())
    for value, exit_code in ((None, 0), (0.5, 2)):
        # nor the settings that came later still (the schedule's shape, linear until then, ...)
        run_settings = {k: v for k, v in written["run"].items() if k not in SETTINGS_ADDED_LATER}
        manifest.write_text(json.dumps({**written, "run": {**run_settings, **({"layer_lr_decay": value}
                                                                             if value else {})}}))
        result = CliRunner().invoke(cli, [*command, "--resume", str(output)])
        assert result.exit_code == exit_code, result.output
    assert "layer_lr_decay: checkpoint 0.5, now 1.0" in result.output
    manifest.write_text(json.dumps({**written, "run": run_settings}))
    result = CliRunner().invoke(cli, [*command[:-2], "--resume", str(output)])
    assert result.exit_code == 2 and "layer_lr_decay: checkpoint 1.0, now 0.8" in result.output
    # the settings a fine-tuning checkpoint of 2026-12-05 held (the thirty-seventh session's code): each one added
    # since must be in SETTINGS_ADDED_LATER, or such a run no longer resumes
    held = {"adam_beta1", "adam_beta2", "adam_epsilon", "batch_size", "bf16", "epochs", "eval_batch_size",
            "gradient_accumulation_steps", "group_by_length", "label_smoothing_factor", "labels", "layer_lr_decay",
            "learning_rate", "lr_scheduler_type", "max_grad_norm", "max_steps", "seed", "task", "total_steps",
            "train_features", "warmup_ratio", "warmup_steps", "weight_decay"}
    manifest.write_text(json.dumps({**written, "run": {k: v for k, v in written["run"].items() if k in held}}))
    result = CliRunner().invoke(cli, [*command, "--resume", str(output)])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
@pytest.mark.parametrize("options", [(), ("--ema-decay", "0.9")], ids=["weights", "moving-average"])
def test_finetune_killed_mid_epoch_then_resumed_is_bit_identical(tiny_encoder, tmp_path, options):
    whole = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "whole", *options))
    assert whole.exit_code == 0, whole.output
    steps = json.loads((tmp_path / "whole" / "metrics.json").read_text())["total_steps"]
    steps_per_epoch = steps // 2

    run = tmp_path / "killed"
    command = [sys.executable, "-m", "bertforge", *_finetune_command(tiny_encoder, run, *options)]
    killed_at = kill_at_first_checkpoint(command, run, timeout=300)
    assert not (run / "model.safetensors").exists(), "the run finished before it could be killed"
    assert 0 < killed_at < steps and killed_at % steps_per_epoch, (killed_at, steps_per_epoch)  # mid-epoch

    resumed = subprocess.run([*command, "--resume", str(run)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()
    logged = [int(line.split(",")[0]) for line in (run / "train_log.csv").read_text().splitlines()[1:]]
    assert logged == list(range(1, steps + 1))
    if options:  # the model kept is the moving average the last checkpoint holds, not the last weights
        checkpoint = Checkpoint(run)
        kept = BertForSequenceClassification.from_pretrained(run).state_dict()
        averaged = load_file(checkpoint.directory / checkpoint["averaged_file"])
        trained = load_file(checkpoint.directory / checkpoint["model_file"])
        assert all(torch.equal(kept[name], averaged[f"module.{name}"]) for name in kept)
        assert not torch.equal(kept["classifier.weight"], trained["classifier.weight"])


@pytest.mark.slow
def test_finetune_stopped_by_ctrl_c_exits_130_and_resumes_bit_identical(tiny_encoder, tmp_path):
    whole = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "whole"))
    assert whole.exit_code == 0, whole.output
    steps = json.loads((tmp_path / "whole" / "metrics.json").read_text())["total_steps"]

    run = tmp_path / "stopped"
    command = [sys.executable, "-m", "bertforge", *_finetune_command(tiny_encoder, run), "--checkpoint-every", "1000"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = run / "train_log.csv"
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 2):
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    stopped_at = Checkpoint(run)["step"]
    assert 0 < stopped_at < steps and f"stopped at step {stopped_at} of {steps}" in stderr
    assert not (run / "model.safetensors").exists()

    resumed = subprocess.run([*command, "--resume", str(run)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()


def test_finetune_resume_refuses_a_changed_start_or_validation_set_and_another_output(tiny_encoder, tmp_path):
    """The best model so far was chosen on the validation set, and the head reads what classifier_pooling
    says: a resume with either changed trained one model in two ways without a word."""
    import shutil

    run = tmp_path / "run"
    validation = tmp_path / "validation.tsv"
    validation.write_text("sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(
        ["a fine film", "dull", "moving", "flat", "witty", "tedious"])), encoding="utf-8")
    other = tmp_path / "other.tsv"
    other.write_text(validation.read_text(encoding="utf-8").replace("dull", "boring"), encoding="utf-8")
    common = ["--validation", str(validation), "--max-steps", "4", "--checkpoint-every", "2"]
    assert CliRunner().invoke(cli, _finetune_command(tiny_encoder, run, *common, "--classifier-pooling",
                                                     "cls")).exit_code == 0
    for changed, words in ((["--classifier-pooling", "mean"], "start.classifier_pooling: checkpoint 'cls', now 'mean'"),
                           (["--validation", str(other)], "eval_features: the validation examples differ (--validation")):
        result = CliRunner().invoke(cli, [*_finetune_command(tiny_encoder, run, *common, "--classifier-pooling", "cls"),
                                          *changed, "--resume", str(run)])
        assert result.exit_code == 2 and "was made with another configuration" in result.output and words in \
            result.output, result.output
    elsewhere = shutil.copytree(run, tmp_path / "elsewhere")
    (elsewhere / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, [*_finetune_command(tiny_encoder, elsewhere, *common, "--classifier-pooling",
                                                         "cls"), "--resume", str(run)])
    assert result.exit_code == 2 and "continues the run in that directory" in result.output
    assert (elsewhere / "notes.txt").read_text() == "mine"
    inside = shutil.copy(SST2, run / "train.tsv")
    command = _finetune_command(tiny_encoder, run, *common, "--overwrite")
    command[command.index("--train") + 1] = str(inside)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 2 and f"would overwrite the input {inside}" in result.output
    assert Path(inside).exists() and (run / "metrics.json").exists()


def test_a_resumed_log_keeps_the_rows_before_the_checkpoint_as_they_were_written(tmp_path):
    """Rows were read back as floats and rewritten: a count of 200 became 200.0 after a resume."""
    from bertforge.training.logs import CsvLog

    log = CsvLog(tmp_path / "eval_log.csv", None)
    for step in (2, 4, 6):
        log.write({"step": step, "accuracy": 0.5 + step / 100, "examples": 200})
    written = (tmp_path / "eval_log.csv").read_text().splitlines()
    resumed = CsvLog(tmp_path / "eval_log.csv", keep_through_step=4)  # the checkpoint was at step 4
    assert (tmp_path / "eval_log.csv").read_text().splitlines() == written[:3]
    resumed.write({"step": 6, "accuracy": 0.56, "examples": 200})
    assert (tmp_path / "eval_log.csv").read_text().splitlines() == written

"""Pre-training's loop: the loss falls on real text and the model loads in transformers, a run killed and resumed is
bit-identical, two torchrun nodes train as one process, --init-from, --resume and --overwrite, and the command's
option errors. The prepared data is tested in test_pretraining_data.py, export and evaluate in
test_pretraining_export.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bertforge.cli.main import cli
from bertforge.errors import CheckpointError, ConfigError
from bertforge.model import BertConfig, BertModel, BertForPreTraining
from bertforge.pretraining import PretrainingData
from bertforge.pretraining.trainer import train
from conftest import kill_at_first_checkpoint
from pretraining_helpers import _config

PYTHON = sys.executable

pytestmark = pytest.mark.usefixtures("one_thread")


def free_port() -> int:
    """A port no one listens on now, for torchrun's rendezvous (a fixed one collides with other runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = CliRunner().invoke(cli, ["pretrain", "prepare", str(empty), str(tmp_path / "out")])
    assert result.exit_code == 2 and "empty.jsonl" in result.output
    data = tmp_path / "data"  # beside the run: a run inside its data is refused
    data.mkdir()
    result = CliRunner().invoke(cli, ["pretrain", "train", str(data), str(tmp_path / "run")])
    assert result.exit_code == 2 and "not a prepared data directory" in result.output
    # the engine's check of the settings, before any data is read or anything written
    result = CliRunner().invoke(cli, ["pretrain", "train", str(data), str(tmp_path / "run"), "--weight-decay", "-1"])
    assert result.exit_code == 2 and "error: --weight-decay must be 0 or more, got -1.0" in result.output
    assert not (tmp_path / "run").exists()
    # as in finetune: 0 would freeze the weights, a negative norm means nothing
    for norm in ("0", "-1"):
        result = CliRunner().invoke(cli, ["pretrain", "train", str(data), str(tmp_path / "run"),
                                          "--max-grad-norm", norm])
        assert result.exit_code == 2 and "Invalid value for '--max-grad-norm'" in result.output
        assert f"{float(norm)} is not in the range x>0" in result.output
    for option, value in (("--skip-documents", "-1"), ("--max-documents", "0")):
        result = CliRunner().invoke(cli, ["pretrain", "prepare", str(empty), str(tmp_path / "out"), option, value])
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output


@pytest.mark.slow
def test_fifty_steps_on_real_text_loss_falls(data_dir, tmp_path):
    result = train(_config(data_dir, tmp_path, max_steps=50, log_every=10, checkpoint_every=50,
                           eval_data_dir=str(data_dir), eval_every=50, eval_instances=64))
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    losses = [float(row.split(",")[1]) for row in rows[1:]]
    assert len(losses) == 5 and losses[-1] < losses[0] - 1.0
    assert result["eval"]["mlm_accuracy"] > 0.05
    assert (tmp_path / "training_curves.png").stat().st_size > 1000
    # the final model loads in transformers with the same predictions
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import BertForPreTraining as ReferenceModel

    from bertforge.model.heads import BertForPreTraining

    ours = BertForPreTraining.from_pretrained(tmp_path / "final")
    reference = ReferenceModel.from_pretrained(tmp_path / "final").eval()
    batch = {k: torch.from_numpy(v) for k, v in PretrainingData(data_dir).batch(np.arange(4), 0).items()}
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        expected = reference(**inputs)
        actual = ours(**inputs)
    torch.testing.assert_close(actual.prediction_logits, expected.prediction_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual.seq_relationship_logits, expected.seq_relationship_logits, atol=1e-5, rtol=0)


def test_resume_refuses_another_configuration(data_dir, tmp_path):
    train(_config(data_dir, tmp_path, max_steps=4))
    with pytest.raises(CheckpointError, match=r"learning_rate: checkpoint 0\.001, now 0\.002"):
        train(_config(data_dir, tmp_path / "again", max_steps=4, learning_rate=2e-3), resume_from=tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        train(_config(data_dir, tmp_path / "x"), resume_from=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="--batch-size 8 must be a multiple"):
        train(_config(data_dir, tmp_path / "y", batch_size=8, gradient_accumulation_steps=3))


def _train_command(data_dir, run_dir, *extra):
    return [PYTHON, "-m", "bertforge", "pretrain", "train", str(data_dir), str(run_dir), "--model-size", "tiny",
            "--batch-size", "8", "--gradient-accumulation-steps", "2", "--lr", "1e-3", "--warmup-steps", "3",
            "--threads", "1", "--seed", "5", *extra]


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(Path(run_dir) / "final" / "model.safetensors")


def _train_in_process(data_dir, run_dir, **overrides):
    """The run `_train_command` describes, in this process (one thread, as there)."""
    train(_config(data_dir, run_dir, batch_size=8, gradient_accumulation_steps=2, learning_rate=1e-3,
                  warmup_steps=3, seed=5, **overrides))


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(data_dir, tmp_path):
    steps = ["--max-steps", "16", "--checkpoint-every", "4", "--log-every", "4"]
    _train_in_process(data_dir, tmp_path / "whole", max_steps=16, checkpoint_every=4, log_every=4)

    run = tmp_path / "killed"
    killed_at = kill_at_first_checkpoint(_train_command(data_dir, run, *steps), run, timeout=120)
    assert not (run / "final").exists(), "the run finished before it could be killed"
    assert 4 <= killed_at < 16

    subprocess.run(_train_command(data_dir, run, *steps, "--resume", str(run)), check=True, capture_output=True)
    whole, resumed = _weights(tmp_path / "whole"), _weights(run)
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    # the log was cut back to the checkpoint and continued: one row per logged step
    steps_logged = [int(r.split(",")[0]) for r in (run / "train_log.csv").read_text().splitlines()[1:]]
    assert steps_logged == list(range(4, 17, 4))


def _two_nodes(command: list[str]) -> None:
    """Run `command` as `torchrun --nnodes 2` would on two machines: two node processes (one worker
    each) meeting at a c10d rendezvous, here both on localhost."""
    torchrun = [PYTHON, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend",
                "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "bertforge-test", "-m", "bertforge"]
    nodes = [subprocess.Popen(torchrun + command[3:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-2000:]


def _assert_same_run(run, reference) -> None:
    trained, expected = _weights(run), _weights(reference)
    for name in expected:
        torch.testing.assert_close(trained[name], expected[name], atol=2e-6, rtol=1e-5, msg=name)


@pytest.mark.slow
def test_two_nodes_train_as_one_process_and_resume_with_another_process_count(data_dir, tmp_path):
    """The same global batch on two nodes gives one process's weights and loss curve (each rank reads
    its own rows of each batch); a run checkpointed by one process continues on two nodes."""
    common = ["--max-steps", "6", "--checkpoint-every", "2", "--log-every", "1", "--dropout", "0"]  # dropout draws differ per process
    _train_in_process(data_dir, tmp_path / "single", max_steps=6, checkpoint_every=2, log_every=1, dropout=0.0)

    _two_nodes(_train_command(data_dir, tmp_path / "two-nodes", *common))
    _assert_same_run(tmp_path / "two-nodes", tmp_path / "single")
    single_log, nodes_log = [(tmp_path / run / "train_log.csv").read_text().splitlines()[1:]
                             for run in ("single", "two-nodes")]
    assert len(single_log) == len(nodes_log) == 6
    for a, b in zip(single_log, nodes_log):
        assert float(a.split(",")[1]) == pytest.approx(float(b.split(",")[1]), rel=1e-5)

    run = tmp_path / "one-then-two"
    killed_at = kill_at_first_checkpoint(_train_command(data_dir, run, *common), run, timeout=120)
    assert not (run / "final").exists() and killed_at < 6, "the run finished before it could be killed"
    _two_nodes(_train_command(data_dir, run, *common, "--resume", str(run)))
    _assert_same_run(run, tmp_path / "single")


def test_init_from_continues_a_checkpoint_and_refuses_another_vocabulary(data_dir, tmp_path):
    """--init-from starts from a checkpoint's weights (here an encoder without MLM/NSP heads), not random ones."""
    encoder = BertModel(BertConfig.from_size("tiny", vocab_size=30522))
    encoder.save_pretrained(tmp_path / "encoder")
    start = encoder.embeddings.word.weight.detach().clone()
    train(_config(data_dir, tmp_path / "run", max_steps=2, learning_rate=1e-5, init_from=str(tmp_path / "encoder")))
    continued = BertForPreTraining.from_pretrained(tmp_path / "run" / "final")
    assert (continued.bert.embeddings.word.weight - start).abs().max() < 1e-3
    encoder.resize_token_embeddings(pad_to_multiple_of=64)  # 30528 rows: a padded table still holds the data's ids
    encoder.save_pretrained(tmp_path / "padded")
    train(_config(data_dir, tmp_path / "padded-run", max_steps=2, init_from=str(tmp_path / "padded")))
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=100)).save_pretrained(tmp_path / "small-vocab")
    with pytest.raises(ConfigError, match="vocabulary has 100 pieces"):
        train(_config(data_dir, tmp_path / "x", init_from=str(tmp_path / "small-vocab")))
    # a size typed beside the checkpoint would be ignored: refused before any work
    result = CliRunner().invoke(cli, ["pretrain", "train", str(data_dir), str(tmp_path / "y"), "--model-size", "base",
                                      "--init-from", str(tmp_path / "encoder")])
    assert result.exit_code == 2 and result.output.strip() == \
        f"error: --model-size base with --init-from {tmp_path / 'encoder'}: the checkpoint's config.json sets the " \
        "size; give one of them"
    assert not (tmp_path / "y").exists()


def test_existing_run_needs_resume_or_overwrite(data_dir, tmp_path):
    run = tmp_path / "run"
    command = ["pretrain", "train", str(data_dir), str(run), "--model-size", "tiny", "--batch-size", "8",
               "--max-steps", "2", "--checkpoint-every", "2", "--threads", "1"]
    assert CliRunner().invoke(cli, command).exit_code == 0
    first = (run / "final" / "model.safetensors").read_bytes()
    result = CliRunner().invoke(cli, command)
    assert result.exit_code != 0
    assert "holds a training run" in result.output and "--resume" in result.output and "--overwrite" in result.output
    # --overwrite starts afresh: the same seed gives the same weights, and nothing of the old run is left
    (run / "stale.txt").write_text("from the old run")
    result = CliRunner().invoke(cli, command + ["--overwrite", "--seed", "42"])
    assert result.exit_code == 0, result.output
    assert not (run / "stale.txt").exists()
    assert (run / "final" / "model.safetensors").read_bytes() == first  # pretrain train twice: identical
    card = json.loads((run / "run_card.json").read_text())
    assert card["command"][-2:] == ["--seed", "42"] and card["options"]["max_steps"] == 2
    assert card["threads"] == 1 and card["inputs"][0]["path"] == str(data_dir)


def test_overwrite_never_deletes_what_the_run_reads_and_a_failed_run_keeps_the_old_one(data_dir, tmp_path):
    """--overwrite deleted OUTPUT_DIR before the run was checked: with its data or --init-from inside, or a
    bad setting, the old run and the inputs were gone."""
    import shutil

    run = tmp_path / "run"
    command = ["pretrain", "train", str(run / "data"), str(run), "--model-size", "tiny", "--batch-size", "8",
               "--max-steps", "2", "--threads", "1"]
    shutil.copytree(data_dir, run / "data")
    (run / "train_log.csv").write_text("step,loss\n")  # an earlier run's log, so --overwrite would delete it
    result = CliRunner().invoke(cli, [*command, "--overwrite"])
    assert result.exit_code == 2 and f"error: OUTPUT_DIR {run}: would overwrite the input {run / 'data'}" in result.output
    assert (run / "data" / "index.json").exists()
    result = CliRunner().invoke(cli, ["pretrain", "train", str(data_dir), str(run), "--model-size", "tiny",
                                      "--max-steps", "2", "--warmup-steps", "9", "--overwrite"])
    assert result.exit_code == 2 and "warmup" in result.output
    assert (run / "train_log.csv").exists() and (run / "data" / "index.json").exists()
    result = CliRunner().invoke(cli, ["pretrain", "train", str(data_dir), str(tmp_path / "new" / "run"),
                                      "--model-size", "tiny", "--max-steps", "2", "--warmup-steps", "9"])
    assert result.exit_code == 2 and not (tmp_path / "new").exists()


def test_a_run_resumes_from_its_data_moved_elsewhere_but_not_into_another_directory(data_dir, tmp_path):
    import shutil

    train(_config(data_dir, tmp_path / "run", max_steps=4, checkpoint_every=2))
    moved = shutil.copytree(data_dir, tmp_path / "moved")
    train(_config(moved, tmp_path / "run", max_steps=4, checkpoint_every=2), resume_from=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"--resume .*run continues the run in that directory: give it as the output "
                                          r"directory too"):
        train(_config(moved, tmp_path / "elsewhere", max_steps=4), resume_from=tmp_path / "run")
    assert not (tmp_path / "elsewhere").exists()

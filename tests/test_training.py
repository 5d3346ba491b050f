"""The training engine: schedule, optimiser groups, process groups, checkpoints that never unpickle,
atomic writes, seeding, and exact resume of a fine-tuning run killed mid-epoch."""

from __future__ import annotations

import json
from dataclasses import replace
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bertforge.cli.main import cli
from bertforge.runcard import CARD_FILE, read_card, rerun_command
from bertforge.errors import CheckpointError, ConfigError, InputError
from bertforge.distillation.task import DistillArgs
from bertforge.model import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
                             BertForTokenClassification, BertModel, default_model_path)
from bertforge.tasks.batching import predict_logits
from bertforge.tasks.trainer import FeatureBatches, FinetuneArgs, TaskObjective, reinitialise_top_layers
from bertforge.tokenization import BertTokenizer
from bertforge.training import (Processes, TrainingArguments, TrainingInterrupted, build_optimizer,
                                learning_rate_factor, run)
from bertforge.training.engine import SETTINGS_ADDED_LATER, check_run_directory
from bertforge.training.optim import SCHEDULES, set_learning_rate
from bertforge.training.state import Checkpoint, rng_state, save_checkpoint, set_rng_state

from conftest import fixture_data, kill_at_first_checkpoint

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO / "src" / "bertforge" / "data" / "sst2_sample" / "train.tsv"


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_classifier(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig.from_size("tiny", vocab_size=100, id2label={0: "0", 1: "1"}))


# --- schedule and optimiser --------------------------------------------------------------------------

def test_schedule_starts_above_zero_and_decays_linearly():
    # warm-up over 2 steps of 5: 1/2, 2/2, then (5 - s) / 3 for s = 2, 3, 4 (hand-computed)
    assert [learning_rate_factor(s, 2, 5) for s in range(5)] == pytest.approx([0.5, 1.0, 1.0, 2 / 3, 1 / 3])
    assert learning_rate_factor(0, 0, 4) == 1.0 and learning_rate_factor(4, 0, 4) == 0.0


def test_cosine_schedule_falls_along_half_a_cosine_after_the_same_warm_up():
    # warm-up over 2 steps of 6, then (1 - cos(π r)) / 2 of the share r = (6 - s) / 4 of the decay left
    factors = [learning_rate_factor(s, 2, 6, "cosine") for s in range(7)]
    half = 2 ** -0.5 / 2
    assert factors == pytest.approx([0.5, 1.0, 1.0, 0.5 + half, 0.5, 0.5 - half, 0.0])
    linear = [learning_rate_factor(s, 2, 6) for s in range(7)]
    assert factors[3] > linear[3] and factors[4] == pytest.approx(linear[4]) and factors[5] < linear[5]
    with pytest.raises(ConfigError, match="lr_scheduler_type must be one of linear, cosine, got 'step'"):
        TrainingArguments(output_dir="x", lr_scheduler_type="step")
    # the CLI's choices (kept free of torch's import) are the engine's
    from bertforge.cli.finetune import finetune as finetune_command

    choices = next(p for p in finetune_command.params if p.name == "lr_scheduler_type").type.choices
    assert tuple(choices) == tuple(SCHEDULES)


def test_a_batch_that_does_not_split_into_its_micro_batches_is_refused_by_name():
    """Said before any data is batched (finetune used to report "no batch of at least 8" instead)."""
    with pytest.raises(ConfigError, match="^--batch-size 4 must be a multiple of --gradient-accumulation-steps 8: "):
        TrainingArguments(output_dir="x", batch_size=4, gradient_accumulation_steps=8)
    TrainingArguments(output_dir="x", batch_size=16, gradient_accumulation_steps=8)


@pytest.mark.parametrize("setting, message", [
    ({"batch_size": "16"}, "batch_size must be int, got '16'"),
    ({"bf16": "no"}, "bf16 must be bool, got 'no'"),  # a non-empty string would have counted as true
    ({"max_steps": True}, "max_steps must be int or None, got True"),
    ({"learning_rate": float("nan")}, "learning_rate must be a finite number, got nan"),
    ({"output_dir": None}, "output_dir must be str, got None"),
    ({"adam_beta2": -1}, r"adam_beta1 and adam_beta2 must be in \[0, 1\), got 0.9 and -1"),
    ({"adam_epsilon": 0}, "adam_epsilon must be positive, got 0"),
    ({"max_grad_norm": -1.0}, "max_grad_norm must be positive, got -1.0"),
], ids=lambda value: next(iter(value)) if isinstance(value, dict) else "")
def test_settings_of_the_wrong_type_or_range_are_refused_from_python(setting, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        TrainingArguments(**{"output_dir": "x", **setting})


def test_fine_tuning_settings_are_checked_by_type_and_range_too():
    from bertforge.tasks import FinetuneArgs

    for setting, message in (({"epochs": float("inf")}, "epochs must be a finite number, got inf"),
                             ({"reinit_layers": 1.5}, "reinit_layers must be int, got 1.5"),
                             ({"eval_batch_size": 0}, "eval_batch_size must be at least 1, got 0")):
        with pytest.raises(ConfigError, match=f"^{message}$"):
            FinetuneArgs(output_dir="x", **setting)


def test_settings_take_a_path_for_a_string_and_an_int_for_a_float(tmp_path):
    settings = TrainingArguments(output_dir=tmp_path, learning_rate=1, warmup_ratio=0)
    assert settings.output_dir == tmp_path and settings.learning_rate == 1


def test_no_weight_decay_on_biases_and_layer_norm():
    model = tiny_classifier()
    optimizer = build_optimizer(model, 1e-3, weight_decay=0.01)
    exempt = {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
    exempt |= {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    decayed, undecayed = ({id(p) for p in g["params"]} for g in optimizer.param_groups)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01 and optimizer.param_groups[1]["weight_decay"] == 0.0
    assert undecayed == exempt and decayed == {id(p) for p in model.parameters()} - exempt


def test_layer_lr_decay_gives_each_layer_below_the_heads_a_smaller_rate():
    model = tiny_classifier()  # 2 encoder layers
    optimizer = build_optimizer(model, 1e-3, weight_decay=0.01, layer_lr_decay=0.5)
    set_learning_rate(optimizer, 1e-3)
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(rate) == len(list(model.parameters()))
    named = dict(model.named_parameters())
    # hand-computed: the heads at the peak, then halved per layer down to the embeddings
    expected = {"classifier.weight": 1e-3, "bert.pooler.dense.bias": 1e-3,
                "bert.encoder.layers.1.intermediate.weight": 5e-4, "bert.encoder.layers.1.output_norm.weight": 5e-4,
                "bert.encoder.layers.0.attention.qkv.weight": 2.5e-4, "bert.embeddings.word.weight": 1.25e-4,
                "bert.embeddings.norm.bias": 1.25e-4}
    assert {name: rate[id(named[name])] for name in expected} == pytest.approx(expected)
    assert {name: decay[id(named[name])] for name in ("bert.embeddings.word.weight", "bert.embeddings.norm.bias",
                                                       "bert.encoder.layers.0.attention.qkv.bias")} \
        == {"bert.embeddings.word.weight": 0.01, "bert.embeddings.norm.bias": 0.0,
            "bert.encoder.layers.0.attention.qkv.bias": 0.0}
    # without the decay: the two groups every earlier checkpoint holds, at the peak rate
    plain = build_optimizer(model, 1e-3)
    set_learning_rate(plain, 1e-3)
    assert [(g["weight_decay"], g["lr"]) for g in plain.param_groups] == [(0.01, 1e-3), (0.0, 1e-3)]


# --- devices and process groups ---------------------------------------------------------------------

def test_cpu_runs_use_gloo_even_where_cuda_exists(monkeypatch):
    import torch.distributed as dist

    backends = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: backends.append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    processes = Processes.start("cpu")
    assert backends == ["gloo"] and processes.device == torch.device("cpu")
    assert (processes.rank, processes.world_size, processes.local_rank) == (1, 2, 1)


def test_unavailable_or_unknown_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device cuda: CUDA is not available"):
        Processes.start("cuda")
    with pytest.raises(ConfigError, match=r"^--device gpu0: not a torch device \(use cpu, cuda or cuda:N\)$"):
        Processes.start("gpu0")
    with pytest.raises(ConfigError, match="^--device mps: bertforge runs on cpu, cuda or cuda:N$"):
        Processes.start("mps")


# --- checkpoints ------------------------------------------------------------------------------------

def _trained(steps: int = 3):
    model = tiny_classifier()
    optimizer = build_optimizer(model, 1e-2)
    ids = torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        model(ids, labels=torch.tensor([0, 1, 1, 0])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_checkpoint_round_trip_restores_model_optimizer_and_random_state(tmp_path):
    model, optimizer = _trained()
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    save_checkpoint(tmp_path, 3, model, optimizer, {"rng": [rng_state(torch.device("cpu"))]})
    expected = (random.random(), np.random.rand(), torch.rand(3))

    restored, restored_optimizer = tiny_classifier(seed=1), None
    restored_optimizer = build_optimizer(restored, 1e-2)
    checkpoint = Checkpoint(tmp_path)
    checkpoint.load_model(restored)
    checkpoint.load_optimizer(restored_optimizer)
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name
    for p, q in zip(model.parameters(), restored.parameters()):
        a, b = optimizer.state[p], restored_optimizer.state[q]
        assert all(torch.equal(a[key], b[key]) for key in ("exp_avg", "exp_avg_sq", "step"))
    set_rng_state(checkpoint["rng"][0], torch.device("cpu"))
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(3), expected[2])
    # only JSON and safetensors files; the manifest names them
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".safetensors", ".safetensors"]


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = _trained(1)
    save_checkpoint(tmp_path, 1, model, optimizer, {})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CheckpointError, match=r"No space left on device\); the previous checkpoint \(step 1\) .* intact"):
        save_checkpoint(tmp_path, 2, model, optimizer, {})
    monkeypatch.undo()
    # the manifest still names step 1's complete files; no temporary file is left behind
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {name: after[name] for name in before} == before
    assert not [name for name in after if name.startswith(".")]
    assert Checkpoint(tmp_path)["step"] == 1
    Checkpoint(tmp_path).load_model(tiny_classifier())


class _Exploit:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_checkpoint_given_to_resume_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(pickle.dumps({"model": _Exploit(marker)}))
    result = CliRunner().invoke(cli, ["finetune", "--task", "classification", "--train", str(SST2),
                                      "--output", str(tmp_path / "out"), "--resume", str(run)])
    assert result.exit_code != 0 and not marker.exists()
    assert "no checkpoint found" in result.output
    assert "checkpoint.pt is a pickle, which is never loaded" in result.output

    # a manifest naming a pickle (torch.save's zip or a bare pickle) as its tensor file: refused as data
    model, optimizer = _trained(1)
    save_checkpoint(run / "checkpoint", 1, model, optimizer, {})
    weights = next((run / "checkpoint").glob("model-*.safetensors"))
    for payload in (pickle.dumps(_Exploit(marker)), None):
        if payload is None:
            torch.save({"w": _Exploit(marker)}, weights)
        else:
            weights.write_bytes(payload)
        with pytest.raises(CheckpointError, match="does not hold this model's weights"):
            Checkpoint(run).load_model(tiny_classifier())
        assert not marker.exists()
    manifest = run / "checkpoint" / "checkpoint.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "model_file": "../../elsewhere.bin"}))
    with pytest.raises(CheckpointError, match="model_file '../../elsewhere.bin' is not a file there"):
        Checkpoint(run).load_model(tiny_classifier())


def test_a_run_without_a_learning_rate_is_refused_before_its_output_exists(tmp_path):
    # Only fine-tuning resolves a missing rate (from the model's width); the engine itself needs one.
    args = TrainingArguments(output_dir=str(tmp_path / "run"), learning_rate=None)
    with pytest.raises(ConfigError, match="learning_rate is None: give a learning rate"):
        run(args, Processes.start("cpu"), build_model=None, batches=None, objective=None, total_steps=1,
            fingerprint={})
    assert not (tmp_path / "run").exists()


class _SameBatch:
    """One fixed batch at every step, and a copy of the trained model's weights as each step begins."""

    def __init__(self, model):
        self.model, self.seen = model, []
        generator = torch.Generator().manual_seed(1)
        self.batch = {"input_ids": torch.randint(0, 100, (4, 8), generator=generator),
                      "labels": torch.tensor([0, 1, 1, 0])}

    def micro_batches(self, step, rank, world_size, accumulation):
        self.seen.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return [self.batch]


class _SplitBatch:
    """One fixed batch, cut into as many micro-batches as the step accumulates (rows i, i + k, ...)."""

    def __init__(self, batch):
        self.batch = batch

    def micro_batches(self, step, rank, world_size, accumulation):
        return [{k: v[i::accumulation] for k, v in self.batch.items()} for i in range(accumulation)]


def test_gradient_accumulation_gives_one_big_batchs_gradient_for_token_labels(tmp_path, monkeypatch):
    """NER's loss is a mean over labelled tokens: micro-batches are weighted by theirs. Before, they were
    weighted by their rows, 44% off one big batch's gradient with 4 micro-batches (a helper's audit)."""
    config = BertConfig.from_size("tiny", vocab_size=100, id2label={0: "O", 1: "B-PER", 2: "I-PER"},
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    state = BertForTokenClassification(config).state_dict()
    generator = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 3, (8, 10), generator=generator)
    labels[torch.rand(8, 10, generator=generator) < torch.linspace(0.1, 0.9, 8)[:, None]] = -100  # uneven counts
    batch = {"input_ids": torch.randint(5, 100, (8, 10), generator=generator), "labels": labels}
    gradients = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm):
        parameters = list(parameters)
        gradients.append(torch.cat([p.grad.flatten() for p in parameters]))
        return clip(parameters, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    for accumulation in (1, 4):
        model = BertForTokenClassification(config)
        model.load_state_dict(state)
        args = TrainingArguments(output_dir=str(tmp_path / f"run{accumulation}"), learning_rate=1e-3, batch_size=8,
                                 gradient_accumulation_steps=accumulation, progress=False)
        run(args, Processes.start("cpu"), lambda: model, _SplitBatch(batch), TaskObjective(), 1, {})
    one, accumulated = gradients
    assert ((accumulated - one).norm() / one.norm()).item() < 1e-5


def test_ema_decay_evaluates_and_returns_the_moving_average_of_the_weights(tmp_path):
    model = tiny_classifier()
    source = _SameBatch(model)
    evaluated = []
    evaluator = type("Evaluator", (), {"__call__": lambda self, m, step: evaluated.append(m) or {},
                                       "state": lambda self: {}, "load_state": lambda self, state: None})()
    args = TrainingArguments(output_dir=str(tmp_path / "run"), learning_rate=1e-2, ema_decay=0.8, eval_every=5,
                             progress=False)
    result = run(args, Processes.start("cpu"), lambda: model, source, TaskObjective(), 5, {}, evaluator=evaluator)
    weights = [*source.seen[1:], model.state_dict()]  # after steps 1 to 5
    # torch's AveragedModel: the first step's weights start the average, then average ← 0.8 average + 0.2 weights
    expected = dict(weights[0])
    for later in weights[1:]:
        expected = {name: 0.8 * expected[name] + 0.2 * later[name] for name in expected}
    averaged = result.model.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value, rtol=0, atol=1e-6, msg=name)
    assert not torch.allclose(averaged["classifier.weight"], model.state_dict()["classifier.weight"], atol=1e-4)
    assert evaluated == [result.model]
    with pytest.raises(ConfigError, match=r"ema_decay must be in \[0, 1\), got 1.0"):
        TrainingArguments(output_dir=str(tmp_path), ema_decay=1.0)


def test_an_objective_with_modules_of_its_own_has_them_placed_on_the_process_device_before_the_first_step(tmp_path):
    # a distillation teacher runs beside the model: the engine, which knows the process's device, places it
    placed = []

    class WithTeacher(TaskObjective):
        def to(self, device):
            placed.append(device)

        def loss(self, model, batch, totals):
            assert placed == [torch.device("cpu")], "the first step ran before the objective was placed"
            return super().loss(model, batch, totals)

    model = tiny_classifier()
    args = TrainingArguments(output_dir=str(tmp_path / "run"), learning_rate=1e-2, progress=False)
    run(args, Processes.start("cpu"), lambda: model, _SameBatch(model), WithTeacher(), 2, {})
    assert placed == [torch.device("cpu")]


class _SignalAt(_SameBatch):
    """`_SameBatch`, sending this process SIGINT `times` times as step `at` (0-based) begins."""

    def __init__(self, model, at: int, times: int = 1):
        super().__init__(model)
        self.at, self.times = at, times

    def micro_batches(self, step, rank, world_size, accumulation):
        if step == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)
        return super().micro_batches(step, rank, world_size, accumulation)


def test_ctrl_c_finishes_the_step_saves_a_checkpoint_and_the_run_resumes_to_the_same_weights(tmp_path, caplog):
    def args(name):
        return TrainingArguments(output_dir=str(tmp_path / name), learning_rate=1e-2, checkpoint_every=100,
                                 progress=False)

    whole = run(args("whole"), Processes.start("cpu"), tiny_classifier, _SameBatch(tiny_classifier()),
                TaskObjective(), 5, {}).model
    with caplog.at_level("WARNING"), pytest.raises(TrainingInterrupted, match=(
            r"stopped at step 3 of 5: the checkpoint is saved in .*stopped[/\\]checkpoint; the same command with "
            r"--resume .*stopped continues the run")):
        run(args("stopped"), Processes.start("cpu"), tiny_classifier, _SignalAt(tiny_classifier(), at=2),
            TaskObjective(), 5, {})
    assert "SIGINT: the run stops after this step and saves a checkpoint first" in caplog.text
    assert Checkpoint(tmp_path / "stopped")["step"] == 3  # not the periodic checkpoint's: there was none
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back
    resumed = run(args("stopped"), Processes.start("cpu"), tiny_classifier, _SameBatch(tiny_classifier()),
                  TaskObjective(), 5, {}, resume_from=tmp_path / "stopped").model
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    # a second Ctrl-C stops at once, as it would without the engine's handler
    with pytest.raises(KeyboardInterrupt):
        run(args("twice"), Processes.start("cpu"), tiny_classifier, _SignalAt(tiny_classifier(), at=1, times=2),
            TaskObjective(), 5, {})
    assert not (tmp_path / "twice" / "checkpoint").exists()


def test_output_dir_of_another_run_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_log.csv").write_text("step,loss\n")
    with pytest.raises(ConfigError, match="run holds a training run: give --resume .* or --overwrite"):
        check_run_directory(tmp_path / "run", None, overwrite=False)
    assert check_run_directory(tmp_path / "run", None, overwrite=True)


def test_a_folder_that_is_not_a_run_is_not_offered_resume_or_overwrite(tmp_path):
    """A folder of other files was told to give --resume (then: no checkpoint found) or --overwrite (then:
    not deleted)."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    message = (f"{tmp_path / 'notes'} is not empty and holds no training run (no train_log.csv, no checkpoint/), so "
               "it is neither continued nor deleted: give a new or empty directory")
    for overwrite in (False, True):
        with pytest.raises(ConfigError) as error:
            check_run_directory(tmp_path / "notes", None, overwrite=overwrite)
        assert str(error.value) == message
    result = CliRunner().invoke(cli, ["finetune", "--task", "classification", "--train",
                                      str(fixture_data("sst2", "train.tsv")), "--output", str(tmp_path / "notes")])
    assert result.exit_code == 2 and result.output == f"error: {message}\n", result.output
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_a_run_that_fails_before_training_creates_nothing_and_overwrites_nothing(tmp_path):
    """The model is built before the output directory is made (or an earlier run's deleted)."""
    def no_model():
        raise ConfigError("no such model size")

    args = TrainingArguments(output_dir=str(tmp_path / "new" / "run"), learning_rate=1e-2, progress=False)
    with pytest.raises(ConfigError, match="no such model size"):
        run(args, Processes.start("cpu"), no_model, None, TaskObjective(), 5, {})
    assert not (tmp_path / "new").exists()
    earlier = TrainingArguments(output_dir=str(tmp_path / "earlier"), learning_rate=1e-2, progress=False)
    run(earlier, Processes.start("cpu"), tiny_classifier, _SameBatch(tiny_classifier()), TaskObjective(), 1, {})
    logs = sorted(path.name for path in (tmp_path / "earlier").iterdir())
    with pytest.raises(ConfigError, match="no such model size"):
        run(replace(earlier, overwrite=True), Processes.start("cpu"), no_model, None, TaskObjective(), 5, {})
    assert sorted(path.name for path in (tmp_path / "earlier").iterdir()) == logs and logs


def test_a_hand_edited_checkpoint_manifest_is_named_on_resume(tmp_path):
    """A checkpoint.json with `"step": "x"` raised a TypeError on --resume, one without "rng" a KeyError."""
    args = TrainingArguments(output_dir=str(tmp_path / "run"), learning_rate=1e-2, checkpoint_every=1, progress=False)
    run(args, Processes.start("cpu"), tiny_classifier, _SameBatch(tiny_classifier()), TaskObjective(), 2, {})
    manifest = tmp_path / "run" / "checkpoint" / "checkpoint.json"
    saved = json.loads(manifest.read_text())
    for edited, message in (({**saved, "step": "x"}, "'step' is \"x\", not a whole number"),
                            ({k: v for k, v in saved.items() if k != "rng"}, "no 'rng'; the checkpoint cannot be "
                                                                               "continued")):
        manifest.write_text(json.dumps(edited))
        with pytest.raises(CheckpointError) as error:
            run(args, Processes.start("cpu"), tiny_classifier, _SameBatch(tiny_classifier()), TaskObjective(), 2, {},
                resume_from=tmp_path / "run")
        assert str(error.value) == f"--resume {tmp_path / 'run'}: {manifest}: {message}"


def test_a_run_whose_output_directory_cannot_be_made_says_so(unwritable):
    """Called from Python, with no command's check before it: the engine's mkdir raised a PermissionError."""
    args = TrainingArguments(output_dir=str(unwritable / "run"), learning_rate=1e-2, progress=False)
    with pytest.raises(InputError, match=rf"^{unwritable / 'run'}: cannot write \("):
        run(args, Processes.start("cpu"), tiny_classifier, _SameBatch(tiny_classifier()), TaskObjective(), 1, {})


# --- fine-tuning: one seeding point, exact resume after SIGKILL -------------------------------------------

@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A tiny random encoder with the default model's vocabulary: fine-tuning starts from it."""
    directory = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(0)
    BertModel(BertConfig.from_size("tiny", vocab_size=30522)).save_pretrained(
        directory, BertTokenizer.from_pretrained(default_model_path()))
    return directory


def _finetune_command(encoder: Path, output: Path, *extra: str) -> list[str]:
    return ["finetune", "--task", "classification", "--train", str(SST2), "--train-limit", "240", "--model",
            str(encoder), "--output", str(output), "--batch-size", "8", "--gradient-accumulation-steps", "2",
            "--epochs", "2", "--max-length", "64", "--learning-rate", "1e-3", "--checkpoint-every", "4",
            "--threads", "1", "--seed", "7", *extra]


def _finetuned_args(encoder: Path, output: Path, *extra: str) -> dict:
    """Fine-tune with `_finetune_command(..., *extra)` and return the settings its metrics.json records."""
    result = CliRunner().invoke(cli, _finetune_command(encoder, output, *extra))
    assert result.exit_code == 0, result.output
    return json.loads((output / "metrics.json").read_text())["args"]


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

def test_a_finetune_logged_to_a_file_writes_its_progress_in_a_few_plain_lines(tiny_encoder, tmp_path):
    """Every step logs its figures; off a terminal (CliRunner's stderr, like a log file) the bar must not redraw
    for each of them: it shows where it starts and where it ends, each on a line of its own."""
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "run", "--max-steps", "12"))
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if line.startswith("fine-tuning:")]
    assert "\r" not in result.stderr and 2 <= len(progress) <= 3, result.stderr
    assert "0/12" in progress[0] and "12/12" in progress[-1] and "loss=" in progress[-1]


def test_finetune_without_learning_rate_takes_the_default_for_the_models_width(tiny_encoder, tmp_path):
    """2e-4 at batch 32 (the sweep's choice for 384-wide MiniLM) up to 384 wide, BERT's 3e-5 above; the
    card records the rate the run used, and the run's metrics agree."""
    wide = tmp_path / "wide-encoder"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=512, num_hidden_layers=1, num_attention_heads=8,
                         intermediate_size=64)).save_pretrained(wide, BertTokenizer.from_pretrained(default_model_path()))
    for encoder, expected in ((tiny_encoder, 2e-4), (wide, 3e-5)):
        output = tmp_path / f"run-{encoder.name}"
        command = _finetune_command(encoder, output, "--max-steps", "1")
        at = command.index("--learning-rate")
        del command[at:at + 2]
        command[command.index("--batch-size") + 1] = "32"
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, result.output
        assert read_card(output)["options"]["learning_rate"] == expected
        metrics = json.loads((output / "metrics.json").read_text())
        assert metrics["args"]["learning_rate"] == expected


def test_finetune_defaults_batch_16_and_decay_for_single_sentences_only(tiny_encoder, tmp_path):
    """With neither option given: batch 16, the rate scaled to it (2e-4 × √(16/32)), and layer-wise decay 0.8
    for classification, none for sentence pairs and NER; the card records what the run took, so
    `rerun` keeps it if the defaults change again."""
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sentence1\tsentence2\tlabel\n" + "".join(f"a{i}\tb{i}\t{i % 2}\n" for i in range(40)))
    conll = tmp_path / "tags.conll"
    conll.write_text("".join(f"word{i} O\nParis B-LOC\n\n" for i in range(40)))
    runs = {"classification": ([], 0.8), "pair-classification": (["--train", str(pairs), "--text-column", "sentence1",
                                                                    "--text-pair-column", "sentence2"], 1.0),
            "ner": (["--train", str(conll)], 1.0)}
    for task, (data, decay) in runs.items():
        output = tmp_path / task
        command = _finetune_command(tiny_encoder, output, "--max-steps", "1", *data)
        command[command.index("--task") + 1] = task
        for option in ("--batch-size", "--learning-rate"):
            at = command.index(option)
            del command[at:at + 2]
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, (task, result.output)
        settings = json.loads((output / "metrics.json").read_text())["args"]
        assert (settings["batch_size"], settings["layer_lr_decay"]) == (16, decay), task
        assert settings["learning_rate"] == pytest.approx(2e-4 * 0.5 ** 0.5)
        options = read_card(output)["options"]
        assert (options["batch_size"], options["layer_lr_decay"]) == (16, decay)
        rerun = rerun_command(read_card(output))
        pinned = rerun[rerun.index("--batch-size"):]
        # a sentence classifier also records its pooling: the tiny encoder's own [CLS]
        assert pinned == ["--batch-size", "16", "--layer-lr-decay", str(decay)] + \
            (["--classifier-pooling", "cls"] if task == "classification" else [])


def test_finetune_layer_lr_decay_moves_the_lower_layers_less(tiny_encoder, tmp_path):
    start = BertModel.from_pretrained(tiny_encoder).state_dict()
    moved = {}
    for decay in ("1", "0.1"):
        output = tmp_path / f"decay{decay}"
        result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "3",
                                                           "--layer-lr-decay", decay))
        assert result.exit_code == 0, result.output
        assert json.loads((output / "metrics.json").read_text())["args"]["layer_lr_decay"] == float(decay)
        weights = BertForSequenceClassification.from_pretrained(output).bert.state_dict()
        moved[decay] = {name: float((weights[name] - start[name]).abs().max())
                        for name in ("embeddings.word.weight", "encoder.layers.1.output.weight")}
    # the top layer moves at 0.1 times the peak rate, the embeddings at 0.001 times
    assert moved["0.1"]["embeddings.word.weight"] < moved["1"]["embeddings.word.weight"] / 100
    assert moved["1"]["encoder.layers.1.output.weight"] / 20 < moved["0.1"]["encoder.layers.1.output.weight"] \
        < moved["1"]["encoder.layers.1.output.weight"] / 5
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "zero", "--layer-lr-decay", "0"))
    assert result.exit_code == 2 and "Invalid value for '--layer-lr-decay': 0.0 is not in the range 0<x<=1" \
        in result.output


def test_finetune_lr_scheduler_type_cosine_reaches_the_run(tiny_encoder, tmp_path):
    output = tmp_path / "cosine"
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "8",
                                                       "--lr-scheduler-type", "cosine"))
    assert result.exit_code == 0, result.output
    assert json.loads((output / "metrics.json").read_text())["args"]["lr_scheduler_type"] == "cosine"
    rows = (output / "train_log.csv").read_text().splitlines()
    column = rows[0].split(",").index("learning_rate")
    logged = [float(row.split(",")[column]) for row in rows[1:]]
    # --max-steps 8 is the schedule's length: 1 warm-up step (10%), then the cosine over the other 7
    assert logged == pytest.approx([1e-3 * learning_rate_factor(s, 1, 8, "cosine") for s in range(8)])
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "step", "--lr-scheduler-type", "step"))
    assert result.exit_code == 2 and "Invalid value for '--lr-scheduler-type': 'step' is not one of 'linear', " \
        "'cosine'." in result.output


def test_finetune_weight_decay_shrinks_the_weight_matrices_only(tiny_encoder, tmp_path):
    trained = {}
    for decay in ("0", "0.5"):
        output = tmp_path / f"wd{decay}"
        result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "1",
                                                           "--layer-lr-decay", "1", "--weight-decay", decay))
        assert result.exit_code == 0, result.output
        assert json.loads((output / "metrics.json").read_text())["args"]["weight_decay"] == float(decay)
        trained[decay] = BertForSequenceClassification.from_pretrained(output).state_dict()
    start = BertModel.from_pretrained(tiny_encoder).state_dict()
    # One AdamW step at the peak rate 1e-3 (no warm-up step in a 1-step run): the same gradient step in
    # both runs, and with decay each matrix also shrinks by 1e-3 × 0.5 of its start; vectors do not decay.
    for name in ("embeddings.word.weight", "encoder.layers.1.output.weight", "encoder.layers.0.output.bias",
                 "embeddings.norm.weight"):
        shrink = -1e-3 * 0.5 * start[name] if start[name].ndim >= 2 else torch.zeros_like(start[name])
        assert torch.allclose(trained["0.5"][f"bert.{name}"] - trained["0"][f"bert.{name}"], shrink, atol=1e-7), name
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "bad", "--weight-decay", "-0.1"))
    assert result.exit_code == 2 and "Invalid value for '--weight-decay': -0.1 is not in the range x>=0." \
        in result.output
    with pytest.raises(ConfigError, match="weight_decay must be 0 or more, got -0.1"):
        TrainingArguments(output_dir="x", weight_decay=-0.1)


def test_finetune_adam_beta2_epsilon_and_max_grad_norm_reach_the_optimiser(tiny_encoder, tmp_path):
    start = BertModel.from_pretrained(tiny_encoder).state_dict()["embeddings.word.weight"]
    moved = {}
    for name, options in (("default", []), ("set", ["--adam-beta2", "0.98", "--adam-epsilon", "1e-5",
                                                    "--max-grad-norm", "1e-9"])):
        output = tmp_path / name
        result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "4",
                                                           "--weight-decay", "0", *options))
        assert result.exit_code == 0, result.output
        groups = json.loads((output / "checkpoint" / "checkpoint.json").read_text())["optimizer"]["param_groups"]
        assert {tuple(group["betas"]) for group in groups} == {(0.9, 0.98 if options else 0.999)}
        assert {group["eps"] for group in groups} == {1e-5 if options else 1e-6}
        weights = BertForSequenceClassification.from_pretrained(output).bert.state_dict()["embeddings.word.weight"]
        moved[name] = float((weights - start).abs().max())
        rows = (output / "train_log.csv").read_text().splitlines()
        column = rows[0].split(",").index("grad_norm")
        assert all(float(row.split(",")[column]) > 1e-3 for row in rows[1:])  # the norm before clipping
    # gradients clipped to a total norm of 1e-9 fall far below AdamW's epsilon (1e-5): steps of lr / 10,000 at most
    assert moved["set"] < moved["default"] / 100
    for option, value, message in (("--adam-beta2", "1", "1.0 is not in the range 0<=x<1"),
                                   ("--adam-epsilon", "0", "0.0 is not in the range x>0"),
                                   ("--ema-decay", "1", "1.0 is not in the range 0<=x<1"),
                                   ("--max-grad-norm", "0", "0.0 is not in the range x>0")):
        result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "bad", option, value))
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output and message in result.output


def test_freeze_word_embeddings_keeps_the_token_table_and_trains_the_rest(tiny_encoder, tmp_path):
    start = BertModel.from_pretrained(tiny_encoder).state_dict()
    output = tmp_path / "frozen"
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "4",
                                                       "--freeze-word-embeddings"))
    assert result.exit_code == 0, result.output
    trained = BertForSequenceClassification.from_pretrained(output).bert.state_dict()
    assert torch.equal(trained["embeddings.word.weight"], start["embeddings.word.weight"])
    moved = [name for name, weight in trained.items() if name in start and not torch.equal(weight, start[name])]
    assert "embeddings.position.weight" in moved and len(moved) == len(start) - 1
    optimizer = json.loads((output / "checkpoint" / "checkpoint.json").read_text())["optimizer"]
    assert sum(len(group["params"]) for group in optimizer["param_groups"]) == len(start) + 2 - 1  # + head, − table
    assert json.loads((output / "metrics.json").read_text())["args"]["freeze_word_embeddings"] is True
    assert read_card(output)["options"]["freeze_word_embeddings"] is True


def _batches_of_each_head(**config) -> tuple[BertConfig, torch.Tensor, dict]:
    """A one-layer config of three classes (`config` overrides its fields), 4 rows of 6 token ids (of its 50-word
    vocabulary) and a batch of them with targets for each task head: NER with two positions labelled -100, answer
    spans."""
    config = BertConfig(**{"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "intermediate_size": 32, "id2label": {0: "a", 1: "b", 2: "c"}, **config})
    torch.manual_seed(0)
    ids = torch.randint(1, 50, (4, 6))
    return config, ids, {BertForSequenceClassification: {"input_ids": ids, "labels": torch.tensor([0, 2, 1, 2])},
                 BertForTokenClassification: {"input_ids": ids,
                                              "labels": torch.tensor([[0, 1, 2, -100, -100, 1]] * 4)},
                 BertForQuestionAnswering: {"input_ids": ids, "start_positions": torch.tensor([1, 2, 3, 4]),
                                            "end_positions": torch.tensor([2, 2, 4, 5])}}


def test_label_smoothing_factor_spreads_the_labels_weight_over_the_classes(tiny_encoder, tmp_path):
    """The smoothed cross-entropy, written out: (1 − ε) of the gold class's −log p and ε of the mean −log p over
    the classes; NER's positions labelled -100 carry none, and question answering (no `labels`) keeps its loss."""
    config, ids, batches = _batches_of_each_head()
    for head, batch in batches.items():
        model = head(config).eval()
        loss, _ = TaskObjective(0.2).loss(model, batch, TaskObjective().counts(batch))  # the whole global batch
        if "labels" not in batch:
            assert torch.equal(loss, model(**batch).loss)
            continue
        log_p = torch.log_softmax(model(input_ids=ids).logits, -1).flatten(0, -2)
        labels = batch["labels"].flatten()
        kept = labels != -100
        gold = -log_p[kept].gather(1, labels[kept, None])[:, 0]
        assert torch.allclose(loss, (0.8 * gold - 0.2 * log_p[kept].mean(1)).mean(), atol=1e-6)
        assert not torch.allclose(loss, model(**batch).loss)
    args = _finetuned_args(tiny_encoder, tmp_path / "smoothed", "--max-steps", "1", "--label-smoothing-factor", "0.1")
    assert args["label_smoothing_factor"] == 0.1
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "bad", "--label-smoothing-factor", "1"))
    assert result.exit_code == 2 and "Invalid value for '--label-smoothing-factor': 1.0 is not in the range 0<=x<1" \
        in result.output
    with pytest.raises(ConfigError, match=r"label_smoothing_factor must be in \[0, 1\), got 1.5"):
        FinetuneArgs(output_dir="x", label_smoothing_factor=1.5)
    with pytest.raises(ConfigError, match="label_smoothing_factor is for fine-tuning on labels"):
        DistillArgs(output_dir="x", label_smoothing_factor=0.1)


def test_rdrop_adds_the_two_dropout_passes_disagreement_to_their_cross_entropy(tiny_encoder, tmp_path):
    """R-Drop written out: the batch twice under the same random draws, the mean cross-entropy of both passes +
    alpha/2 × the symmetric KL per labelled position (NER's -100 positions carry none); without dropout the two
    passes agree and only the cross-entropy is left; question answering (no `labels`) keeps its loss."""
    config, ids, batches = _batches_of_each_head(hidden_dropout_prob=0.3, initializer_range=0.5)
    for head, batch in batches.items():
        model = head(config).train()
        torch.manual_seed(1)
        loss, _ = TaskObjective(rdrop_alpha=0.6).loss(model, batch, TaskObjective().counts(batch))
        torch.manual_seed(1)
        if "labels" not in batch:
            assert torch.equal(loss, model(**batch).loss)
            continue
        log_p = torch.log_softmax(model(input_ids=torch.cat([ids, ids])).logits, -1)
        labels = batch["labels"].flatten()
        kept = labels != -100
        first, second = (half.flatten(0, -2)[kept] for half in log_p.chunk(2))
        cross_entropy = -(first.gather(1, labels[kept, None]) + second.gather(1, labels[kept, None])).mean() / 2
        kl = ((first.exp() * (first - second)).sum(1) + (second.exp() * (second - first)).sum(1)).mean() / 2
        assert kl > 0.01  # the two passes' dropout masks differ (weights drawn wide: logits far from 0)
        assert torch.allclose(loss, cross_entropy + 0.3 * kl, atol=1e-6)
        model.eval()
        assert torch.allclose(TaskObjective(rdrop_alpha=0.6).loss(model, batch, TaskObjective().counts(batch))[0], model(**batch).loss,
                              atol=1e-6)
    args = _finetuned_args(tiny_encoder, tmp_path / "rdrop", "--max-steps", "1", "--rdrop-alpha", "1")
    assert args["rdrop_alpha"] == 1.0
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "bad", "--rdrop-alpha", "-1"))
    assert result.exit_code == 2 and "Invalid value for '--rdrop-alpha': -1.0 is not in the range x>=0" in result.output
    with pytest.raises(ConfigError, match="rdrop_alpha must be 0 or more, got -0.5"):
        FinetuneArgs(output_dir="x", rdrop_alpha=-0.5)
    with pytest.raises(ConfigError, match="rdrop_alpha is for fine-tuning on labels"):
        DistillArgs(output_dir="x", rdrop_alpha=1)


def test_finetune_without_group_by_length_draws_batches_at_random(tiny_encoder, tmp_path):
    features = [{"input_ids": [0] * n} for n in range(1, 401)]
    spreads = {}
    for group_by_length in (True, False):
        source = FeatureBatches(features, 8, seed=3, smallest=1, group_by_length=group_by_length)
        epochs = [source._epoch_batches(epoch) for epoch in (0, 1)]
        for batches in epochs:  # every example once an epoch, in batches of 8
            assert sorted(i for batch in batches for i in batch) == list(range(400))
            assert {len(batch) for batch in batches} == {8}
        assert epochs[0] != epochs[1]
        spreads[group_by_length] = [max(map(len, (features[i]["input_ids"] for i in batch))) -
                                    min(map(len, (features[i]["input_ids"] for i in batch))) for batch in epochs[0]]
    # one window of 50 batches holds all 400: the grouped batches are runs of 8 consecutive lengths;
    # random draws of 8 from 400 span about 7/9 of the range
    assert max(spreads[True]) == 7 and sum(spreads[False]) / 50 > 200
    output = tmp_path / "random"
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "1",
                                                       "--no-group-by-length"))
    assert result.exit_code == 0, result.output
    assert json.loads((output / "metrics.json").read_text())["args"]["group_by_length"] is False
    assert read_card(output)["options"]["group_by_length"] is False


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


def test_every_option_of_finetune_and_distill_is_a_training_setting_or_the_commands_own():
    """The commands build their settings from the options of the same names: an option that is neither would be
    read and dropped (distill once took four of finetune's options and ignored them)."""
    from dataclasses import fields

    from bertforge.cli.distill import distill
    from bertforge.cli.finetune import finetune
    from bertforge.distillation import DistillArgs
    from bertforge.tasks import FinetuneArgs

    data = {"task", "train_path", "validation_path", "hold_out", "train_limit", "text_column", "text_pair_column",
            "label_column", "tag_column", "max_length", "resume", "threads", "deterministic"}
    own = {finetune: data | {"model_dir", "new_head", "classifier_pooling"},
           distill: data | {"teacher", "unlabelled_path", "augment_copies", "student_layers", "student_size",
                            "student_dir", "prune", "prune_depth", "save_as", "classifier_pooling"}}
    for command, settings in ((finetune, FinetuneArgs), (distill, DistillArgs)):
        names = {parameter.name for parameter in command.params}
        assert names - {field.name for field in fields(settings)} == own[command], command.name


def test_linear_probe_first_starts_the_classifier_from_a_logistic_regression(tiny_encoder, tmp_path):
    """LP-FT: before the first step the head is a fitted logistic regression on the pooled outputs (it scores the
    training rows above chance), where a random head scores about chance; then every weight trains."""
    from bertforge.tasks import ClassificationTask, read_task_data
    from bertforge.tasks.trainer import _with_probed_head
    from bertforge.tokenization import BertTokenizer

    data = read_task_data("classification", SST2)[:240]
    task = ClassificationTask.from_examples(data)
    tokenizer = BertTokenizer.from_pretrained(default_model_path())
    features = task.train_features(data, tokenizer, 64)
    labels = torch.tensor([f["labels"] for f in features])

    def build():  # the bundled MiniLM: a random encoder's pooled outputs say little about the sentence
        torch.manual_seed(0)
        return BertForSequenceClassification.from_pretrained(default_model_path(),
                                                             id2label=dict(enumerate(task.labels)))

    def accuracy(model):
        logits = torch.tensor(np.stack(predict_logits(model, features)))
        return float((logits.argmax(-1) == labels).float().mean())

    majority = float(max(labels.float().mean(), 1 - labels.float().mean()))
    assert accuracy(build()) < majority + 0.05
    assert accuracy(_with_probed_head(build, features, 64)) > majority + 0.1
    output = tmp_path / "lp-ft"
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "2",
                                                       "--linear-probe-first"))
    assert result.exit_code == 0, result.output
    assert json.loads((output / "metrics.json").read_text())["args"]["linear_probe_first"] is True
    conll = fixture_data("conll2003", "train.txt")
    result = CliRunner().invoke(cli, ["finetune", "--task", "ner", "--train", str(conll), "--train-limit", "8",
                                      "--model", str(tiny_encoder), "--output", str(tmp_path / "ner"),
                                      "--linear-probe-first"])
    assert result.exit_code == 2 and result.output.startswith("error: --linear-probe-first fits a sentence "
                                                              "classifier's head"), result.output


def test_reinit_layers_draws_the_top_layers_afresh_and_keeps_the_rest(tiny_encoder, tmp_path):
    model = BertForSequenceClassification.from_pretrained(tiny_encoder, num_labels=2)
    with torch.no_grad():  # away from the initialisation everywhere, as a pre-trained model's weights are
        for parameter in model.parameters():
            parameter.add_(0.5)
    start = {name: weight.clone() for name, weight in model.bert.state_dict().items()}
    reinitialise_top_layers(model, 1)
    weights = model.bert.state_dict()
    top = [name for name in start if name.startswith("encoder.layers.1.")]
    kept = [name for name in start if name not in top]
    assert top and all(torch.equal(weights[name], start[name]) for name in kept)
    assert not any(torch.equal(weights[name], start[name]) for name in top if name.endswith("dense.weight"))
    for name in top:  # BERT's initialisation: normal(0, 0.02) matrices, zero biases, unit LayerNorm
        if "norm" in name and name.endswith("weight"):
            assert torch.equal(weights[name], torch.ones_like(weights[name]))
        elif name.endswith("bias"):
            assert torch.equal(weights[name], torch.zeros_like(weights[name]))
        else:
            assert abs(weights[name].std().item() - 0.02) < 0.002, name

    args = _finetuned_args(tiny_encoder, tmp_path / "reinit", "--max-steps", "2", "--reinit-layers", "2")
    assert args["reinit_layers"] == 2
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "deep", "--reinit-layers", "3"))
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == "error: --reinit-layers 3: the model has only 2 encoder layers"
    assert not (tmp_path / "deep" / "checkpoint").exists()


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

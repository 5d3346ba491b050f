"""The training loop (bertforge.training.run) on a tiny model and fixed batches: gradient accumulation gives one
big batch's gradient, the moving average of the weights is what is evaluated and returned, an objective's own
modules are placed on the device first, and Ctrl-C finishes the step, saves a checkpoint and resumes exactly."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from bertforge.errors import ConfigError
from bertforge.model import BertConfig, BertForTokenClassification
from bertforge.tasks.trainer import TaskObjective
from bertforge.training import Processes, TrainingArguments, TrainingInterrupted, run
from bertforge.training.state import Checkpoint

from training_helpers import _SameBatch, tiny_classifier


pytestmark = pytest.mark.usefixtures("one_thread")


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

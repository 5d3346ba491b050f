"""A run's settings: TrainingArguments and FinetuneArgs refuse a value of the wrong type or range by name, --device
takes only what bertforge runs on (CPU processes always join over gloo), and every option of `finetune` and
`distill` is a training setting or the command's own."""

from __future__ import annotations

import pytest
import torch

from bertforge.errors import ConfigError
from bertforge.training import Processes, TrainingArguments


pytestmark = pytest.mark.usefixtures("one_thread")


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


# --- the commands' options ---------------------------------------------------------------------------

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

"""Which model a pipeline runs, and how: the tasks a checkpoint folder or a model in memory can serve, loading
with the head a task needs, the one precision rule (float32, bfloat16, int8, auto) and device, and a checkpoint
loaded once for several pipelines to share (the server's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bertforge.errors import CheckpointError, InputError
from bertforge.model import BertModel
from bertforge.model.capabilities import ENCODER_TASKS, checkpoint_tasks, head_model
from bertforge.model.checkpoint import missing_weights_unlogged, model_folder
from bertforge.model.cpu import cpu_has_any
from bertforge.paths import model_path
from bertforge.tokenization import BertTokenizer
from bertforge.training.distributed import resolve_device

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "int8", "auto")


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def cpu_has_native_bf16() -> bool:
    """AMX or AVX-512 BF16, as PyTorch's CPU probe reports them. (oneDNN's own bf16 check,
    `torch.ops.mkldnn._is_mkldnn_bf16_supported`, also says yes where bfloat16 is only emulated.)"""
    return cpu_has_any("amx_bf16", "avx512_bf16")


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """`auto`: bfloat16 on a CPU with native BF16, where it is faster at nearly the same vectors;
    float32 everywhere else. Opt-in: a default that changes the numbers with the machine would
    make outputs differ between machines with no option changed."""
    check_dtype(dtype)
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.type == "cpu" and cpu_has_native_bf16() else "float32"


def apply_dtype(model: nn.Module, dtype: str, device: torch.device) -> nn.Module:
    """The one precision rule of every pipeline: float32 (exact), bfloat16 weights, int8 (the
    encoder's Linear layers on the CPU, see `bertforge.model.quantize`), or `auto` (`resolve_dtype`).
    float16 is not offered: its narrow range can overflow attention scores, and bfloat16 saves the
    same memory with float32's range."""
    dtype = resolve_dtype(dtype, device)
    if dtype == "bfloat16":
        return model.to(device=device, dtype=torch.bfloat16)
    if dtype == "int8":
        if device.type != "cpu":
            raise InputError(f"--dtype int8 runs on the CPU only, got --device {device}")
        from bertforge.model.quantize import INT8_EXACT_FLAGS, onednn_int8_exact, quantize_encoder

        if not onednn_int8_exact():
            log.warning("--dtype int8: this CPU has none of %s, so the int8 products are computed exactly in "
                        "float32, with the quantisation's cost on top (docs/benchmarks.md); --dtype float32 is "
                        "faster here", ", ".join(INT8_EXACT_FLAGS))
        return quantize_encoder(model.to(device))
    return model.to(device)


def load_for_task(model_class, path: Path, task: str, head_prefix: tuple[str, ...] | None, head_name: str | None):
    """Load `model_class` from `path`; when the task needs a head the checkpoint lacks (its weights
    show up in `missing_keys`), say which head and what this checkpoint can do instead."""
    folder, _ = model_folder(path)
    with missing_weights_unlogged():  # missing head weights are our error to report, below
        model = model_class.from_pretrained(path)
    missing_head = head_prefix is not None and any(k.startswith(head_prefix) for k in model.missing_keys)
    # The two classifiers share their weights' names: the config's architectures tell them apart.
    if missing_head or task in ("text-classification", "token-classification"):
        tasks = checkpoint_tasks(folder)
        if missing_head or task not in tasks:
            raise CheckpointError(f"{path}: {task} needs a {head_name}, and this checkpoint has none; it can do: "
                                  f"{', '.join(tasks)}")
    return model


def model_tasks(model: nn.Module) -> list[str]:
    """The tasks a model in memory can serve, judged by its heads (`checkpoint_tasks` for a folder)."""
    from bertforge.model import BertForSequenceClassification, BertForTokenClassification

    heads = {"mlm": "fill-mask", "nsp": "next-sentence", "qa_outputs": "question-answering"}
    tasks = [*ENCODER_TASKS, *(task for attribute, task in heads.items() if hasattr(model, attribute))]
    if isinstance(model, BertForSequenceClassification):
        tasks.append("text-classification")
    if isinstance(model, BertForTokenClassification):
        tasks.append("token-classification")
    return tasks


@dataclass
class LoadedCheckpoint:
    """A checkpoint loaded once, in its precision and on its device, for several pipelines to share
    (the server answers every task of a model directory from one copy of its weights)."""

    path: Path
    model: nn.Module
    tokenizer: BertTokenizer
    device: torch.device
    dtype: str
    tasks: list[str]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", dtype: str = "float32") -> LoadedCheckpoint:
    """Load a model directory (or a file in it, or Google's checkpoint prefix, as pipelines take one) with the
    head model that carries all of its heads."""
    from bertforge.model import ARCHITECTURES

    given = model_path(path)
    folder, _ = model_folder(given)
    device = resolve_device(device)
    held = checkpoint_tasks(folder)
    model = load_for_task(ARCHITECTURES.get(head_model(held), BertModel), given, "any task", None, None)
    tasks = [task for task in held if task in model_tasks(model)]
    if len(tasks) < len(held):  # heads no one architecture carries together (MLM and QA, say): the first wins
        log.warning("%s: its weights hold heads for %s, which %s does not carry; it serves %s", folder,
                    ", ".join(t for t in held if t not in tasks), type(model).__name__, ", ".join(tasks))
    return LoadedCheckpoint(folder, apply_dtype(model.eval(), dtype, device), BertTokenizer.from_pretrained(folder),
                            device, dtype, tasks)


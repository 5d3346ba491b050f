"""AdamW without weight decay on biases and LayerNorm, optionally with layer-wise learning-rate decay,
and the warm-up + decay schedule."""

from __future__ import annotations

import math
import re

import torch

_LAYER = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.")


def layer_depths(model: torch.nn.Module) -> tuple[dict[str, int], int]:
    """({parameter name: depth}, the deepest depth): the embeddings 0, encoder layer i at i + 1, and
    everything above the encoder (pooler, task heads) at the number of layers + 1."""
    top = model.config.num_hidden_layers + 1
    depths = {}
    for name, _ in model.named_parameters():
        layer = _LAYER.search(name)
        depths[name] = int(layer.group(1)) + 1 if layer else 0 if ".embeddings." in f".{name}" else top
    return depths, top


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float = 0.01,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                    fused: bool = True, layer_lr_decay: float = 1.0) -> torch.optim.AdamW:
    """`fused`: one kernel pass per tensor. On CPU torch's default is a Python loop over the tensors;
    the fused step is 4-5× faster (BERT-mini: 11 M parameters, 7.8 M of them the word embeddings) and
    its weights stay within 1e-8 of the loop's (bench/pretrain.py, tests/test_optim.py). It is also
    transformers' Trainer default. A checkpoint keeps the choice in its param_groups, so a run
    resumed from an older checkpoint continues with the implementation it started with.

    `layer_lr_decay` below 1 is ELECTRA's layer-wise learning-rate decay for fine-tuning (Clark et
    al., 2020): the heads train at the full rate, each layer below at `layer_lr_decay` times the rate
    of the one above, the embeddings lowest, so the pre-trained lower layers move least. The factor
    of each group is its "lr_scale", which `set_learning_rate` applies."""
    depths, top = layer_depths(model) if layer_lr_decay != 1.0 else ({}, 0)
    groups: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            # Biases and LayerNorm parameters are exactly the 1-D parameters: no weight decay on them.
            groups.setdefault((depths.get(name, top), parameter.ndim >= 2), []).append(parameter)
    # Without the decay: the two groups (decayed first) that checkpoints of earlier runs hold.
    order = sorted(groups, key=lambda key: (-key[0], not key[1]))
    return torch.optim.AdamW([{"params": groups[key], "weight_decay": weight_decay if key[1] else 0.0,
                               "lr_scale": layer_lr_decay ** (top - key[0])} for key in order],
                             lr=learning_rate, betas=betas, eps=eps, fused=fused)


# The decay after warm-up, by name: the share of the peak rate as a function of the share of the decay left.
SCHEDULES = {"linear": lambda remaining: remaining,
             # half a cosine: higher through the middle of the run, flatter at both ends
             "cosine": lambda remaining: 0.5 * (1 - math.cos(math.pi * remaining))}


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int, schedule: str = "linear") -> float:
    """Multiplier of the peak learning rate at optimiser step `step` (0-based): linear warm-up
    that already moves the weights at step 0, then the `schedule`'s decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return SCHEDULES[schedule](max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps)))


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    # Set from the step number each time rather than kept in a scheduler: nothing to checkpoint.
    for group in optimizer.param_groups:
        group["lr"] = learning_rate * group.get("lr_scale", 1.0)  # no scale in checkpoints of earlier runs

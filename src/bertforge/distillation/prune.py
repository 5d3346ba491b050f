"""A smaller student cut from the teacher itself (Minitron, Muralidharan et al. 2024): the teacher's layers
that matter most keep the hidden channels, attention heads and feed-forward units that carry the most
activation on the training texts, and lose the rest. Unlike a fresh network of the same size, the student
starts with what the teacher learnt; distillation then repairs what the cut broke.

Depth (`important_layers`, an alternative to evenly spaced layers): layers leave one at a time, each time the
one whose removal moves the last hidden state least (mean 1 − cos over the calibration tokens, DistilBERT's
L_cos). The output a task head reads thus stays close to the teacher's; in a fine-tuned teacher the last layer
is the one it can least do without. The cut starts closer to the teacher, but after distillation the two choices
score the same (docs/results.md).

Width, measured on the same calibration set of training inputs (the teacher's forward pass only):
- a hidden channel: Σ |LayerNorm output| over every LayerNorm of the stack (embeddings and each layer's two),
  as every layer reads and writes that channel of the residual stream;
- a head: Σ ‖its context vector‖ over the tokens, per layer;
- a feed-forward unit: Σ |its activation| over the tokens, per layer.
Head size stays the teacher's, so the student has hidden / head size heads (384 → 256 with 32-wide heads:
12 → 8). LayerNorm then normalises over the kept channels only; distillation adapts to that.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import replace

import torch

from bertforge.distillation.losses import hidden_cosine
from bertforge.errors import ConfigError
from bertforge.model import BertConfig

LAYER = re.compile(r"^(?:bert\.)?encoder\.layers\.(\d+)\.(.+)$")
# heads that read the last hidden state: their weights lose input columns only
TASK_HEADS = ("classifier.weight", "qa_outputs.weight")
UNCHANGED = ("classifier.bias", "qa_outputs.bias")


def pruned_config(wide: BertConfig, hidden_size: int, intermediate_size: int) -> BertConfig:
    """`wide` (the teacher's width, the student's depth) narrowed to `hidden_size`, heads of the same size."""
    head_dim = wide.head_dim
    if hidden_size % head_dim or not head_dim <= hidden_size <= wide.hidden_size:
        raise ConfigError(f"--prune: a width of {hidden_size} cannot be cut from the teacher's {wide.hidden_size}: "
                          f"it must be a multiple of the teacher's head size ({head_dim}), at most {wide.hidden_size}")
    if not 1 <= intermediate_size <= wide.intermediate_size:
        raise ConfigError(f"--prune: a feed-forward width of {intermediate_size} cannot be cut from the teacher's "
                          f"{wide.intermediate_size}")
    return replace(wide, hidden_size=hidden_size, num_attention_heads=hidden_size // head_dim,
                   intermediate_size=intermediate_size)


@torch.no_grad()
def importance(model: torch.nn.Module, calibration: Sequence[dict], batch_size: int = 64) -> dict:
    """Activation sums of `model` (eval mode) over `calibration` features (`input_ids`, `token_type_ids`):
    {"hidden": (hidden,), "heads": [(heads,) per layer], "units": [(intermediate,) per layer]}."""
    bert, config = model.base_model, model.config
    layers = bert.encoder.layers
    sums = {"hidden": torch.zeros(config.hidden_size, dtype=torch.float64),
            "heads": [torch.zeros(config.num_attention_heads, dtype=torch.float64) for _ in layers],
            "units": [torch.zeros(config.intermediate_size, dtype=torch.float64) for _ in layers]}

    def add_hidden(module, inputs, output):  # output: (tokens, hidden)
        sums["hidden"] += output.abs().sum(0, dtype=torch.float64)

    def add_heads(i):
        def hook(module, inputs):  # inputs[0]: (tokens, hidden), the heads' contexts side by side
            context = inputs[0].view(inputs[0].shape[0], config.num_attention_heads, config.head_dim)
            sums["heads"][i] += context.norm(dim=-1).sum(0, dtype=torch.float64)
        return hook

    def add_units(i):
        def hook(module, inputs):  # inputs[0]: (tokens, intermediate), after the activation
            sums["units"][i] += inputs[0].abs().sum(0, dtype=torch.float64)
        return hook

    handles = [bert.embeddings.norm.register_forward_hook(add_hidden)]
    for i, layer in enumerate(layers):
        handles += [layer.attention_norm.register_forward_hook(add_hidden),
                    layer.output_norm.register_forward_hook(add_hidden),
                    layer.attention.out.register_forward_pre_hook(add_heads(i)),
                    layer.output.register_forward_pre_hook(add_units(i))]
    try:
        with model.evaluating():
            for batch in _batches(calibration, batch_size):
                bert.forward_unpadded([f["input_ids"] for f in batch], [f["token_type_ids"] for f in batch])
    finally:
        for handle in handles:
            handle.remove()
    return sums


@torch.no_grad()
def important_layers(model: torch.nn.Module, count: int, calibration: Sequence[dict],
                     batch_size: int = 64) -> list[int]:
    """The `count` layers of `model` (0-based, in order) to keep: greedily, the one whose removal moves the
    last hidden state least on `calibration` leaves, until `count` remain."""
    bert = model.base_model
    layers = bert.encoder.layers
    with model.evaluating():
        # per batch: the embeddings, the length groups and the teacher's last hidden state, (tokens, hidden)
        batches = []
        for batch in _batches(calibration, batch_size):
            out = bert.forward_unpadded([f["input_ids"] for f in batch], [f["token_type_ids"] for f in batch],
                                        layers=(0, -1))
            batches.append((out.hidden_states[0], out.groups, out.hidden_states[1]))

        def distance(kept: list[int]) -> float:
            total, tokens = 0.0, 0
            for x, groups, target in batches:
                for i in kept:
                    x = layers[i](x, None, False, groups)
                total += hidden_cosine(x, target).item()
                tokens += len(target)
            return total / tokens

        kept = list(range(len(layers)))
        while len(kept) > count:
            kept.remove(min(kept, key=lambda i: distance([k for k in kept if k != i])))
    return kept


def _batches(calibration: Sequence[dict], batch_size: int) -> Iterator[list[dict]]:
    """`calibration` sorted by length (forward_unpadded's order) in slices of `batch_size`."""
    ordered = sorted(calibration, key=lambda feature: len(feature["input_ids"]))
    for start in range(0, len(ordered), batch_size):
        yield ordered[start:start + batch_size]


def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` largest scores, in their original order."""
    return scores.topk(count).indices.sort().values


def prune_width(model: torch.nn.Module, config: BertConfig,
                calibration: Sequence[dict]) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """The weights of `type(model)(config)` cut from `model` (same depth, `config` from `pruned_config`): the
    channels, heads and units that `importance` ranks highest on `calibration`; the kept hidden channels
    (the teacher's index of each of the student's, in order); and per layer the kept heads (likewise)."""
    wide = model.config
    scores = importance(model, calibration)
    hidden = _top(scores["hidden"], config.hidden_size)
    head_dim, heads = wide.head_dim, config.num_attention_heads
    # per layer: the kept heads' columns of the context, and their rows in the fused q/k/v projection
    kept_heads = [_top(s, heads) for s in scores["heads"]]
    context = [(kept[:, None] * head_dim + torch.arange(head_dim)).flatten() for kept in kept_heads]
    qkv = [torch.cat([part * wide.hidden_size + columns for part in range(3)]) for columns in context]
    units = [_top(s, config.intermediate_size) for s in scores["units"]]

    def cut(name: str, tensor: torch.Tensor) -> torch.Tensor:
        layer = LAYER.match(name)
        if layer is None:
            if re.search(r"embeddings\.(word|position|token_type)\.weight$", name):
                return tensor[:, hidden]
            if re.search(r"embeddings\.norm\.(weight|bias)$|pooler\.dense\.bias$", name):
                return tensor[hidden]
            if name.endswith("pooler.dense.weight"):
                return tensor[hidden][:, hidden]
            if name in TASK_HEADS:
                return tensor[:, hidden]
            if name in UNCHANGED:
                return tensor
        else:
            i, part = int(layer[1]), layer[2]
            rows_and_columns = {"attention.qkv": (qkv[i], hidden), "attention.out": (hidden, context[i]),
                                "intermediate": (units[i], hidden), "output": (hidden, units[i])}
            module, kind = part.rsplit(".", 1)
            if module in rows_and_columns:
                rows, columns = rows_and_columns[module]
                return tensor[rows] if kind == "bias" else tensor[rows][:, columns]
            if module in ("attention_norm", "output_norm"):
                return tensor[hidden]
        raise ConfigError(f"--prune: no rule to cut the teacher's parameter {name!r}")

    return {name: cut(name, tensor) for name, tensor in model.state_dict().items()}, hidden, kept_heads

"""Weight names: a Hugging Face checkpoint's (BERT's or DistilBERT's) to ours and back.

They differ in three ways, all handled here: the `bert.` prefix (absent in bare `BertModel` checkpoints),
separate query/key/value matrices (we fuse them), and spelling (`LayerNorm.gamma` in old ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import torch

from bertforge.errors import CheckpointError

# (Hugging Face name, bertforge name); {i} is a layer number. Suffixes (.weight/.bias) carry over.
NAME_TABLE = [
    ("embeddings.word_embeddings", "bert.embeddings.word"),
    ("embeddings.position_embeddings", "bert.embeddings.position"),
    ("embeddings.token_type_embeddings", "bert.embeddings.token_type"),
    ("embeddings.LayerNorm", "bert.embeddings.norm"),
    ("encoder.layer.{i}.attention.output.dense", "bert.encoder.layers.{i}.attention.out"),
    ("encoder.layer.{i}.attention.output.LayerNorm", "bert.encoder.layers.{i}.attention_norm"),
    ("encoder.layer.{i}.intermediate.dense", "bert.encoder.layers.{i}.intermediate"),
    ("encoder.layer.{i}.output.dense", "bert.encoder.layers.{i}.output"),
    ("encoder.layer.{i}.output.LayerNorm", "bert.encoder.layers.{i}.output_norm"),
    ("pooler.dense", "bert.pooler.dense"),
    ("cls.predictions.transform.dense", "mlm.dense"),
    ("cls.predictions.transform.LayerNorm", "mlm.norm"),
    ("cls.predictions.decoder", "mlm.decoder"),  # only where tie_word_embeddings is false
    ("cls.seq_relationship", "nsp"),
    ("classifier", "classifier"),
    ("qa_outputs", "qa_outputs"),
]
# DistilBERT's names (transformers' DistilBert* classes) for the same modules. Its classifier's
# `pre_classifier` (dense + ReLU on [CLS]) is our pooler; it has no token types and no NSP.
DISTILBERT_NAME_TABLE = [
    ("embeddings.word_embeddings", "bert.embeddings.word"),
    ("embeddings.position_embeddings", "bert.embeddings.position"),
    ("embeddings.LayerNorm", "bert.embeddings.norm"),
    ("transformer.layer.{i}.attention.out_lin", "bert.encoder.layers.{i}.attention.out"),
    ("transformer.layer.{i}.sa_layer_norm", "bert.encoder.layers.{i}.attention_norm"),
    ("transformer.layer.{i}.ffn.lin1", "bert.encoder.layers.{i}.intermediate"),
    ("transformer.layer.{i}.ffn.lin2", "bert.encoder.layers.{i}.output"),
    ("transformer.layer.{i}.output_layer_norm", "bert.encoder.layers.{i}.output_norm"),
    ("pre_classifier", "bert.pooler.dense"),
    ("vocab_transform", "mlm.dense"),
    ("vocab_layer_norm", "mlm.norm"),
    ("vocab_projector", "mlm.decoder"),
    ("classifier", "classifier"),
    ("qa_outputs", "qa_outputs"),
]


def _compile(table, source: int):
    patterns = []
    for pair in table:
        pattern = re.escape(pair[source]).replace(r"\{i\}", r"(?P<i>\d+)")
        patterns.append((re.compile(rf"^{pattern}\.(?P<suffix>weight|bias)$"), pair[1 - source]))
    return patterns


@dataclass(frozen=True)
class Naming:
    """How one model family names its weights in Hugging Face checkpoints."""

    prefix: str  # of the encoder's weights inside a head model
    body_prefixes: tuple[str, ...]  # encoder weight names (after the prefix)
    table: list
    qkv: re.Pattern  # separate query/key/value projections: (layer, part, weight|bias)
    qkv_name: str  # format of one of them, from layer, part and kind
    qkv_parts: tuple[str, str, str]  # query, key, value in our fused order
    mlm_bias: str
    ignored: re.Pattern  # present in some checkpoints, never needed

    @cached_property
    def to_ours(self):
        return _compile(self.table, 0)

    @cached_property
    def to_hf(self):
        return _compile(self.table, 1)


NAMINGS = {
    "bert": Naming("bert.", ("embeddings.", "encoder.", "pooler."), NAME_TABLE,
                   re.compile(r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$"),
                   "encoder.layer.{layer}.attention.self.{part}.{kind}", ("query", "key", "value"),
                   "cls.predictions.bias",
                   re.compile(r"^embeddings\.position_ids$")),  # a buffer
    "distilbert": Naming("distilbert.", ("embeddings.", "transformer."), DISTILBERT_NAME_TABLE,
                         re.compile(r"^transformer\.layer\.(\d+)\.attention\.([qkv]_lin)\.(weight|bias)$"),
                         "transformer.layer.{layer}.attention.{part}.{kind}", ("q_lin", "k_lin", "v_lin"),
                         "vocab_projector.bias",
                         re.compile(r"^embeddings\.position_ids$")),
}


def _rename(name: str, patterns) -> str | None:
    for pattern, template in patterns:
        match = pattern.match(name)
        if match:
            target = template.replace("{i}", match.groupdict().get("i") or "")
            return f"{target}.{match['suffix']}"
    return None


def hf_to_bertforge(state: dict[str, torch.Tensor],
                    model_type: str = "bert") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Hugging Face weights → our names. Returns the converted weights and the unused names."""
    naming = NAMINGS[model_type]
    ours, unused, qkv_parts = {}, [], {}
    for name, tensor in state.items():
        name = name.removeprefix(naming.prefix)
        name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))
        if naming.ignored.match(name):
            continue
        if name in (naming.mlm_bias, "cls.predictions.decoder.bias"):
            # Untied, transformers' decoder adds its own bias: that one, where the checkpoint has both.
            if name != naming.mlm_bias or "cls.predictions.decoder.bias" not in state:
                ours["mlm.bias"] = tensor
            continue
        match = naming.qkv.match(name)
        if match:
            layer, part, kind = match.groups()
            qkv_parts.setdefault((layer, kind), {})[part] = tensor
            continue
        target = _rename(name, naming.to_ours)
        if target is None:
            unused.append(name)
        else:
            ours[target] = tensor
    for (layer, kind), parts in qkv_parts.items():
        if set(parts) != set(naming.qkv_parts):
            raise CheckpointError(f"layer {layer}: attention {kind} has only {sorted(parts)} of "
                                  f"{'/'.join(naming.qkv_parts)}")
        shapes = {tuple(parts[p].shape) for p in naming.qkv_parts}
        if len(shapes) > 1:
            raise CheckpointError(f"layer {layer}: attention {kind} shapes disagree: "
                                  + ", ".join(f"{p} {tuple(parts[p].shape)}" for p in naming.qkv_parts))
        ours[f"bert.encoder.layers.{layer}.attention.qkv.{kind}"] = torch.cat([parts[p] for p in naming.qkv_parts])
    return ours, unused


def bertforge_to_hf(state: dict[str, torch.Tensor], bare_encoder: bool,
                    model_type: str = "bert") -> dict[str, torch.Tensor]:
    """Our weights → Hugging Face names (with the `bert.`/`distilbert.` prefix unless this is a bare encoder)."""
    naming = NAMINGS[model_type]
    hf = {}
    body_prefix = "" if bare_encoder else naming.prefix
    for name, tensor in state.items():
        if name == "mlm.word_embeddings.weight":
            continue  # tied to bert.embeddings.word, saved once
        if name == "mlm.bias":
            hf[naming.mlm_bias] = tensor
            if model_type == "bert" and "mlm.decoder.weight" in state:  # untied: the decoder reads its own bias
                hf["cls.predictions.decoder.bias"] = tensor.clone()
            continue
        qkv = re.match(r"^bert\.encoder\.layers\.(\d+)\.attention\.qkv\.(weight|bias)$", name)
        if qkv:
            layer, kind = qkv.groups()
            for part, chunk in zip(naming.qkv_parts, tensor.chunk(3)):
                hf[body_prefix + naming.qkv_name.format(layer=layer, part=part, kind=kind)] = chunk
            continue
        target = _rename(name, naming.to_hf)
        if target is None:
            raise CheckpointError(f"no {model_type} checkpoint name for weight {name!r} (a head {model_type} lacks?)")
        hf[(body_prefix + target) if target.startswith(naming.body_prefixes) else target] = tensor
    return hf

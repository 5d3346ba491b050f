"""The BERT encoder, top to bottom: embeddings → L × (self-attention, feed-forward) → pooler.

Class names mean what they mean in transformers: `BertModel` is the bare, loadable encoder,
`BertEncoder` its stack of layers; `BertPreTrainedModel` (pretrained.py) is the base that loads
and saves every model. Parameter names are our own and short; `bertforge.model.weight_names` maps them to and
from the Hugging Face names, so published checkpoints load unchanged.

One forward path, two layouts: a padded (batch, seq, hidden) tensor with a mask (training,
attention maps), or an unpadded (total tokens, hidden) matrix of sequences grouped by length
(inference: no work on padding, as in MosaicBERT). Both run the same layers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from bertforge.errors import InputError
from bertforge.model.config import BertConfig
from bertforge.model.dropout import Dropout, dropout
from bertforge.model.linear import Linear, capturing_graph
from bertforge.model.outputs import ModelOutput
from bertforge.model.pretrained import BertPreTrainedModel, init_weights


def gelu(x: torch.Tensor, inplace: bool = False, approximate: str = "none") -> torch.Tensor:
    """GELU; "none" is the exact erf form, as in Google's BERT."""
    return torch.ops.aten.gelu_(x, approximate=approximate) if inplace else F.gelu(x, approximate=approximate)


# Each takes `inplace`, as F.relu does.
ACTIVATION_FUNCTIONS = {"gelu": gelu, "gelu_new": partial(gelu, approximate="tanh"),
                        "gelu_pytorch_tanh": partial(gelu, approximate="tanh"), "relu": F.relu}

# (first row, number of sequences, length) for each run of equal-length sequences in an unpadded batch
LengthGroups = list[tuple[int, int, int]]


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: torch.Tensor  # (batch, seq, hidden)
    pooler_output: torch.Tensor | None  # (batch, hidden)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + one per layer
    attentions: tuple[torch.Tensor, ...] | None = None  # one (batch, heads, seq, seq) per layer


@dataclass
class UnpaddedOutput:
    """Hidden states of sequences concatenated without padding, sorted by length."""

    lengths: list[int]
    groups: LengthGroups
    hidden_states: list[torch.Tensor]  # (total tokens, hidden) for each requested layer index

    def first_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """(total tokens, hidden) → (sequences, hidden): each sequence's first ([CLS]) row, in batch order."""
        starts = [first + i * length for first, count, length in self.groups for i in range(count)]
        return hidden[torch.tensor(starts, device=hidden.device)]


class BertEmbeddings(nn.Module):
    """token + segment + learned position embedding, then LayerNorm and dropout. DistilBERT has
    no segments (type_vocab_size 0), and may use fixed sinusoidal positions."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size) if config.type_vocab_size else None
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.sinusoidal = bool(config.extra.get("sinusoidal_pos_embds"))
        if self.sinusoidal:
            self.position.weight.requires_grad_(False)  # fixed, as in DistilBERT; saved like a learned table

    def reset_sinusoidal_positions(self) -> None:
        """DistilBERT's table: sin at even and cos at odd columns of position / 10000^(2⌊j/2⌋/dim)."""
        count, dim = self.position.weight.shape
        angles = torch.arange(count, dtype=torch.float64)[:, None] / torch.pow(
            10000.0, 2 * (torch.arange(dim) // 2) / dim)
        with torch.no_grad():
            self.position.weight[:, 0::2] = torch.sin(angles[:, 0::2]).float()
            self.position.weight[:, 1::2] = torch.cos(angles[:, 1::2]).float()

    def forward(self, input_ids: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (…, seq), or their vectors already looked up (`inputs_embeds`, …, seq, hidden); token types
        default to segment 0 and positions to 0..seq-1."""
        x = self.word(input_ids) if inputs_embeds is None else inputs_embeds
        if position_ids is None:
            position_ids = torch.arange(x.shape[-2], device=x.device)
        if self.token_type is not None:  # without segments (DistilBERT) token types are ignored
            if token_type_ids is None:
                token_type_ids = torch.zeros(x.shape[:-1], dtype=torch.long, device=x.device)
            x = x + self.token_type(token_type_ids)
        return self.dropout(self.norm(x + self.position(position_ids)))


# Unpadded float32 groups shorter than this attend through `explicit_attention` on the CPU: the fused kernel's
# fixed cost per call outweighs its savings on short sequences (on a Zen 4, 8 to 48 tokens: 1.2–2.4× the
# written-out time, `bench/embed_kernels.py --attention`; short lines embed 1.11× faster). Reduced precision
# keeps the fused kernel, whose softmax runs in float32; so do GPUs, where this was not measured.
EXPLICIT_ATTENTION_BELOW = 64


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                       dropout_p: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q·kᵀ/√d)·v written out, for (batch, heads, seq, head_dim) inputs: the context and the
    (batch, heads, seq, seq) weights, which the fused kernel never materialises."""
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    return dropout(weights, dropout_p) @ v, weights


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.qkv = Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def attend(self, qkv: torch.Tensor, mask: torch.Tensor | None, return_weights: bool):
        """(batch, seq, 3·hidden) projections → (batch, seq, hidden) context, and the weights if asked."""
        batch, seq, _ = qkv.shape
        # (batch, seq, 3, heads, head_dim) → three (batch, heads, seq, head_dim)
        q, k, v = qkv.view(batch, seq, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        dropout_p = self.dropout_p if self.training else 0.0
        weights = None
        # The fused kernel never materialises the weights. With dropout on the CPU it writes them out itself,
        # with torch's slower dropout mask (see model/dropout.py).
        if return_weights or (dropout_p and qkv.device.type == "cpu"):
            context, weights = explicit_attention(q, k, v, mask, dropout_p)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return context.transpose(1, 2).reshape(batch, seq, -1), weights if return_weights else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, return_weights: bool = False,
                groups: LengthGroups | None = None):
        qkv = self.qkv(x)
        if groups is None:  # x: (batch, seq, hidden)
            context, weights = self.attend(qkv, mask, return_weights)
        else:  # x: (total tokens, hidden); sequences of one length attend together and need no mask
            context, weights = self.attend_groups(qkv, groups), None
        return self.out(context), weights

    def attend_groups(self, qkv: torch.Tensor, groups: LengthGroups) -> torch.Tensor:
        """(total tokens, 3·hidden) → (total tokens, hidden), one attention call per length group.
        Each group's context is written straight into its rows: no per-group reshape copy and no final cat."""
        context = qkv.new_empty(qkv.shape[0], qkv.shape[1] // 3)
        written_out_below = EXPLICIT_ATTENTION_BELOW if qkv.dtype == torch.float32 and qkv.device.type == "cpu" else 0
        for first, count, length in groups:
            rows = slice(first, first + count * length)
            # (count, length, 3, heads, head_dim) → three (count, heads, length, head_dim)
            q, k, v = qkv[rows].view(count, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            if length < written_out_below:
                attended = explicit_attention(q, k, v)[0]
            else:
                attended = F.scaled_dot_product_attention(q, k, v)
            # (count, heads, length, head_dim) → (count, length, heads, head_dim), copied into its rows
            context[rows].view(count, length, self.num_heads, self.head_dim).copy_(attended.transpose(1, 2))
        return context


class BertLayer(nn.Module):
    """One post-LayerNorm Transformer encoder layer, as in the original BERT."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertSelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = Linear(config.hidden_size, config.intermediate_size)
        self.output = Linear(config.intermediate_size, config.hidden_size)
        self.output_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.activation = ACTIVATION_FUNCTIONS[config.hidden_act]
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, return_weights: bool = False,
                groups: LengthGroups | None = None):
        attended, weights = self.attention(x, mask, return_weights, groups)
        x = self.attention_norm(x + self.dropout(attended))
        # Without gradients the activation overwrites the intermediate product (a forward hook on
        # `intermediate` sees it change): one (tokens, intermediate) block less to allocate per layer.
        hidden = self.activation(self.intermediate(x), inplace=not torch.is_grad_enabled())
        x = self.output_norm(x + self.dropout(self.output(hidden)))
        return (x, weights) if return_weights else x  # a tensor, as transformers' layer gives (attribution hooks)


class BertEncoder(nn.Module):
    """The stack of layers; returns every hidden state (embeddings first) and attention map when asked."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        # Activation checkpointing (`activation_checkpointing_enable`): the function that runs a layer keeping
        # only its input (recomputing the rest in the backward pass), and which layers it runs.
        self.checkpoint = None
        self.checkpoint_every_n_layers = 1

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False, groups: LengthGroups | None = None):
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        checkpointing = self.checkpoint is not None and self.training and torch.is_grad_enabled()
        for index, layer in enumerate(self.layers):
            if checkpointing and index % self.checkpoint_every_n_layers == 0:
                x = self.checkpoint(layer, x, mask, output_attentions, groups)
            else:
                x = layer(x, mask, output_attentions, groups)
            if output_attentions:
                x, weights = x
                attentions.append(weights)
            if output_hidden_states:
                hidden_states.append(x)
        return x, hidden_states, attentions


class BertPooler(nn.Module):
    """tanh(dense(hidden state of [CLS])): the sentence representation NSP was trained on.
    DistilBERT's classifier starts the same way with ReLU (its `pre_classifier`)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.activation = torch.relu if config.is_distilbert else torch.tanh

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden[:, 0]))


class BertModel(BertPreTrainedModel):
    """The bare encoder: embeddings, the layer stack and (optionally) the pooler."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool | None = None):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        if add_pooling_layer is None:  # a bare DistilBertModel has no pooler
            add_pooling_layer = not config.is_distilbert
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.apply(lambda module: init_weights(module, config.initializer_range))
        if self.embeddings.sinusoidal:
            self.embeddings.reset_sinusoidal_positions()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, *, position_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None) -> BaseModelOutputWithPooling:
        """None for an output flag: the config's (False unless set, as in transformers)."""
        self._check_inputs(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        # Boolean (batch, 1, 1, seq): True where a key may be attended to. None lets SDPA skip masking; a captured
        # graph keeps the mask, as it must serve padded batches too.
        mask = None
        if attention_mask is not None and (capturing_graph() or not bool(attention_mask.all())):
            mask = attention_mask.bool()[:, None, None, :]
        try:
            x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        except IndexError:  # on the CPU; checked here, not before, so that valid batches pay nothing
            for name, ids, size in (("input_ids", input_ids, self.config.vocab_size),
                                    ("token_type_ids", token_type_ids, self.config.type_vocab_size),
                                    ("position_ids", position_ids, self.config.max_position_embeddings)):
                if ids is not None and (ids.min() < 0 or ids.max() >= size):
                    raise InputError(f"{name} holds {int(ids.min() if ids.min() < 0 else ids.max())}, outside the "
                                     f"model's 0..{size - 1}") from None
            raise
        x, hidden_states, attentions = self.encoder(x, mask, output_hidden_states, output_attentions)
        return BaseModelOutputWithPooling(
            last_hidden_state=x,
            pooler_output=self.pooler(x) if self.pooler is not None else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    def forward_unpadded(self, input_ids: Sequence[Sequence[int]], token_type_ids: Sequence[Sequence[int]],
                         layers: Sequence[int] = (-1,)) -> UnpaddedOutput:
        """The encoder on the real tokens only (inference, eval mode), sequences sorted by length.

        Projections and the feed-forward network see one (total tokens, hidden) matrix with no
        padding rows; attention runs once per group of equal-length sequences, which needs no
        mask. Equals `forward` on the padded batch (tested). `layers` index the hidden states
        (0 = embeddings, -1 = last layer).
        """
        lengths = [len(ids) for ids in input_ids]
        if lengths != sorted(lengths):
            raise ValueError("forward_unpadded needs the sequences sorted by length")
        self._check_length(lengths[-1])
        groups, first = [], 0
        for length, run in itertools.groupby(lengths):
            count = len(list(run))
            groups.append((first, count, length))
            first += count * length
        device = self.device
        # One tensor per batch from the flattened lists (a tensor per sequence costs more than the copy).
        ids = torch.tensor(list(itertools.chain.from_iterable(input_ids)), device=device)
        types = torch.tensor(list(itertools.chain.from_iterable(token_type_ids)), device=device)
        # 0..length-1 for every sequence: one (count, length) grid per group, read row by row
        positions = torch.cat([torch.arange(length, device=device).expand(count, length).flatten()
                               for _, count, length in groups])
        x = self.embeddings(ids, types, positions)
        count = len(self.encoder.layers) + 1
        wanted = [layer % count for layer in layers]
        _, hidden_states, _ = self.encoder(x, output_hidden_states=True, groups=groups)
        return UnpaddedOutput(lengths, groups, [hidden_states[layer] for layer in wanted])

    def pooler_output_unpadded(self, input_ids: Sequence[Sequence[int]],
                               token_type_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """`forward(...).pooler_output` from `forward_unpadded`: (sequences, hidden), only the [CLS]
        rows reach the pooler. Sequences sorted by length, as there."""
        packed = self.forward_unpadded(input_ids, token_type_ids)
        cls = packed.first_tokens(packed.hidden_states[-1])  # (sequences, hidden)
        return self.pooler(cls[:, None])  # the pooler reads position 0 of (batch, seq, hidden)

    def _check_inputs(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds) -> None:
        """A user's mistake named by argument, before torch fails on it deep inside."""
        if (input_ids is None) == (inputs_embeds is None):
            raise InputError("give input_ids or inputs_embeds (the token vectors), not both" if input_ids is not None
                             else "give input_ids, or inputs_embeds (the token vectors)")
        name, given = ("input_ids", input_ids) if inputs_embeds is None else ("inputs_embeds", inputs_embeds)
        if capturing_graph():  # the inputs are examples: checking their sizes would fix them in the graph
            return
        if inputs_embeds is not None:
            hidden = self.config.hidden_size
            if (not isinstance(inputs_embeds, torch.Tensor) or inputs_embeds.dim() != 3
                    or inputs_embeds.shape[-1] != hidden or not inputs_embeds.is_floating_point()):
                raise InputError(f"inputs_embeds must be a floating (batch, sequence, {hidden}) tensor, got "
                                 + (f"{shape_of(inputs_embeds)} {inputs_embeds.dtype}"
                                    if isinstance(inputs_embeds, torch.Tensor) else shape_of(inputs_embeds)))
        elif not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise InputError(f"input_ids must be a (batch, sequence) tensor (return_tensors='pt'), got "
                             f"{shape_of(input_ids)}")
        elif input_ids.is_floating_point() or input_ids.dtype == torch.bool or input_ids.is_complex():
            raise InputError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
        shape = given.shape[:2]
        if not shape.numel():
            raise InputError(f"{name} is empty: shape {tuple(given.shape)}")
        for other, value in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if value is not None and (not isinstance(value, torch.Tensor) or value.shape != shape):
                raise InputError(f"{other} must have {name}' shape {tuple(shape)}, got {shape_of(value)}")
        if position_ids is not None and (
                not isinstance(position_ids, torch.Tensor) or position_ids.is_floating_point()
                or position_ids.dim() not in (1, 2) or position_ids.shape[-1] != shape[1]
                or (position_ids.dim() == 2 and position_ids.shape[0] not in (1, shape[0]))):
            raise InputError(f"position_ids must be integers shaped (sequence,), (1, sequence) or {tuple(shape)}, "
                             f"got {shape_of(position_ids)}"
                             + (f" {position_ids.dtype}" if isinstance(position_ids, torch.Tensor) else ""))
        self._check_length(shape[1])

    def _check_length(self, length: int) -> None:
        limit = self.config.max_position_embeddings
        if length > limit:
            raise InputError(f"sequence of {length} tokens is longer than the model's "
                             f"max_position_embeddings ({limit}); truncate it (max_length={limit})")


def shape_of(value) -> str:
    """A tensor's shape, or the type of what was given instead."""
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__

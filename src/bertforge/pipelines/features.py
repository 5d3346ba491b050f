"""Feature extraction: token vectors (per word piece, or per word of the input with its character
span) and sentence vectors (`cls`, `mean` or `max` pooling), from any layer or a combination of
layers (the BERT paper's feature-based NER sums or concatenates the last four), optionally
L2-normalised, as NumPy arrays or torch tensors.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from bertforge.errors import InputError
from bertforge.model.checkpoint import SENTENCE_POOLINGS, sentence_transformers_pooling
from bertforge.pipelines.base import Encoded, Pipeline, as_list, pool_sequences, split_sequences

POOLINGS = SENTENCE_POOLINGS
COMBINATIONS = ("sum", "concat", "mean")
LAYER_PRESETS = {"last": [-1], "last-four": [-4, -3, -2, -1], "embeddings": [0]}
RETURN_TYPES = ("np", "pt")


@dataclass
class TokenFeatures:
    """Vectors for the pieces (with [CLS]/[SEP]) or the words of one text. `spans` are character
    offsets into the text ((0, 0) for special tokens)."""

    tokens: list[str]
    spans: list[tuple[int, int]]
    vectors: np.ndarray | torch.Tensor  # (tokens, hidden) or (tokens, hidden × layers) with concat


def resolve_layers(layers, num_layers: int, keyword: str = "layers") -> list[int]:
    """An int (Python's, NumPy's or a 0-d tensor's), a list or tuple of them, or a preset name → hidden-state
    indices (0 = input embeddings); `keyword` is the argument errors name."""
    if isinstance(layers, str):
        if layers not in LAYER_PRESETS:
            raise InputError(f"{keyword}: unknown preset {layers!r}; use an index, a list of indices or one of "
                             f"{', '.join(LAYER_PRESETS)}")
        layers = LAYER_PRESETS[layers]
    chosen = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    if not chosen:
        raise InputError(f"{keyword}: choose at least one layer")
    indices = []
    for layer in chosen:
        index = _index(layer)
        if index is None or not -(num_layers + 1) <= index <= num_layers:
            raise InputError(f"{keyword}: {layer!r} is not a layer of this model (0 = embeddings .. {num_layers}, "
                             f"or negative from the last)")
        indices.append(index)
    return indices


def _index(value) -> int | None:
    """A whole number as Python, NumPy or a 0-d tensor hold one (not a bool, a float or a container)."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def combine_layers(states: list[torch.Tensor], combine: str) -> torch.Tensor:
    if combine not in COMBINATIONS:
        raise InputError(f"combine must be one of {', '.join(COMBINATIONS)}, got {combine!r}")
    if len(states) == 1:
        return states[0]
    if combine == "concat":
        return torch.cat(states, dim=-1)
    stacked = torch.stack(states)
    return stacked.sum(dim=0) if combine == "sum" else stacked.mean(dim=0)


def _check_normalize(normalize) -> None:
    if not isinstance(normalize, bool):  # "no" would be true
        raise InputError(f"normalize must be True or False, got {normalize!r}")


def _check_return_type(return_tensors: str) -> None:
    if return_tensors not in RETURN_TYPES:
        raise InputError(f"return_tensors must be 'np' or 'pt', got {return_tensors!r}")


class FeatureExtractionPipeline(Pipeline):
    """`pipe(text_or_texts, layers=-1, combine="sum", level="piece"|"word", normalize=False,
    return_tensors="np")` → a TokenFeatures per text."""

    task = "feature-extraction"

    def __call__(self, inputs, layers=-1, combine: str = "sum", level: str = "piece", normalize: bool = False,
                 return_tensors: str = "np"):
        texts, single = as_list(inputs, "inputs")
        if level not in ("piece", "word"):
            raise InputError(f"level must be 'piece' or 'word', got {level!r}")
        _check_normalize(normalize)
        _check_return_type(return_tensors)
        chosen = resolve_layers(layers, self.config.num_hidden_layers)
        combine_layers([torch.zeros(1)], combine)  # validates `combine` before any work
        encoded = self.encode(texts)

        def run(batch: list[Encoded]) -> list[torch.Tensor]:
            packed = self.bert.forward_unpadded([e.ids for e in batch], [e.type_ids for e in batch], chosen)
            hidden = combine_layers(packed.hidden_states, combine).float()
            return [v.cpu() for v in split_sequences(packed, hidden)]

        vectors = self.in_length_order(encoded, run)
        results = []
        for text, enc, vecs in zip(texts, encoded, vectors):
            if level == "word":
                tokens, spans, vecs = _pool_words(text, enc, vecs)
            else:
                tokens, spans = self.tokenizer.convert_ids_to_tokens(enc.ids), [tuple(s) for s in enc.offsets]
            if normalize:
                vecs = F.normalize(vecs, dim=-1)
            results.append(TokenFeatures(tokens, spans, vecs.numpy() if return_tensors == "np" else vecs))
        return results[0] if single else results


def _pool_words(text: str, enc: Encoded, vectors: torch.Tensor):
    """Mean of each word's piece vectors, with the word's text and character span."""
    pieces = [i for i, w in enumerate(enc.word_ids) if w is not None]
    if not pieces:
        return [], [], vectors[:0]
    word_of_piece = torch.tensor([enc.word_ids[i] for i in pieces])
    words, index = torch.unique_consecutive(word_of_piece, return_inverse=True)
    sums = torch.zeros(len(words), vectors.shape[1]).index_add_(0, index, vectors[pieces])
    counts = torch.bincount(index, minlength=len(words)).unsqueeze(1)
    # A word's span runs from the start of its first piece to the end of its last.
    boundaries = torch.cumsum(counts.squeeze(1), 0).tolist()
    firsts = [0, *boundaries[:-1]]
    spans = [(enc.offsets[pieces[f]][0], enc.offsets[pieces[b - 1]][1]) for f, b in zip(firsts, boundaries)]
    return [text[s:e] for s, e in spans], spans, sums / counts


class SentenceEmbeddingPipeline(Pipeline):
    """`pipe(text_or_texts, pooling=None, layers=-1, combine="sum", normalize=None,
    return_tensors="np")` → (texts, hidden) array, or (hidden,) for one string. pooling and normalize
    default to the checkpoint's sentence-transformers configuration where it has one, else to those of
    all-MiniLM-L6-v2: mean pooling, then L2 normalisation."""

    task = "sentence-embedding"

    @cached_property
    def checkpoint_defaults(self) -> tuple[str, bool]:
        return (self.model_path and sentence_transformers_pooling(self.model_path)) or ("mean", True)

    def __call__(self, inputs, pooling: str | None = None, layers=-1, combine: str = "sum",
                 normalize: bool | None = None, return_tensors: str = "np"):
        texts, single = as_list(inputs, "inputs")
        pooling = self.checkpoint_defaults[0] if pooling is None else pooling
        normalize = self.checkpoint_defaults[1] if normalize is None else normalize
        if pooling not in POOLINGS:
            raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        _check_normalize(normalize)
        _check_return_type(return_tensors)
        chosen = resolve_layers(layers, self.config.num_hidden_layers)
        combine_layers([torch.zeros(1)], combine)
        encoded = self.encode(texts)

        def run(batch: list[Encoded]) -> list[torch.Tensor]:
            packed = self.bert.forward_unpadded([e.ids for e in batch], [e.type_ids for e in batch], chosen)
            pooled = pool_sequences(packed, combine_layers(packed.hidden_states, combine), pooling)
            if normalize:
                pooled = F.normalize(pooled, dim=-1)
            return list(pooled.cpu())

        if not texts:
            width = self.config.hidden_size * (len(chosen) if combine == "concat" else 1)
            embeddings = torch.zeros(0, width)
        else:
            embeddings = torch.stack(self.in_length_order(encoded, run))
        if single:
            embeddings = embeddings[0]
        return embeddings.numpy() if return_tensors == "np" else embeddings

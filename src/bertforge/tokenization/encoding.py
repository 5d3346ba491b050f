"""The tokenizer's output: one `Encoding` per sequence (ids with their offsets and word ids), and
`BatchEncoding`, the dict of lists or tensors users get back, as in transformers."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from itertools import repeat
from typing import NamedTuple

from bertforge.errors import InputError


class _Deferred:
    """A read-only `Encoding` attribute that its `extras` function computes, together with the
    other deferred ones, on first read: most calls want the ids alone, and building offsets and
    word ids for every token costs more than the ids themselves."""

    def __set_name__(self, owner, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, encoding, owner=None):
        if encoding is None:
            return self
        if encoding._extras is not None:
            encoding._compute_extras()
        return getattr(encoding, self.slot)


class Encoding:
    """One encoded sequence (or pair) before batching: `ids` and `type_ids`, and the deferred
    `offsets`, `word_ids`, `special_mask` and `sequence_ids`, computed on first read by `extras()`,
    which returns the four of them."""

    __slots__ = ("ids", "type_ids", "_offsets", "_word_ids", "_special_mask", "_sequence_ids", "_extras")
    offsets = _Deferred()
    word_ids = _Deferred()
    special_mask = _Deferred()
    sequence_ids = _Deferred()

    def __init__(self, ids: list[int], extras: Callable[[], tuple[list, list, list, list]],
                 type_ids: list[int] | None = None):
        self.ids = ids
        self.type_ids = [] if type_ids is None else type_ids
        self._extras = extras

    def _compute_extras(self) -> None:
        extras, self._extras = self._extras, None
        self._offsets, self._word_ids, self._special_mask, self._sequence_ids = extras()

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Encoding(ids={self.ids!r})"

    def window(self, start: int, stop: int) -> "Encoding":
        return Encoding(self.ids[start:stop], lambda: (self.offsets[start:stop], self.word_ids[start:stop], [], []))

    def pad_word_and_sequence_ids(self, n_pad: int) -> None:
        """Extend the deferred word and sequence ids with `n_pad` Nones (for padding), still
        deferred if they have not been computed yet."""
        if self._extras is None:
            self._word_ids = self._word_ids + [None] * n_pad
            self._sequence_ids = self._sequence_ids + [None] * n_pad
            return
        extras = self._extras

        def padded():
            offsets, word_ids, special_mask, sequence_ids = extras()
            return offsets, word_ids + [None] * n_pad, special_mask, sequence_ids + [None] * n_pad
        self._extras = padded

    def windows(self, max_len: int, stride: int) -> list["Encoding"]:
        """The sequence cut to `max_len` tokens, then the overflowing windows, each starting
        `max_len - stride` tokens after the previous one (the reference's semantics)."""
        if len(self) <= max_len:
            return [self]
        if max_len == 0:
            return [self.window(0, 0), self]
        if stride >= max_len:
            raise InputError(f"stride ({stride}) must be smaller than the room left for the sequence ({max_len} tokens)")
        result = []
        for start in range(0, len(self), max_len - stride):
            stop = min(start + max_len, len(self))
            result.append(self.window(start, stop))
            if stop == len(self):
                break
        return result


def encodings_extras(a: Encoding, b: Encoding | None, add_special_tokens: bool) -> tuple:
    return joined_extras(a.offsets, a.word_ids, None if b is None else b.offsets, None if b is None else b.word_ids,
                          add_special_tokens)


def joined_extras(offsets_a: list, word_ids_a: list, offsets_b: list | None, word_ids_b: list | None,
                   add_special_tokens: bool) -> tuple:
    """Offsets, word ids, special-token mask and sequence ids of [CLS] A [SEP] (B [SEP]), from the
    offsets and word ids of A (and B)."""
    n_a = len(offsets_a)
    if add_special_tokens:
        offsets = [(0, 0), *offsets_a, (0, 0)]
        word_ids = [None, *word_ids_a, None]
        special = [1, *repeat(0, n_a), 1]
        sequence = [None, *repeat(0, n_a), None]
    else:
        offsets, word_ids, special, sequence = list(offsets_a), list(word_ids_a), [0] * n_a, [0] * n_a
    if offsets_b is not None:
        n_b = len(offsets_b)
        tail = 1 if add_special_tokens else 0
        offsets += offsets_b + [(0, 0)] * tail
        word_ids += word_ids_b + [None] * tail
        special += [0] * n_b + [1] * tail
        sequence += [1] * n_b + [None] * tail
    return offsets, word_ids, special, sequence


class CharSpan(NamedTuple):
    start: int
    end: int


class TokenSpan(NamedTuple):
    start: int
    end: int


class BatchEncoding(dict):
    """The tokenizer's output: a dict of lists (or tensors) with attribute access, and transformers'
    calls between tokens, words and characters, read from the encodings behind it. As there, each call
    takes `(batch_index, index)`, or the index alone for row 0; words and characters count within the
    text (`sequence_index` 0) or the pair (1); a token, word or character with no counterpart gives None."""

    def __init__(self, data: dict | None = None, encodings: list[Encoding] = (), batched: bool = True,
                 ids_to_tokens: dict | None = None, n_sequences: int | None = None):
        # A dict alone is how transformers' Trainer rebuilds a batch it moves: `type(batch)({...})`
        super().__init__(data or {})
        self.encodings = list(encodings)  # none after `pad`, as in transformers: the maps then have nothing to read
        self.is_batched = batched
        self.n_sequences = n_sequences
        self._ids_to_tokens = ids_to_tokens

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._row_and_index(batch_index, 0)[0].word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._row_and_index(batch_index, 0)[0].sequence_ids

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The row's pieces as strings, padding included."""
        ids = self["input_ids"]
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        return [self._ids_to_tokens[i] for i in (ids[batch_index] if self.is_batched else ids)]

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        row, token = self._row_and_index(batch_or_token_index, token_index)
        return row.sequence_ids[token] if token < len(row.sequence_ids) else None

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        row, token = self._row_and_index(batch_or_token_index, token_index)
        return row.word_ids[token] if token < len(row.word_ids) else None

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        row, token = self._row_and_index(batch_or_token_index, token_index)
        if token >= len(row.ids) or row.sequence_ids[token] is None:
            return None
        return CharSpan(*row.offsets[token])

    def char_to_token(self, batch_or_char_index: int, char_index: int | None = None,
                      sequence_index: int = 0) -> int | None:
        row, char = self._row_and_index(batch_or_char_index, char_index)
        return next((token for token, ((start, end), sequence) in enumerate(zip(row.offsets, row.sequence_ids))
                     if sequence == sequence_index and start <= char < end), None)

    def char_to_word(self, batch_or_char_index: int, char_index: int | None = None,
                     sequence_index: int = 0) -> int | None:
        token = self.char_to_token(batch_or_char_index, char_index, sequence_index)
        return None if token is None else self._row_and_index(batch_or_char_index, char_index)[0].word_ids[token]

    def word_to_tokens(self, batch_or_word_index: int, word_index: int | None = None,
                       sequence_index: int = 0) -> TokenSpan | None:
        row, word = self._row_and_index(batch_or_word_index, word_index)
        tokens = [token for token, (w, sequence) in enumerate(zip(row.word_ids, row.sequence_ids))
                  if w == word and sequence == sequence_index]
        return TokenSpan(tokens[0], tokens[-1] + 1) if tokens else None

    def word_to_chars(self, batch_or_word_index: int, word_index: int | None = None,
                      sequence_index: int = 0) -> CharSpan | None:
        span = self.word_to_tokens(batch_or_word_index, word_index, sequence_index)
        offsets = self._row_and_index(batch_or_word_index, word_index)[0].offsets
        return None if span is None else CharSpan(offsets[span.start][0], offsets[span.end - 1][1])

    def _row_and_index(self, batch_or_index: int, index: int | None) -> tuple[Encoding, int]:
        batch, index = (0, batch_or_index) if index is None else (batch_or_index, index)
        for name, value in (("batch index", batch), ("index", index)):
            if type(value) is not int or value < 0:
                raise InputError(f"BatchEncoding: {name} must be a whole number >= 0, got {value!r}")
        if not self.encodings:
            raise InputError("BatchEncoding: made by pad(), which keeps no encodings to map tokens, words and "
                             "characters with; ask the tokenizer's output")
        if batch >= len(self.encodings):
            raise InputError(f"BatchEncoding: batch index {batch} is past the {len(self.encodings)} rows")
        return self.encodings[batch], index

    def to(self, device) -> "BatchEncoding":
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self


def is_batch(value, split_into_words: bool) -> bool:
    if isinstance(value, str):
        return False
    if not isinstance(value, (list, tuple)):
        raise InputError(f"`text` must be a string or a list of strings, got {type(value).__name__}")
    if split_into_words:
        return bool(value) and isinstance(value[0], (list, tuple))
    return True


def is_one_id(ids) -> bool:
    """A single token id: a Python, NumPy or 0-d tensor integer (not a bool)."""
    return isinstance(ids, numbers.Integral) and not isinstance(ids, bool) or \
        getattr(ids, "ndim", None) == 0 and is_one_id(ids.item())


def is_flat(ids) -> bool:
    """One sequence's ids (a list of ints or a 1-d array), not a batch of them."""
    return getattr(ids, "ndim", None) == 1 or isinstance(ids, (list, tuple)) and bool(ids) and is_one_id(ids[0])


def as_int_list(ids) -> list[int]:
    """Ids from a list, tuple, NumPy array or tensor (of them); anything else (a string, None) named in the error."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if not isinstance(ids, (list, tuple)) or not all(is_one_id(i) for i in ids):
        raise InputError(f"ids must be a list of token ids (integers), got {type(ids).__name__} {str(ids)[:40]!r}")
    return [int(i) for i in ids]


def to_tensors(data: dict, kind: str) -> dict:
    import numpy as np
    lengths = {len(row) for row in data["input_ids"]} if data["input_ids"] and isinstance(data["input_ids"][0], list) else None
    if lengths is not None and len(lengths) > 1:
        raise InputError("sequences have different lengths: pass padding=True to return tensors")
    arrays = {k: np.asarray(v, dtype=np.int64) for k, v in data.items()}
    if kind == "np":
        return arrays
    import torch
    return {k: torch.from_numpy(v) for k, v in arrays.items()}

"""The tokenizer's output: one `Encoding` per sequence (ids with their offsets and word ids), and
`BatchEncoding`, the dict of lists or tensors users get back, as in transformers."""

from __future__ import annotations

from collections.abc import Callable

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


class BatchEncoding(dict):
    """The tokenizer's output: a dict of lists (or tensors) with attribute access and the
    per-row `word_ids` / `sequence_ids` of the encodings behind it."""

    def __init__(self, data: dict, encodings: list[Encoding], batched: bool):
        super().__init__(data)
        self.encodings = encodings
        self.is_batched = batched

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self.encodings[batch_index].word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        return self.encodings[batch_index].sequence_ids

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

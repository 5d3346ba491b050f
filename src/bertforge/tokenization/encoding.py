"""The tokenizer's output: one `Encoding` per sequence (ids with their offsets and word ids), and
`BatchEncoding`, the dict of lists or tensors users get back, as in transformers."""

from __future__ import annotations

from dataclasses import dataclass, field

from bertforge.errors import InputError


@dataclass
class Encoding:
    """One encoded sequence (or pair) before batching."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]
    type_ids: list[int] = field(default_factory=list)
    special_mask: list[int] = field(default_factory=list)
    sequence_ids: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def window(self, start: int, stop: int) -> "Encoding":
        return Encoding(self.ids[start:stop], self.offsets[start:stop], self.word_ids[start:stop])

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

"""Batches of variable-length features: length bucketing, padding and batched inference."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from bertforge.model import IGNORE_INDEX
from bertforge.progress import progress_bar

# Model inputs padded with zeros; per-token label lists padded with IGNORE_INDEX.
_INPUTS = ("input_ids", "token_type_ids")


def collate(features: list[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad `input_ids`/`token_type_ids` to the longest feature and add `attention_mask`; scalar
    fields (`labels`, `start_positions`, ...) become 1-d tensors, token label lists are padded with -100."""
    width = max(len(f["input_ids"]) for f in features)
    batch = {}
    ids = np.full((len(features), width), pad_token_id, dtype=np.int64)
    types = np.zeros((len(features), width), dtype=np.int64)
    mask = np.zeros((len(features), width), dtype=np.int64)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        ids[row, :n] = f["input_ids"]
        types[row, :n] = f["token_type_ids"]
        mask[row, :n] = 1
    batch.update(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types),
                 attention_mask=torch.from_numpy(mask))
    for key in ("labels", "start_positions", "end_positions"):
        if key not in features[0]:
            continue
        values = [f[key] for f in features]
        if isinstance(values[0], list):
            padded = np.full((len(features), width), IGNORE_INDEX, dtype=np.int64)
            for row, v in enumerate(values):
                padded[row, :len(v)] = v
            batch[key] = torch.from_numpy(padded)
        else:
            batch[key] = torch.tensor(values, dtype=torch.long)
    return batch


def length_bucketed_batches(lengths: list[int], batch_size: int, seed: int, bucket_batches: int = 50) -> list[list[int]]:
    """Shuffle, sort each window of `bucket_batches` batches by length, cut it into batches and
    shuffle the batches: every batch holds sequences of similar length (little padding) while the
    order of batches stays random."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lengths.__getitem__)
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@torch.no_grad()
def predict_logits(model, features: list[dict], batch_size: int = 64, bf16: bool = False,
                   pad_token_id: int = 0, progress: str | None = None,
                   hidden_channels: torch.Tensor | None = None) -> list:
    """The model's logits for each feature (float32 numpy, cut to the feature's own length for
    per-token outputs), in the order of `features`. Features run sorted by length; `progress`
    names a progress bar for long passes. With `hidden_channels` (indices), each output is a pair:
    the logits and those channels of the last hidden state, (length, channels) float16."""
    device = model.device
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    out: list = [None] * len(features)
    with model.evaluating():
        for start in progress_bar(range(0, len(order), batch_size), desc=progress, unit="batch", disable=progress is None):
            index = order[start:start + batch_size]
            batch = collate([features[i] for i in index], pad_token_id)
            with autocast(device, bf16):
                output = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                               batch["token_type_ids"].to(device), output_hidden_states=hidden_channels is not None)
            logits = output.logits.float().cpu().numpy()
            if hidden_channels is not None:
                hidden = output.hidden_states[-1][..., hidden_channels.to(device)].to(torch.float16).cpu().numpy()
            for row, i in enumerate(index):
                n = len(features[i]["input_ids"])
                out[i] = logits[row, :n] if logits.ndim == 3 else logits[row]
                if hidden_channels is not None:
                    out[i] = (out[i], hidden[row, :n])
    return out

"""A checkpoint folder's weight file read as a dict of tensors (Hugging Face names), or as the names alone,
with every way the file can be unreadable told in one line naming it."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from bertforge.errors import CheckpointError
from bertforge.model.tf_checkpoint import find_checkpoint, read_tf_checkpoint


@contextmanager
def _reading_safetensors(path: Path):
    """safetensors raises its own error for a cut-off file, OSError for a folder of that name."""
    try:
        yield
    except (SafetensorError, OSError) as e:
        reason = "is a directory, not a file" if path.is_dir() else f"cannot read safetensors weights ({e})"
        raise CheckpointError(f"{path}: {reason}") from None


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    safetensors_file = directory / "model.safetensors"
    bin_file = directory / "pytorch_model.bin"
    if safetensors_file.exists():
        with _reading_safetensors(safetensors_file):
            return load_file(str(safetensors_file))
    if bin_file.exists():
        try:
            # weights_only: a checkpoint from the internet must not run code when loaded.
            return torch.load(bin_file, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a corrupt pickle
            raise CheckpointError(f"{bin_file}: cannot read PyTorch weights ({e})") from None
    prefix = find_checkpoint(directory)
    if prefix is not None:
        return read_tf_checkpoint(prefix)
    raise CheckpointError(f"{directory}: no model.safetensors, pytorch_model.bin or TensorFlow checkpoint (.index)")


def weight_names(directory: Path) -> list[str]:
    """The names of the checkpoint's weights; model.safetensors is not read beyond its header."""
    safetensors_file = directory / "model.safetensors"
    if safetensors_file.exists():
        with _reading_safetensors(safetensors_file), safe_open(str(safetensors_file), framework="pt") as f:
            return list(f.keys())
    return list(read_weights(directory))

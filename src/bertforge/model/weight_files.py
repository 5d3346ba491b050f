"""A checkpoint folder's weight file read as a dict of tensors (Hugging Face names), or as the names alone,
with every way the file can be unreadable told in one line naming it."""

from __future__ import annotations

import pickle
import re
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
        return _read_bin(bin_file)
    prefix = find_checkpoint(directory)
    if prefix is not None:
        return read_tf_checkpoint(prefix)
    raise CheckpointError(f"{directory}: no model.safetensors, pytorch_model.bin or TensorFlow checkpoint (.index)")


def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    """pytorch_model.bin, which must hold a state dict. torch's own errors run to many lines, and those of
    weights_only advise turning it off, which is not for a file from the internet."""
    def not_a_state_dict(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a state dict of tensors ({what}); save model.state_dict()")

    try:
        # weights_only: a checkpoint from the internet must not run code when loaded.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # what weights_only refuses: anything but tensors and plain containers
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise not_a_state_dict(f"it holds a pickled {found[1]}, not unpickled as that could run code") from None
        raise CheckpointError(f"{path}: not a PyTorch weights file (not a pickle of tensors)") from None
    except Exception as e:  # a cut-off archive, a folder of that name: torch raises many types
        reason = "is a directory, not a file" if path.is_dir() else \
            f"not a PyTorch weights file ({str(e).splitlines()[0].split('. ')[0]})"
        raise CheckpointError(f"{path}: {reason}") from None
    if not isinstance(state, dict):
        raise not_a_state_dict(f"it holds an object of type {type(state).__name__}")
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise not_a_state_dict(f"{name!r} holds an object of type {type(value).__name__}")
    return state


def weight_names(directory: Path) -> list[str]:
    """The names of the checkpoint's weights; model.safetensors is not read beyond its header."""
    safetensors_file = directory / "model.safetensors"
    if safetensors_file.exists():
        with _reading_safetensors(safetensors_file), safe_open(str(safetensors_file), framework="pt") as f:
            return list(f.keys())
    return list(read_weights(directory))

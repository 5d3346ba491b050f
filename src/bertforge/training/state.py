"""Checkpoints that load with nothing that executes, written so that a crash never leaves a torn one.

A checkpoint is a directory of files: the model's and the optimiser's tensors (and the weights' moving
average, where the run keeps one) in safetensors files named after the step, and `checkpoint.json`
(step, data position, RNG states, the run's settings, which tensor files belong to it), written last.
Each file is written atomically (bertforge.io.atomic: a temporary file in the same directory, fsync,
rename), so `checkpoint.json` only ever names complete files; the files of the previous checkpoint
are deleted once the new manifest is in place.
Nothing is unpickled: safetensors and JSON are data, a pickle is a program.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from bertforge.errors import BertforgeError, CheckpointError, is_number, is_whole_number
from bertforge.io.atomic import atomic_path, write_json
from bertforge.io.settings_files import read_json_object

CHECKPOINT_DIR, MANIFEST = "checkpoint", "checkpoint.json"
FORMAT = "bertforge-checkpoint/1"


# --- random number generators, as JSON ------------------------------------------------------------

def rng_state(device: torch.device) -> dict:
    """Python's, numpy's and torch's generator states as plain lists and numbers."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state().tolist()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).tolist()
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8), device)


# --- optimiser state: tensors to safetensors, the rest to JSON -------------------------------------

def _split_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *rest["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


# --- checkpoints ------------------------------------------------------------------------------------

def save_checkpoint(directory: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict, averaged: torch.nn.Module | None = None) -> None:
    """Write the checkpoint of `step` into `directory`; `state` is anything JSON (step position,
    RNG states, settings, logs' positions); `averaged`: the weights' moving average, if the run keeps one."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_file, optimizer_file = f"model-{step:09d}.safetensors", f"optimizer-{step:09d}.safetensors"
    averaged_file = f"averaged-{step:09d}.safetensors"
    names = (model_file, optimizer_file, *([averaged_file] if averaged is not None else []))
    tensors, rest = _split_optimizer(optimizer)
    manifest = directory / MANIFEST
    previous = json.loads(manifest.read_text(encoding="utf-8"))["step"] if manifest.is_file() else None
    try:
        with atomic_path(directory / model_file) as temporary:
            save_model(model, str(temporary))
        with atomic_path(directory / optimizer_file) as temporary:
            save_file(tensors, str(temporary))
        if averaged is not None:
            with atomic_path(directory / averaged_file) as temporary:
                save_model(averaged, str(temporary))
        write_json(manifest, {"format": FORMAT, **state, "step": step, "model_file": model_file,
                              "optimizer_file": optimizer_file, "optimizer": rest,
                              **({"averaged_file": averaged_file} if averaged is not None else {})}, indent=2)
    except BertforgeError as e:
        if previous != step:  # this step's files are named by no manifest: remove them
            for name in names:
                (directory / name).unlink(missing_ok=True)
        kept = f"the previous checkpoint (step {previous}) in {directory} is intact" if previous is not None \
            else "no earlier checkpoint exists"
        raise CheckpointError(f"{e}; {kept}") from None
    for stale in directory.glob("*.safetensors"):
        if stale.name not in names:
            stale.unlink(missing_ok=True)


def checkpoint_directory(location: str | Path) -> Path:
    """A run directory holds its checkpoint in `checkpoint/`; the checkpoint directory itself works too."""
    location = Path(location)
    return location if (location / MANIFEST).is_file() else location / CHECKPOINT_DIR


def has_checkpoint(location: str | Path) -> bool:
    return (checkpoint_directory(location) / MANIFEST).is_file()


def _generator_states(value) -> bool:
    return isinstance(value, list) and all(isinstance(state, dict) and {"python", "numpy", "torch"} <= state.keys()
                                           for state in value)


# What the training loop keeps in a manifest beside its tensor files (engine.run), as (test, what it must be): a
# hand-edited manifest is refused when it is opened, naming the key, not by a TypeError or KeyError mid-run.
RUN_STATE = {
    "step": (is_whole_number, "a whole number"),
    "run": (lambda value: isinstance(value, dict), "an object"),
    "elapsed_seconds": (is_number, "a number"),
    "cumulative": (lambda value: isinstance(value, list) and all(map(is_number, value)), "a list of numbers"),
    "rng": (_generator_states, "a list of each process's random generator states"),
    "evaluator": (lambda value: value is None or isinstance(value, dict), "an object or null"),
    # the optimiser's settings and scalars (its tensors are in optimizer_file, once blamed when these were amiss)
    "optimizer": (lambda value: isinstance(value, dict) and {"param_groups", "scalars"} <= value.keys(),
                  "an object with the optimiser's 'param_groups' and 'scalars'"),
}


class Checkpoint:
    """A checkpoint read back: its JSON manifest, and loaders for the tensors it names. `state` (as RUN_STATE)
    names keys the manifest must hold, each with the test its value must pass."""

    def __init__(self, location: str | Path, option: str = "--resume", state: dict | None = None):
        self.directory = checkpoint_directory(location)
        self.name = f"{option} {location}"
        manifest = self.directory / MANIFEST
        if not manifest.is_file():
            pickled = sorted(p.name for p in Path(location).glob("*.pt")) if Path(location).is_dir() else []
            hint = (f"; {', '.join(pickled)} is a pickle, which is never loaded (unpickling runs code)"
                    if pickled else "")
            raise CheckpointError(f"{self.name}: no checkpoint found (expected {manifest}){hint}")
        self.manifest = read_json_object(manifest, CheckpointError, f"a {FORMAT} manifest")
        if self.manifest.get("format") != FORMAT:
            raise CheckpointError(f"{self.name}: {manifest} is not a {FORMAT} manifest")
        for key, (valid, what) in (state or {}).items():
            if key not in self.manifest:
                raise CheckpointError(f"{self.name}: {manifest}: no {key!r}; the checkpoint cannot be continued")
            if not valid(self.manifest[key]):
                raise CheckpointError(f"{self.name}: {manifest}: {key!r} is {json.dumps(self.manifest[key])[:40]}, "
                                      f"not {what}")

    def __getitem__(self, key: str):
        return self.manifest[key]

    def _file(self, key: str) -> Path:
        name = self.manifest.get(key)
        # Only a plain file name inside the checkpoint directory: a manifest cannot point elsewhere.
        if not isinstance(name, str) or Path(name).name != name or not (self.directory / name).is_file():
            raise CheckpointError(f"{self.name}: {self.directory / MANIFEST}: {key} {name!r} is not a file there")
        return self.directory / name

    def load_model(self, model: torch.nn.Module, key: str = "model_file") -> None:
        path = self._file(key)
        try:
            load_model(model, str(path), strict=True)
        except Exception as e:  # a torn, foreign or mismatched file
            raise CheckpointError(f"{self.name}: {path} does not hold this model's weights ({e})") from None

    def load_averaged(self, averaged: torch.nn.Module) -> None:
        self.load_model(averaged, "averaged_file")

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        path = self._file("optimizer_file")
        try:
            optimizer.load_state_dict(_join_optimizer(load_file(str(path)), self.manifest["optimizer"]))
        except Exception as e:
            raise CheckpointError(f"{self.name}: {path} does not hold this optimiser's state ({e})") from None

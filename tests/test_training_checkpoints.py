"""Training checkpoints: a round trip restores the model, the optimiser and the random generators, a full disk
keeps the previous checkpoint, a pickle is never executed whatever name it is given, and a hand-edited manifest
is named on --resume."""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.errors import CheckpointError
from bertforge.tasks.trainer import TaskObjective
from bertforge.training import Processes, TrainingArguments, build_optimizer, run
from bertforge.training.state import Checkpoint, rng_state, save_checkpoint, set_rng_state

from training_helpers import SST2, _SameBatch, tiny_classifier


pytestmark = pytest.mark.usefixtures("one_thread")


def _trained(steps: int = 3):
    model = tiny_classifier()
    optimizer = build_optimizer(model, 1e-2)
    ids = torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        model(ids, labels=torch.tensor([0, 1, 1, 0])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_checkpoint_round_trip_restores_model_optimizer_and_random_state(tmp_path):
    model, optimizer = _trained()
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    save_checkpoint(tmp_path, 3, model, optimizer, {"rng": [rng_state(torch.device("cpu"))]})
    expected = (random.random(), np.random.rand(), torch.rand(3))

    restored, restored_optimizer = tiny_classifier(seed=1), None
    restored_optimizer = build_optimizer(restored, 1e-2)
    checkpoint = Checkpoint(tmp_path)
    checkpoint.load_model(restored)
    checkpoint.load_optimizer(restored_optimizer)
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name
    for p, q in zip(model.parameters(), restored.parameters()):
        a, b = optimizer.state[p], restored_optimizer.state[q]
        assert all(torch.equal(a[key], b[key]) for key in ("exp_avg", "exp_avg_sq", "step"))
    set_rng_state(checkpoint["rng"][0], torch.device("cpu"))
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(3), expected[2])
    # only JSON and safetensors files; the manifest names them
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".safetensors", ".safetensors"]


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = _trained(1)
    save_checkpoint(tmp_path, 1, model, optimizer, {})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CheckpointError, match=r"No space left on device\); the previous checkpoint \(step 1\) .* intact"):
        save_checkpoint(tmp_path, 2, model, optimizer, {})
    monkeypatch.undo()
    # the manifest still names step 1's complete files; no temporary file is left behind
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {name: after[name] for name in before} == before
    assert not [name for name in after if name.startswith(".")]
    assert Checkpoint(tmp_path)["step"] == 1
    Checkpoint(tmp_path).load_model(tiny_classifier())


class _Exploit:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_checkpoint_given_to_resume_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(pickle.dumps({"model": _Exploit(marker)}))
    result = CliRunner().invoke(cli, ["finetune", "--task", "classification", "--train", str(SST2),
                                      "--output", str(tmp_path / "out"), "--resume", str(run)])
    assert result.exit_code != 0 and not marker.exists()
    assert "no checkpoint found" in result.output
    assert "checkpoint.pt is a pickle, which is never loaded" in result.output

    # a manifest naming a pickle (torch.save's zip or a bare pickle) as its tensor file: refused as data
    model, optimizer = _trained(1)
    save_checkpoint(run / "checkpoint", 1, model, optimizer, {})
    weights = next((run / "checkpoint").glob("model-*.safetensors"))
    for payload in (pickle.dumps(_Exploit(marker)), None):
        if payload is None:
            torch.save({"w": _Exploit(marker)}, weights)
        else:
            weights.write_bytes(payload)
        with pytest.raises(CheckpointError, match="does not hold this model's weights"):
            Checkpoint(run).load_model(tiny_classifier())
        assert not marker.exists()
    manifest = run / "checkpoint" / "checkpoint.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "model_file": "../../elsewhere.bin"}))
    with pytest.raises(CheckpointError, match="model_file '../../elsewhere.bin' is not a file there"):
        Checkpoint(run).load_model(tiny_classifier())


def test_a_hand_edited_checkpoint_manifest_is_named_on_resume(tmp_path):
    """A checkpoint.json with `"step": "x"` raised a TypeError on --resume, one without "rng" a KeyError; a step past
    --max-steps ended the run at once, without a word."""
    args = TrainingArguments(output_dir=str(tmp_path / "run"), learning_rate=1e-2, checkpoint_every=1, progress=False,
                             max_steps=2)
    run(args, Processes.start("cpu"), tiny_classifier, _SameBatch(tiny_classifier()), TaskObjective(), 2, {})
    manifest = tmp_path / "run" / "checkpoint" / "checkpoint.json"
    saved = json.loads(manifest.read_text())
    for edited, message in (({**saved, "step": "x"}, "'step' is \"x\", not a whole number"),
                            ({k: v for k, v in saved.items() if k != "rng"}, "no 'rng'; the checkpoint cannot be "
                                                                               "continued"),
                            ({**saved, "step": 7}, "'step' is 7, past the 2 steps the run takes (--max-steps 2)")):
        manifest.write_text(json.dumps(edited))
        with pytest.raises(CheckpointError) as error:
            run(args, Processes.start("cpu"), tiny_classifier, _SameBatch(tiny_classifier()), TaskObjective(), 2, {},
                resume_from=tmp_path / "run")
        assert str(error.value) == f"--resume {tmp_path / 'run'}: {manifest}: {message}"

"""A run's output directory: another run's is continued or replaced only when asked, a folder of other files is
neither, a run that fails before training (no learning rate, no model) creates nothing and overwrites nothing,
and one that cannot be made is named."""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.errors import ConfigError, InputError
from bertforge.tasks.trainer import TaskObjective
from bertforge.training import Processes, TrainingArguments, run
from bertforge.training.engine import check_run_directory

from conftest import fixture_data
from training_helpers import _SameBatch, tiny_classifier


pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_run_without_a_learning_rate_is_refused_before_its_output_exists(tmp_path):
    # Only fine-tuning resolves a missing rate (from the model's width); the engine itself needs one.
    args = TrainingArguments(output_dir=str(tmp_path / "run"), learning_rate=None)
    with pytest.raises(ConfigError, match="learning_rate is None: give a learning rate"):
        run(args, Processes.start("cpu"), build_model=None, batches=None, objective=None, total_steps=1,
            fingerprint={})
    assert not (tmp_path / "run").exists()


def test_output_dir_of_another_run_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_log.csv").write_text("step,loss\n")
    with pytest.raises(ConfigError, match="run holds a training run: give --resume .* or --overwrite"):
        check_run_directory(tmp_path / "run", None, overwrite=False)
    assert check_run_directory(tmp_path / "run", None, overwrite=True)


def test_a_folder_that_is_not_a_run_is_not_offered_resume_or_overwrite(tmp_path):
    """A folder of other files was told to give --resume (then: no checkpoint found) or --overwrite (then:
    not deleted)."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    message = (f"{tmp_path / 'notes'} is not empty and holds no training run (no train_log.csv, no checkpoint/), so "
               "it is neither continued nor deleted: give a new or empty directory")
    for overwrite in (False, True):
        with pytest.raises(ConfigError) as error:
            check_run_directory(tmp_path / "notes", None, overwrite=overwrite)
        assert str(error.value) == message
    result = CliRunner().invoke(cli, ["finetune", "--task", "classification", "--train",
                                      str(fixture_data("sst2", "train.tsv")), "--output", str(tmp_path / "notes")])
    assert result.exit_code == 2 and result.output == f"error: {message}\n", result.output
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_a_run_that_fails_before_training_creates_nothing_and_overwrites_nothing(tmp_path):
    """The model is built before the output directory is made (or an earlier run's deleted)."""
    def no_model():
        raise ConfigError("no such model size")

    args = TrainingArguments(output_dir=str(tmp_path / "new" / "run"), learning_rate=1e-2, progress=False)
    with pytest.raises(ConfigError, match="no such model size"):
        run(args, Processes.start("cpu"), no_model, None, TaskObjective(), 5, {})
    assert not (tmp_path / "new").exists()
    earlier = TrainingArguments(output_dir=str(tmp_path / "earlier"), learning_rate=1e-2, progress=False)
    run(earlier, Processes.start("cpu"), tiny_classifier, _SameBatch(tiny_classifier()), TaskObjective(), 1, {})
    logs = sorted(path.name for path in (tmp_path / "earlier").iterdir())
    with pytest.raises(ConfigError, match="no such model size"):
        run(replace(earlier, overwrite=True), Processes.start("cpu"), no_model, None, TaskObjective(), 5, {})
    assert sorted(path.name for path in (tmp_path / "earlier").iterdir()) == logs and logs


def test_a_run_whose_output_directory_cannot_be_made_says_so(unwritable):
    """Called from Python, with no command's check before it: the engine's mkdir raised a PermissionError."""
    args = TrainingArguments(output_dir=str(unwritable / "run"), learning_rate=1e-2, progress=False)
    with pytest.raises(InputError, match=rf"^{unwritable / 'run'}: cannot write \("):
        run(args, Processes.start("cpu"), tiny_classifier, _SameBatch(tiny_classifier()), TaskObjective(), 1, {})

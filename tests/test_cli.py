"""The `bertforge` command: every registered command loads, errors are one clean line, and the
demo (the README's first command) runs end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from bertforge.cli.main import COMMANDS, cli


def test_every_command_has_help():
    runner = CliRunner()
    listing = runner.invoke(cli, ["--help"])
    assert listing.exit_code == 0, listing.output
    for name in COMMANDS:
        assert name in listing.output
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "bertforge", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "0.1.0" in result.stdout, result.stderr


def test_user_error_is_one_line_without_traceback(tmp_path):
    result = CliRunner().invoke(cli, ["tokenize", "--model", str(tmp_path / "nowhere"), "hello"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "nowhere" in result.output


@pytest.mark.parametrize("command", [
    ["pretrain", "prepare", "{missing}", "{out}"],
    ["pretrain", "prepare", "{corpus}", "{out}", "--vocab", "{missing}"],
    ["pretrain", "train", "{missing}", "{out}"],
    ["finetune", "--task", "classification", "--train", "{missing}", "--output", "{out}"],
    ["finetune", "--task", "classification", "--train", "{corpus}", "--validation", "{missing}", "--output", "{out}"],
    ["distill", "--task", "classification", "--teacher", "{missing}", "--train", "{corpus}", "--output", "{out}"],
], ids=["prepare-corpus", "prepare-vocab", "train-data", "finetune-train", "finetune-validation", "distill-teacher"])
def test_a_missing_input_of_a_long_command_is_named(tmp_path, command):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A sentence.\tx\n")
    missing = tmp_path / "mistyped"
    result = CliRunner().invoke(cli, [a.format(missing=missing, out=tmp_path / "out", corpus=corpus) for a in command])
    assert result.exit_code == 2 and f"error: {missing}: no such file or directory" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_demo_tells_the_story_end_to_end():
    """The README's first command: every step runs on the bundled models and data, and the bundled
    QA model finds the answer in the demo's context."""
    result = CliRunner().invoke(cli, ["demo", "--finetune-steps", "4"])
    assert result.exit_code == 0, result.output
    for step in ("1. WordPiece tokenization", "2. Contextual embeddings", "3. Fill-mask and next-sentence",
                 "4. A quick fine-tune", "5. Checkpoints bertforge reads", "6. Question answering", "7. Named entities"):
        assert step in result.output
    assert "the fine-tuned folder without vocab.txt gives the same answers" in result.output
    assert "let us start pre ##train ##ing the model ." in result.output
    assert "validation accuracy" in result.output
    answers = [line for line in result.output.splitlines() if "Who introduced BERT?" in line]
    assert len(answers) == 1 and "'Jacob Devlin'" in answers[0], answers
    assert "Angela Merkel (PER" in result.output and "Berlin (LOC" in result.output, result.output


def test_tokenize_does_not_import_torch(tmp_path):
    """Tokenizing needs no tensors: the command must start without torch (~1 s) or NumPy."""
    (tmp_path / "in.txt").write_text("Let us start pretraining the model.\n", encoding="utf-8")
    code = ("import sys\n"
            "from bertforge.cli.main import cli\n"
            "try:\n"
            f"    cli(['tokenize', '--input', {str(tmp_path / 'in.txt')!r}, '--output', {str(tmp_path / 'o.jsonl')!r}])\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
    assert (tmp_path / "o.jsonl").read_text(encoding="utf-8").count("\n") == 1

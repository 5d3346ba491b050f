"""Run cards: fingerprints computed independently, the card's round trip, and rerun's command line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.errors import InputError
from bertforge.runcard import CARD_FILE, SUMMARY_FILE, RunCard, file_fingerprint, read_card, rerun_command


def test_fingerprint_of_a_file_and_a_folder(tmp_path):
    data = bytes(range(256)) * 5000  # more than one read block
    (tmp_path / "a.bin").write_bytes(data)
    assert file_fingerprint(tmp_path / "a.bin") == {
        "path": str(tmp_path / "a.bin"), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "x.txt").write_text("x")
    (folder / "sub" / "y.txt").write_text("yy")
    first = file_fingerprint(folder)
    assert first["bytes"] == 3
    (folder / "sub" / "y.txt").write_text("yz")  # same size, other content
    assert file_fingerprint(folder)["sha256"] != first["sha256"]


def test_card_records_the_run_and_reads_back(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["bertforge", "finetune", "--train", "t.tsv", "--output", "out"])
    (tmp_path / "t.tsv").write_text("sentence\tlabel\nok\t1\n")
    card = RunCard.start({"epochs": 1.0, "train": tmp_path / "t.tsv"}, [tmp_path / "t.tsv", None], "out", seed=7)
    written = card.finish(tmp_path, {"accuracy": 0.5}, threads=2, device="cpu")
    saved = json.loads(written.read_text())
    assert saved["command"] == ["finetune", "--train", "t.tsv", "--output", "out"]
    assert saved["options"] == {"epochs": 1.0, "train": str(tmp_path / "t.tsv")}
    assert saved["seed"] == 7 and saved["figures"] == {"accuracy": 0.5} and saved["threads"] == 2
    assert saved["inputs"][0]["sha256"] == hashlib.sha256(b"sentence\tlabel\nok\t1\n").hexdigest()
    assert saved["versions"]["torch"] and saved["wall_seconds"] >= 0
    assert "bertforge finetune --train t.tsv --output out" in (tmp_path / SUMMARY_FILE).read_text()
    assert read_card(tmp_path) == saved == read_card(tmp_path / CARD_FILE)
    assert rerun_command(saved, "again") == ["finetune", "--train", "t.tsv", "--output", "again"]


def test_rerun_keeps_the_batch_and_decay_a_card_recorded():
    """finetune's defaults changed (batch 32 → 16, decay 1 → 0.8 for classification): a card written before
    reruns with the values its run took, unless its command typed them; other commands are left alone."""
    old = {"command": ["finetune", "--task", "classification", "--output", "out"], "output": "out",
           "options": {"batch_size": 32, "layer_lr_decay": 1.0}}
    assert rerun_command(old) == ["finetune", "--task", "classification", "--output", "out",
                                  "--batch-size", "32", "--layer-lr-decay", "1.0"]
    typed = {**old, "command": ["distill", "--batch-size=8", "--output", "out"], "options": {"batch_size": 8,
                                                                                          "layer_lr_decay": 1.0}}
    assert rerun_command(typed, "again") == ["distill", "--batch-size=8", "--output", "again", "--layer-lr-decay", "1.0"]
    assert rerun_command({**old, "command": ["pretrain", "train", "--output", "out"]}) == \
        ["pretrain", "train", "--output", "out"]


def test_rerun_keeps_the_classifier_pooling_a_card_recorded_or_cls_from_before_the_option():
    """A classifier fine-tuned from all-MiniLM-L6-v2 reads the mean since 2026-12-06; an older card's run read [CLS]."""
    command = ["finetune", "--task", "classification", "--output", "out"]
    before = {"command": command, "output": "out", "options": {"task": "classification", "batch_size": 16}}
    assert rerun_command(before)[-4:] == ["--batch-size", "16", "--classifier-pooling", "cls"]
    after = {**before, "options": {**before["options"], "classifier_pooling": "mean"}}
    assert rerun_command(after)[-2:] == ["--classifier-pooling", "mean"]
    ner = {"command": ["finetune", "--task", "ner", "--output", "out"], "output": "out",
           "options": {"task": "ner", "classifier_pooling": None}}
    assert rerun_command(ner) == ["finetune", "--task", "ner", "--output", "out"]  # not a sentence classifier
    assert rerun_command({**ner, "options": {"task": "ner"}}) == ner["command"]


def test_bad_cards_are_named(tmp_path):
    with pytest.raises(InputError, match="missing.json: no such file"):
        read_card(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"command": [\n')
    with pytest.raises(InputError, match=r"bad.json: not valid JSON \(Expecting .*line 2"):
        read_card(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"accuracy": 1}')
    with pytest.raises(InputError, match="not a run card"):
        read_card(tmp_path / "other.json")
    (tmp_path / "inputs.json").write_text('{"command": ["embed"], "output": "out", "inputs": [{"path": "x"}]}')
    with pytest.raises(InputError, match="not a run card \\('inputs' is not a list of files with their 'path' and"):
        read_card(tmp_path / "inputs.json")
    with pytest.raises(InputError, match="not in its command line"):
        rerun_command({"command": ["finetune", "--task", "ner"], "output": "out"}, "again")


@pytest.mark.parametrize("change, message", [
    ({"output": 5}, "the run card's 'output' is 5, not a folder name"),
    ({"cwd": ["here"]}, "the run card's 'cwd' is [\"here\"], not a folder name"),
    ({"options": []}, "the run card's 'options' is [], not an object of options"),
])
def test_a_hand_edited_card_value_of_the_wrong_type_is_named(tmp_path, monkeypatch, change, message):
    """`"output": 5` in a card raised a TypeError from `bertforge rerun` (with --output, or a 'cwd' of a list)."""
    monkeypatch.chdir(tmp_path)  # where a rerun would write
    card = tmp_path / CARD_FILE
    card.write_text(json.dumps({"command": ["tokenize", "hello", "--output", "out.json"], "output": "out.json",
                                "inputs": [], **change}))
    for extra in ([], ["--output", str(tmp_path / "again.json")]):
        result = CliRunner().invoke(cli, ["rerun", str(card), *extra])
        assert result.exit_code == 2 and result.output == f"error: {card}: {message}\n", result.output


def test_rerun_command_replaces_either_spelling_of_the_output_and_repeats_a_resumed_run_whole():
    assert rerun_command({"command": ["finetune", "--output=out"], "output": "out"}, "again") == \
        ["finetune", "--output=again"]
    resumed = {"command": ["finetune", "--output", "run", "--resume", "run"], "output": "run"}
    assert rerun_command(resumed, "again") == ["finetune", "--output", "again"]
    assert rerun_command({**resumed, "command": ["pretrain", "train", "d", "run", "--resume=run"]}, "again") == \
        ["pretrain", "train", "d", "again"]


def test_rerun_finds_relative_inputs_from_where_the_run_started(tmp_path, monkeypatch):
    """A card records the command as typed: its relative paths start where it ran, not where rerun is run."""
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "train.txt").write_text("hello\n")
    monkeypatch.chdir(tmp_path / "work")
    card = RunCard.start({}, ["train.txt"], "out")
    card.command = ["tokenize", "--input", "train.txt", "--output", "out.jsonl"]
    card.output = "out.jsonl"
    card.finish(tmp_path / "work")
    assert "Rerun: `bertforge rerun out.jsonl --output NEW_FOLDER`" in (tmp_path / "work" / SUMMARY_FILE).read_text()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["rerun", "work", "--output", "again.jsonl"])
    assert result.exit_code == 0, result.output
    assert '"text": "hello"' in (tmp_path / "again.jsonl").read_text() and Path.cwd() == tmp_path


def _rerun(card: dict, folder, *options):
    (folder / CARD_FILE).write_text(json.dumps(card))
    return CliRunner().invoke(cli, ["rerun", str(folder / CARD_FILE), *map(str, options)])


def test_rerun_refuses_inputs_that_changed_or_are_gone(tmp_path):
    data = tmp_path / "train.txt"
    data.write_text("hello\n")
    card = {"command": ["-v", "tokenize", "--input", str(data)], "output": "out",
            "inputs": [file_fingerprint(data)]}
    result = _rerun(card, tmp_path)
    assert result.exit_code == 0 and '"hello"' in result.output, result.output  # unchanged: it runs
    data.write_text("hullo\n")
    result = _rerun(card, tmp_path, "--output", tmp_path / "again")
    assert result.exit_code == 2 and f"error: {data}: this input of the run has changed since the run (its SHA-256 " \
        "is not the card's), so a rerun would not reproduce the run" in result.output
    data.unlink()
    result = _rerun(card, tmp_path)
    assert result.exit_code == 2 and f"error: {data}: this input of the run is gone, so a rerun" in result.output


@pytest.mark.parametrize("command, problem", [
    (["nosuchcmd", "--output", "out"], "'nosuchcmd --output out' is not a bertforge command; rerun cannot run it"),
    (["rerun", "a/run_card.json", "--output", "out"],
     "'rerun a/run_card.json --output out' is itself a rerun; rerun the card of the run it repeats"),
])
def test_rerun_refuses_a_command_it_cannot_run(tmp_path, command, problem):
    result = _rerun({"command": command, "output": "out", "inputs": []}, tmp_path, "--output", tmp_path / "again")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: {tmp_path / CARD_FILE}: the run card's command {problem}" in result.output


@pytest.mark.parametrize("extra, problem", [
    (["--no-such-option"], "No such option '--no-such-option'."),
    (["--max-length", "0"], "Invalid value for '--max-length': 0 is not in the range x>=3."),
])
def test_a_card_command_its_command_refuses_names_the_card(tmp_path, extra, problem):
    """An option this version lacks, or a hand-edited value: click's `Error: No such option` named no card."""
    command = ["tokenize", "hello", "--output", "out.json", *extra]
    result = _rerun({"command": command, "output": "out.json", "inputs": []}, tmp_path, "--output", tmp_path / "a.json")
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == \
        f"error: {tmp_path / CARD_FILE}: the run card's command does not run here: {problem}"


def test_benchmark_results_are_recorded_with_a_card(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "fake_bench.py"
    script.write_text('import json\nprint("warming up")\nprint(json.dumps({"ratio": 1.5, "peer": "x"}))\n')
    record = Path(__file__).resolve().parents[1] / "bench" / "record.py"
    output = tmp_path / "results"
    subprocess.run([sys.executable, str(record), "--output", str(output), "--", str(script)], check=True,
                   capture_output=True, text=True)
    assert json.loads((output / "results.json").read_text()) == [{"ratio": 1.5, "peer": "x"}]
    assert (output / "output.txt").read_text() == 'warming up\n{"ratio": 1.5, "peer": "x"}\n'
    card = read_card(output)
    assert card["command"] == ["python", str(script)] and card["figures"]["records"] == 1
    assert card["inputs"][0]["sha256"] == hashlib.sha256(script.read_bytes()).hexdigest()
    failing = tmp_path / "failing.py"
    failing.write_text("raise SystemExit(3)\n")
    done = subprocess.run([sys.executable, str(record), "--output", str(tmp_path / "none"), "--", str(failing)],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "exited with 3" in done.stderr and not (tmp_path / "none").exists()

"""Issue 13: no command loses data or answers a user mistake with a traceback. Each mistake ends
with exit code != 0 and one line naming the file, line, entry or option at fault, and a failed
command leaves earlier outputs exactly as they were and no new (empty) output behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bertforge.cli.main import cli

LATIN1_LINE = "café au lait\n".encode("latin-1")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, *fragments) -> str:
    """The command failed with a single error line that holds every fragment."""
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    # A progress bar may come first (stderr is the terminal's); the error is the one last line.
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output and lines[-1].startswith("error: "), result.output
    assert sum("error" in line.lower() for line in lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def hidden_files(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith("."))


# --- data loss ------------------------------------------------------------------------------------

def test_tokenize_failure_keeps_the_previous_output(tmp_path):
    output = tmp_path / "s.jsonl"
    assert run("tokenize", "a good text", "--output", output).exit_code == 0
    before = output.read_bytes()
    assert json.loads(before)["text"] == "a good text"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n" + LATIN1_LINE)
    one_line_error(run("tokenize", "--input", bad, "--output", output), f"{bad}:2: not UTF-8 text")
    assert output.read_bytes() == before and hidden_files(tmp_path) == []


def test_invalid_utf8_argument_is_refused_not_written(tmp_path):
    """The shell hands bytes that are not UTF-8 to Python as lone surrogates: refuse them at once
    (they used to fail while encoding the output, or went out as invalid UTF-8)."""
    output = tmp_path / "s.jsonl"
    output.write_text("previous\n")
    for extra in ([], ["--output", str(output)]):
        done = subprocess.run([sys.executable, "-m", "bertforge", "tokenize", "ok", b"caf\xe9", *extra],
                              capture_output=True)
        assert done.returncode != 0 and done.stdout == b"", done
        lines = done.stderr.decode().strip().splitlines()
        assert lines == ["error: TEXT argument 2 is not valid UTF-8 text (byte 0xe9 at character 4); "
                         "check the terminal's encoding"], done.stderr
    assert output.read_text() == "previous\n"


def test_train_vocab_failure_leaves_no_output_directory(tmp_path):
    bad = tmp_path / "corpus.txt"
    bad.write_bytes(b"some words here\n" + LATIN1_LINE)
    one_line_error(run("train-vocab", "--input", bad, "--output", tmp_path / "vocab", "--no-progress"),
                   f"{bad}:2: not UTF-8 text")
    assert not (tmp_path / "vocab").exists()


def test_train_vocab_rejects_a_huge_vocab_size_before_reading():
    result = run("train-vocab", "--vocab-size", 10**12, "--input", "never-read.txt", "--output", "never-written")
    assert result.exit_code == 2 and "--vocab-size" in result.output and "10000000" in result.output
    assert not os.path.exists("never-written")


def test_prepare_with_a_bad_corpus_keeps_the_prepared_data(tmp_path):
    corpus = small_corpus(tmp_path / "corpus.txt")
    data = tmp_path / "data"
    options = ["--max-seq-length", 32, "--dupe-factor", 1]
    first = run("pretrain", "prepare", corpus, data, *options)
    assert first.exit_code == 0, first.output
    before = {name: (data / name).read_bytes() for name in os.listdir(data)}
    assert "index.json" in before
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"A sentence.\n" + LATIN1_LINE)
    one_line_error(run("pretrain", "prepare", bad, data, *options), f"{bad}:2: not UTF-8 text")
    assert {name: (data / name).read_bytes() for name in os.listdir(data)} == before
    assert hidden_files(tmp_path) == []
    one_line_error(run("pretrain", "prepare", bad, tmp_path / "fresh" / "data", *options), f"{bad}:2")
    assert not (tmp_path / "fresh").exists()


def small_corpus(path):
    path.write_text("\n\n".join("\n".join(f"Sentence {d} {s} is about the topic number {d}." for s in range(6))
                                for d in range(8)) + "\n", encoding="utf-8")
    return path


def test_prepare_again_refuses_a_data_directory_holding_files_it_did_not_write(tmp_path):
    """The data directory is replaced whole: a file the user put there (notes, the held-out corpus) was deleted
    with the old shards, without a word, because the directory held an index.json."""
    corpus, data = small_corpus(tmp_path / "corpus.txt"), tmp_path / "data"
    options = ["--max-seq-length", 32, "--dupe-factor", 1]
    assert run("pretrain", "prepare", corpus, data, *options).exit_code == 0
    assert run("pretrain", "prepare", corpus, data, *options, "--masking", "static").exit_code == 0  # its own files
    (data / "NOTES.md").write_text("how the corpus was cleaned\n")
    before = {name: (data / name).read_bytes() for name in os.listdir(data)}
    one_line_error(run("pretrain", "prepare", corpus, data, *options),
                   f"{data}: holds NOTES.md, which this command does not write; replacing the directory would delete it")
    assert {name: (data / name).read_bytes() for name in os.listdir(data)} == before


def test_train_vocab_refuses_a_folder_whose_files_it_would_break(tmp_path):
    """It writes into --output beside what is there: into a prepared data set it replaced the vocab.txt its
    shards' ids are of (training then failed on the first batch: `input_ids holds 28026, outside the model's
    0..25`), and a WordPiece vocabulary beside a BPE one left a folder neither tokenizer reads."""
    corpus = small_corpus(tmp_path / "corpus.txt")
    data, bpe = tmp_path / "data", tmp_path / "bpe"
    assert run("pretrain", "prepare", corpus, data, "--max-seq-length", 32, "--dupe-factor", 1).exit_code == 0
    assert run("train-vocab", "--algorithm", "bpe", "--input", corpus, "--output", bpe, "--no-progress").exit_code == 0
    before = {path: path.read_bytes() for path in [*data.iterdir(), *bpe.iterdir()]}
    for output, algorithm, message in (
            (data, "wordpiece", f"--output {data}: holds a prepared data set (index.json)"),
            (bpe, "wordpiece", f"--output {bpe}: holds a BPE vocabulary (vocab.json)"),
            (tmp_path, "byte-bpe", None)):
        if message is None:  # a WordPiece vocabulary written, then a byte-level one asked for in the same folder
            assert run("train-vocab", "--input", corpus, "--output", output, "--no-progress").exit_code == 0
            message = f"--output {output}: holds a WordPiece vocabulary (vocab.txt)"
        one_line_error(run("train-vocab", "--algorithm", algorithm, "--input", corpus, "--output", output,
                           "--no-progress"), message, "give a new directory")
    assert {path: path.read_bytes() for path in [*data.iterdir(), *bpe.iterdir()]} == before


def test_a_prepared_data_set_whose_vocabulary_was_replaced_names_its_vocab_txt(tmp_path):
    from bertforge.errors import InputError
    from bertforge.pretraining.shards import PretrainingData

    corpus, data = small_corpus(tmp_path / "corpus.txt"), tmp_path / "data"
    assert run("pretrain", "prepare", corpus, data, "--max-seq-length", 32, "--dupe-factor", 1).exit_code == 0
    assert run("train-vocab", "--input", corpus, "--output", tmp_path / "vocab", "--no-progress").exit_code == 0
    (data / "vocab.txt").write_bytes((tmp_path / "vocab" / "vocab.txt").read_bytes())
    with pytest.raises(InputError, match=f"^{data / 'vocab.txt'}: not the vocabulary {data / 'index.json'} was "
                                         f"prepared with"):
        PretrainingData(data).tokenizer()


# --- messages instead of tracebacks ---------------------------------------------------------------

def test_output_in_a_missing_directory_is_reported_before_the_work(tmp_path):
    missing = tmp_path / "nowhere" / "out.json"
    one_line_error(run("tokenize", "hello", "--output", missing), f"--output {missing}: the directory")
    one_line_error(run("embed", "hello", "--output", missing), f"--output {missing}: the directory")
    # evaluate used to find out only after scoring the whole file; now before even loading the model
    one_line_error(run("evaluate", "--task", "classification", "--model", tmp_path / "no-model",
                       "--validation", tmp_path / "v.tsv", "--output", missing), f"--output {missing}")
    one_line_error(run("probe", "--train", tmp_path / "t.tsv", "--output", missing), f"--output {missing}")


def test_an_unwritable_output_directory_is_refused_before_the_work(tmp_path, unwritable):
    """finetune, distill and pretrain train failed with a PermissionError from the engine's mkdir, train-vocab
    only once the vocabulary was learned."""
    texts = tmp_path / "train.tsv"
    texts.write_text("sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(8)), encoding="utf-8")
    out = unwritable / "bertforge-output"
    for command, option in ((["finetune", "--task", "classification", "--train", texts, "--output", out], "--output"),
                            (["distill", "--task", "classification", "--teacher", tmp_path, "--train", texts,
                              "--output", out], "--output"),
                            (["pretrain", "train", tmp_path, out], "OUTPUT_DIR"),
                            (["train-vocab", "--input", texts, "--output", out, "--no-progress"], "--output")):
        result = run(*command)
        one_line_error(result, f"{option} {out}: cannot write in {unwritable} (")
        assert len(result.output.strip().splitlines()) == 1, result.output  # no training began
    assert not out.exists()


def test_input_that_is_a_directory_says_so(tmp_path):
    one_line_error(run("embed", "--input", tmp_path), f"{tmp_path}: is a directory, not a file")
    one_line_error(run("train-vocab", "--input", tmp_path, "--output", tmp_path / "v"), "is a directory")


def binary_file(path):
    path.write_bytes(np.arange(64, dtype=np.float64).tobytes())
    return path


def test_binary_or_non_utf8_training_files(tmp_path):
    binary = binary_file(tmp_path / "train.tsv")
    one_line_error(run("finetune", "--task", "classification", "--train", binary, "--output", tmp_path / "out"),
                   f"{binary}:", "not UTF-8 text")
    assert not (tmp_path / "out").exists()
    one_line_error(run("probe", "--train", binary), f"{binary}:", "not UTF-8 text")
    conll = tmp_path / "train.conll"
    conll.write_bytes(b"EU B-ORG\n" + "Müller B-PER\n".encode("latin-1"))
    one_line_error(run("finetune", "--task", "ner", "--train", conll, "--output", tmp_path / "out"),
                   f"{conll}:2: not UTF-8 text")


def test_training_on_a_file_without_examples_names_it(tmp_path):
    header_only = tmp_path / "header.tsv"
    header_only.write_text("sentence\tlabel\n", encoding="utf-8")
    one_line_error(run("finetune", "--task", "classification", "--train", header_only, "--output", tmp_path / "out"),
                   f"{header_only}: no training examples in the file")
    empty = tmp_path / "empty.conll"
    empty.write_text("\n\n", encoding="utf-8")
    one_line_error(run("finetune", "--task", "ner", "--train", empty, "--output", tmp_path / "out"),
                   f"{empty}: no training examples in the file")
    assert not (tmp_path / "out").exists()
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n", encoding="utf-8")
    one_line_error(run("train-vocab", "--input", blank, "--output", tmp_path / "vocab"),
                   f"{blank}: the corpus is empty: no words to learn a vocabulary from")
    assert not (tmp_path / "vocab").exists()


def test_probe_with_one_class_or_no_rows(tmp_path):
    one_class = tmp_path / "one.tsv"
    one_class.write_text("sentence\tlabel\n" + "".join(f"text {i}\t1\n" for i in range(20)), encoding="utf-8")
    one_line_error(run("probe", "--train", one_class), f"{one_class}: all 20 training rows have the label '1'")
    empty = tmp_path / "empty.tsv"
    empty.write_text("sentence\tlabel\n", encoding="utf-8")
    one_line_error(run("probe", "--train", empty), f"{empty}: no labelled rows")
    rare = tmp_path / "rare.tsv"
    rare.write_text("sentence\tlabel\n" + "".join(f"text {i}\t{int(i == 0)}\n" for i in range(10)), encoding="utf-8")
    one_line_error(run("probe", "--train", rare), f"{rare}: cannot hold out --test-fraction")
    # with --test, a --test-fraction was ignored without a word
    one_line_error(run("probe", "--train", rare, "--test", rare, "--test-fraction", 0.5),
                   "--test-fraction 0.5 holds out part of --train when there is no --test; give one of them")


def test_squad_shape_errors_through_finetune(tmp_path):
    data = {"data": [{"title": "t", "paragraphs": [{"context": "The Broncos won.", "qas": [
        {"id": "q", "question": "Who won?", "answers": "Broncos"}]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    one_line_error(run("finetune", "--task", "qa", "--train", path, "--output", tmp_path / "out"),
                   f"{path}: data[0].paragraphs[0].qas[0].answers: expected a list, found str")
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"] = [{"text": "Broncos", "answer_start": 4}]
    path.write_text(json.dumps(data), encoding="utf-8")
    for option in ("--rdrop-alpha", "--label-smoothing-factor"):
        one_line_error(run("finetune", "--task", "qa", "--train", path, option, "0.5", "--output", tmp_path / "out"),
                       f"{option} works on class labels; --task qa learns answer spans")
    assert not (tmp_path / "out").exists()


def test_the_training_file_given_as_the_held_out_one_is_refused(tmp_path, monkeypatch):
    """A score on the training data says nothing of new data: finetune, distill and probe took the same file, under
    any spelling, as --train and as --validation (--test) without a word."""
    monkeypatch.chdir(tmp_path)
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(20)), encoding="utf-8")
    (tmp_path / "link.tsv").symlink_to(train)
    (tmp_path / "shards").mkdir()
    why = "scores on the training data say nothing of new data: give held-out data"
    for command in (["finetune", "--task", "classification"],
                    ["distill", "--task", "classification", "--teacher", "teacher"]):
        for spelling in ("./train.tsv", train, "link.tsv"):
            one_line_error(run(*command, "--train", "train.tsv", "--validation", spelling, "--output", "out"),
                           f"error: --validation {spelling}: the same file as --train train.tsv; {why}")
    one_line_error(run("distill", "--task", "mlm", "--teacher", "teacher", "--train", "shards", "--validation",
                       "./shards/", "--output", "out"), "--validation ./shards/: the same file as --train shards")
    one_line_error(run("probe", "--train", train, "--test", "./link.tsv"),
                   f"error: --test ./link.tsv: the same file as --train {train}; {why}")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A tiny sequence classifier saved by bertforge, for `predict`."""
    from bertforge import BertTokenizer
    from bertforge.model import BertConfig, BertForSequenceClassification

    config = BertConfig.from_size("tiny")
    config.id2label = {0: "neg", 1: "pos"}
    directory = tmp_path_factory.mktemp("classifier")
    BertForSequenceClassification(config).save_pretrained(directory, tokenizer=BertTokenizer.from_pretrained())
    return directory


def test_predict_with_a_non_utf8_input_keeps_the_previous_output(tmp_path, classifier_dir):
    texts = tmp_path / "texts.tsv"
    texts.write_text("sentence\nA fine film.\n", encoding="utf-8")
    output = tmp_path / "predictions.jsonl"
    result = run("predict", "--task", "classification", "--model", classifier_dir, "--input", texts,
                 "--output", output)
    assert result.exit_code == 0, result.output
    before = output.read_bytes()
    assert json.loads(before)["text"] == "A fine film."
    texts.write_bytes(b"sentence\n" + LATIN1_LINE)
    one_line_error(run("predict", "--task", "classification", "--model", classifier_dir, "--input", texts,
                       "--output", output), f"{texts}:2: not UTF-8 text")
    assert output.read_bytes() == before and hidden_files(tmp_path) == []


def test_every_command_points_from_a_training_runs_folder_to_its_final_model(tmp_path):
    """One check decides whether a folder holds a model. Before, a run's folder (its model in final/) got five
    messages: convert's and export's, each its own; `tokenizer has no vocab.txt` from fill-mask and embed;
    `no config.json there` from predict, finetune and serve; `run/config.json: no such file` from pretrain evaluate."""
    from bertforge.model import BertConfig, BertForPreTraining

    run_dir = tmp_path / "run"
    BertForPreTraining(BertConfig.from_size("tiny")).save_pretrained(run_dir / "final")
    (run_dir / "train_log.csv").write_text("step,loss\n")
    texts = tmp_path / "texts.tsv"
    texts.write_text("sentence\tlabel\nA fine film.\tpos\n", encoding="utf-8")
    message = f"{run_dir}: a training run's folder, with no model of its own; its final model is " \
              f"{run_dir / 'final'}: use that"
    for command in (("convert", run_dir, tmp_path / "out"), ("pretrain", "export", run_dir, tmp_path / "out"),
                    ("pretrain", "evaluate", run_dir, tmp_path), ("fill-mask", "--model", run_dir, "a [MASK]."),
                    ("embed", "--model", run_dir, "a text"), ("serve", "--model", f"run={run_dir}"),
                    ("predict", "--task", "classification", "--model", run_dir, "--input", texts),
                    ("finetune", "--task", "classification", "--model", run_dir, "--train", texts,
                     "--output", tmp_path / "out")):
        line = one_line_error(run(*command))
        assert line in (f"error: {message}", f"error: --model {message}"), (command, line)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def pretraining_run(tmp_path_factory):
    """The `pretrain train` command of a finished 2-step run (a checkpoint at each step), and its folder."""
    directory = tmp_path_factory.mktemp("pretraining")
    data, output = directory / "data", directory / "run"
    assert run("pretrain", "prepare", small_corpus(directory / "corpus.txt"), data, "--max-seq-length", 32,
               "--dupe-factor", 1).exit_code == 0
    command = ["pretrain", "train", data, output, "--model-size", "tiny", "--max-steps", 2, "--batch-size", 4,
               "--checkpoint-every", 1]
    assert run(*command).exit_code == 0
    return command, output


def copy_of_run(pretraining_run, tmp_path) -> tuple[list, Path]:
    command, output = pretraining_run
    shutil.copytree(output, tmp_path / "run")
    return [tmp_path / "run" if word == output else word for word in command], tmp_path / "run"


def test_resume_and_overwrite_together_are_refused_and_the_run_is_kept(pretraining_run, tmp_path):
    """--resume won and the --overwrite was dropped without a word: which one was meant is the user's to say."""
    command, output = copy_of_run(pretraining_run, tmp_path)
    before = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}
    one_line_error(run(*command, "--resume", output, "--overwrite"),
                   f"--resume {output} continues the run, --overwrite deletes it and starts afresh: give one of them")
    assert {path: path.read_bytes() for path in output.rglob("*") if path.is_file()} == before


def test_a_checkpoint_manifest_without_the_optimizer_settings_is_named(pretraining_run, tmp_path):
    """It blamed the optimiser's tensor file: `optimizer-000000002.safetensors does not hold this optimiser's
    state ('optimizer')`."""
    command, output = copy_of_run(pretraining_run, tmp_path)
    manifest = output / "checkpoint" / "checkpoint.json"
    saved = json.loads(manifest.read_text())
    for edited, problem in (({k: v for k, v in saved.items() if k != "optimizer"}, "no 'optimizer'"),
                            ({**saved, "optimizer": []}, "'optimizer' is [], not an object with the optimiser's")):
        manifest.write_text(json.dumps(edited))
        one_line_error(run(*command, "--resume", output), f"--resume {output}: {manifest}: {problem}")


def test_a_run_stopped_before_its_model_was_saved_says_how_to_continue_it(tmp_path):
    """Its folder holds only checkpoint/: `no config.json (or Google's bert_config.json) there` hid that."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "checkpoint" / "checkpoint.json").write_text("{}")
    message = f"{run_dir}: a training run's folder, stopped before it saved a model (its checkpoint is in " \
              f"{run_dir / 'checkpoint'}): continue it with its command and --resume {run_dir}, or make a model " \
              f"of a pre-training run's checkpoint with `bertforge pretrain export {run_dir} NEW_FOLDER`"
    for command in (("convert", run_dir, tmp_path / "out"), ("pretrain", "evaluate", run_dir, tmp_path),
                    ("finetune", "--task", "classification", "--model", run_dir, "--train", run_dir / "checkpoint" /
                     "checkpoint.json", "--output", tmp_path / "out")):
        line = one_line_error(run(*command))
        assert line in (f"error: {message}", f"error: --model {message}"), (command, line)

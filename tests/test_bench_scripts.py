"""Bench scripts' own argument checks: a wrong option stops with one line naming it, before any work."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def stops(script: str, *arguments) -> tuple[int, str]:
    """(exit status, last line of stderr) of a bench script run as `python bench/SCRIPT arguments` would run
    it, in this process: its checks come before any work, and a new process would only spend seconds
    importing torch again."""
    stderr = io.StringIO()
    with mock.patch.object(sys, "argv", [str(BENCH / script), *map(str, arguments)]), \
            mock.patch.object(sys, "path", [str(BENCH), *sys.path]), mock.patch.dict(os.environ), \
            contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(BENCH / script), run_name="__main__")
    code = stopped.value.code
    if isinstance(code, str):  # sys.exit("message"): Python prints the message and exits with 1
        return 1, code.splitlines()[-1]
    return code, stderr.getvalue().strip().splitlines()[-1]


@pytest.mark.parametrize("rate", ["abc", "0", "-1e-4"])
def test_pretraining_value_rejects_a_learning_rate_that_is_not_positive(tmp_path, rate):
    assert stops("pretraining_value.py", tmp_path, f"--lr={rate}") == (
        2, f"pretraining_value.py: error: --learning-rate must be a positive number, got {rate!r}")


@pytest.mark.parametrize("options, message", [
    (["--fresh-layers", "1"], "--fresh-layers re-initialises layers below the pooler: give --fresh-pooler too"),
    (["--fresh-pooler", "--fresh-layers", "-1"], "--fresh-layers must be 0 or more, got -1"),
    (["--layer-lr-decay", "0"], "--layer-lr-decay must be in (0, 1], got 0.0"),
    (["--layer-lr-decay", "1.5"], "--layer-lr-decay must be in (0, 1], got 1.5"),
    (["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
    (["--budgets", "0"], "--budgets must be positive, got 0.0"),
    (["--fresh-pooler", "--classifier-pooling", "mean"],
     "--classifier-pooling mean reads no pooler: --fresh-pooler would change nothing"),
    (["--selection", "sentences"],
     "--selection sentences holds sentences apart as --held-apart sentences does: give that too"),
])
def test_pretraining_value_checks_its_options(tmp_path, options, message):
    assert stops("pretraining_value.py", tmp_path, *options) == (2, f"pretraining_value.py: error: {message}")


def test_pretraining_value_wants_the_control_of_a_saved_model(tmp_path):
    """A model folder (no training run) has no recorded seed to rebuild its control from."""
    assert stops("pretraining_value.py", tmp_path) == (
        1, f"{tmp_path} is no `bertforge pretrain train` run (no training_config.json): give --runs-dir, with the "
        "control in its start-random folder")


def test_fresh_top_keeps_the_lower_layers_and_leaves_the_pooler_out(tmp_path):
    """`--fresh-pooler --fresh-layers 1`'s start: the top layer re-drawn (the same for every start), the
    layers below it as they were, no pooler (fine-tuning draws one), and a model that loads."""
    sys.path.insert(0, str(BENCH))
    from pretraining_value import with_fresh_top
    import torch
    from safetensors.torch import load_file

    from bertforge.model import BertConfig, BertForPreTraining, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = BertForPreTraining(config)
    with torch.no_grad():  # no weight left at its initial value, so that every re-drawn one shows
        for parameter in model.parameters():
            parameter.add_(0.5)
    model.save_pretrained(tmp_path / "start")
    old = load_file(tmp_path / "start" / "model.safetensors")
    new = load_file(with_fresh_top(tmp_path / "start", 1) / "model.safetensors")
    assert not any(".pooler." in name for name in new)
    assert set(old) - set(new) == {name for name in old if ".pooler." in name}
    for name, tensor in new.items():
        assert tensor.equal(old[name]) == (not name.startswith("bert.encoder.layer.1.")), name
    assert new["bert.encoder.layer.1.output.LayerNorm.weight"].eq(1).all()
    assert BertModel.from_pretrained(tmp_path / "start-fresh-pooler-layers1").pooler is not None
    with pytest.raises(SystemExit, match="--fresh-layers 3: .* has only 2 encoder layers"):
        with_fresh_top(tmp_path / "start", 3)


def test_unseen_sentences_split_holds_selection_sentences_apart_too(tmp_path, monkeypatch):
    """`--selection sentences`: a second set of whole sentences, disjoint from the scored ones, neither set
    nor any phrase of them left in training, and the scored sentences the same as without it."""
    sys.path.insert(0, str(BENCH))
    import unseen_sentences

    sentences = [f"w{i} " + " ".join(f"x{i}y{j}" for j in range(8)) for i in range(12)]
    rows = [(s, i % 2) for i, s in enumerate(sentences)]
    rows += [(" ".join(s.split()[2:6]), 1) for s in sentences] + [(s.split()[0], 0) for s in sentences]
    (tmp_path / "sst2").mkdir()
    for name, part in (("train.tsv", rows[:30]), ("validation.tsv", rows[30:])):
        (tmp_path / "sst2" / name).write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in part))
    monkeypatch.setattr(unseen_sentences, "DATA", tmp_path)
    monkeypatch.setattr(unseen_sentences, "UNSEEN_SENTENCES", 3)

    def texts(path):
        return {line.rsplit("\t", 1)[0] for line in path.read_text().splitlines()[1:]}

    train, scored, selection = unseen_sentences.unseen_sentences_split(selection=True, directory=tmp_path / "with")
    plain_train, plain_scored, none = unseen_sentences.unseen_sentences_split(directory=tmp_path / "without")
    assert none is None and texts(scored) == texts(plain_scored)
    assert len(texts(scored)) == len(texts(selection)) == 3 and not texts(scored) & texts(selection)
    apart = texts(scored) | texts(selection)
    phrases_apart = set().union(*(unseen_sentences.word_spans(tuple(s.split())) for s in apart))
    assert not {tuple(t.split()) for t in texts(train)} & phrases_apart
    assert len(texts(train)) == 36 - 3 * 6 and texts(train) < texts(plain_train)


def test_gain_interval_is_the_spread_over_resampled_sentences():
    """10 of 100 sentences right for the pre-trained arm only: a gain of 0.10, whose spread over resampled
    sentences is a binomial's (sd 0.03), whatever the number of seeds; no difference, no spread."""
    sys.path.insert(0, str(BENCH))
    import numpy as np
    from pretraining_value import gain_interval

    pre_trained, control = np.zeros((3, 100)), np.zeros((3, 100))
    pre_trained[:, :10] = 1
    low, high = gain_interval(pre_trained, control)
    assert 0.10 - 0.075 < low < 0.10 - 0.045 and 0.10 + 0.045 < high < 0.10 + 0.075
    assert gain_interval(control, control) == (0.0, 0.0)


@pytest.mark.parametrize("options, message", [
    (["--epochs", "0"], "--epochs must be positive, got 0"),
    (["--train-limit", "0"], "--train-limit must be 1 or more, got 0"),
    (["--lr=-1e-4"], "--learning-rate must be a positive number, got '-1e-4'"),
    (["--augment=-1"], "--augment must be 0 or more, got -1"),
    (["--unlabelled-sentences=-1"], "--unlabelled-sentences must be 0 or more, got -1"),
    (["--joined-rows=-1"], "--joined-rows -1: 0 or more, and not with --unlabelled-sentences (the distilled arm reads "
                           "one --unlabelled file)"),
    (["--joined-rows", "5", "--unlabelled-sentences", "5"], "--joined-rows 5: 0 or more, and not with "
                                                            "--unlabelled-sentences (the distilled arm reads one "
                                                            "--unlabelled file)"),
    (["--joined-rows", "5", "--train-limit", "1"], "--joined-rows joins two different training rows: --train-limit 1 "
                                                   "is too few"),
    (["--batch-size", "0"], "--batch-size must be 1 or more, got 0"),
    (["--layer-lr-decay", "0"], "--layer-lr-decay 0: each layer's share of the rate above it, in (0, 1]"),
    (["--layer-lr-decay", "1.2"], "--layer-lr-decay 1.2: each layer's share of the rate above it, in (0, 1]"),
    (["--alpha", "0"], "--alpha 0: the distilled arm's soft-target weight must be in (0, 1]"),
    (["--alpha", "1.5"], "--alpha 1.5: the distilled arm's soft-target weight must be in (0, 1]"),
    (["--augment-epochs", "2"], "--augment-epochs 2 needs --augment K and a positive number of passes"),
    (["--augment", "1", "--augment-epochs", "0"], "--augment-epochs 0 needs --augment K and a positive number of passes"),
    (["--student", "/no/such/model"], "--student /no/such/model: no config.json (a pre-trained model directory)"),
    (["--fresh-runs", "runs"], "--fresh-runs compares a pre-trained --student with fresh students: give --student too"),
    (["--hidden-weight", "1"], "--hidden-weight 1: 0 or more, and with --prune or --student-layers (the student's "
                               "channels must be the teacher's)"),
    (["--attention-weight", "1"], "--attention-weight 1: 0 or more, and with --prune or --student-layers (the "
                                  "student's heads must be the teacher's)"),
    (["--student-layers", "0"], "--student-layers must be 1 or more, got 0"),
    (["--student-layers", "3", "--prune"], "--student-layers 3 starts the students from the teacher's layers; --prune "
                                           "and --student start them elsewhere: give one"),
])
def test_distill_value_checks_its_options(tmp_path, options, message):
    (tmp_path / "config.json").write_text("{}")
    assert stops("distill_value.py", tmp_path, *options) == (2, f"distill_value.py: error: {message}")


def test_distill_value_prunes_or_starts_from_another_model_not_both(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert stops("distill_value.py", tmp_path, "--prune", "--student", str(tmp_path)) == (
        2, "distill_value.py: error: --prune cuts the students from the teacher; --student starts them from another "
           "model: give one")


def test_distill_value_wants_a_teacher_model(tmp_path):
    assert stops("distill_value.py", tmp_path) == (
        2, f"distill_value.py: error: {tmp_path}: no config.json (the teacher is a model directory)")


def test_the_augmented_arm_takes_the_controls_steps_schedule_and_evaluation_points(tmp_path):
    sys.path.insert(0, str(BENCH))
    from distill_value import augmented_arm

    (tmp_path / "metrics.json").write_text(json.dumps({"total_steps": 6129}))
    # 3 epochs of 2,043 steps; with one copy per row the data doubles at most, so 6 epochs reach 6,129 steps
    assert augmented_arm(1, tmp_path, 3.0) == (6.0, ("--augment", "1", "--max-steps", "6129", "--eval-every", "2043"))


def distill_value_folders(tmp_path: Path, **settings) -> dict[str, list[str]]:
    """distill_value's run folders per arm, at the best arm's settings (the cut student, 3 copies per row in 2
    passes, lr 2e-4, T 2, unseen sentences, seeds 42 and 1) but for `settings`."""
    sys.path.insert(0, str(BENCH))
    from distill_value import arm_folders

    args = argparse.Namespace(**{
        "train_limit": 45075, "learning_rate": "2e-4", "epochs": 3.0, "held_apart": "sentences", "augment": 3,
        "augment_epochs": 2.0, "hidden_weight": 0.0, "attention_weight": 0.0, "alpha": 0.5, "temperature": 2.0, "seeds": [42, 1],
        "unlabelled_sentences": 0, "joined_rows": 0, "layer_lr_decay": 1.0, "batch_size": 32,
        "classifier_pooling": None, **settings})
    return {arm: [run.name for run in runs] for arm, runs in arm_folders(args, tmp_path).items()}


def test_one_control_serves_every_temperature(tmp_path):
    def folders(temperature: float, alpha: float = 0.5, decay: float = 1.0, batch: int = 32) -> dict[str, list[str]]:
        return distill_value_folders(tmp_path, temperature=temperature, alpha=alpha, layer_lr_decay=decay,
                                     batch_size=batch)

    # the distilled folders of earlier runs keep their names, so they are found again rather than retrained
    assert folders(2.0) == {
        "distilled": ["distilled-augment3-passes2-rows45075-lr2e-4-T2-epochs3-unseen-seed42",
                      "distilled-augment3-passes2-rows45075-lr2e-4-T2-epochs3-unseen-seed1"],
        "labels alone": ["labels-alone-rows45075-lr2e-4-epochs3-unseen-seed42",
                         "labels-alone-rows45075-lr2e-4-epochs3-unseen-seed1"]}
    assert folders(4.0)["labels alone"] == folders(2.0)["labels alone"] == folders(2.0, alpha=1.0)["labels alone"]
    assert folders(4.0)["distilled"][0] == "distilled-augment3-passes2-rows45075-lr2e-4-T4-epochs3-unseen-seed42"
    assert folders(2.0, alpha=1.0)["distilled"][0].startswith("distilled-alpha1-augment3-")
    # layer-wise decay trains both arms, so it names both
    assert folders(2.0, decay=0.8) == {
        "distilled": ["distilled-augment3-passes2-rows45075-lr2e-4-decay0.8-T2-epochs3-unseen-seed42",
                      "distilled-augment3-passes2-rows45075-lr2e-4-decay0.8-T2-epochs3-unseen-seed1"],
        "labels alone": ["labels-alone-rows45075-lr2e-4-decay0.8-epochs3-unseen-seed42",
                         "labels-alone-rows45075-lr2e-4-decay0.8-epochs3-unseen-seed1"]}
    # and so does a batch other than distill's 32, and the students' classifier pooling
    assert folders(2.0, batch=16)["distilled"][0] == \
        "distilled-augment3-passes2-rows45075-lr2e-4-batch16-T2-epochs3-unseen-seed42"
    pooled = distill_value_folders(tmp_path, classifier_pooling="mean")
    assert pooled["distilled"][0] == "distilled-augment3-passes2-rows45075-lr2e-4-poolmean-T2-epochs3-unseen-seed42"
    assert pooled["labels alone"][0] == "labels-alone-rows45075-lr2e-4-poolmean-epochs3-unseen-seed42"
    assert folders(2.0, batch=16)["labels alone"][0] == "labels-alone-rows45075-lr2e-4-batch16-epochs3-unseen-seed42"
    # a loss only the distilled arm learns names its folder, not the control's
    attended = distill_value_folders(tmp_path, attention_weight=1.0)
    assert attended["distilled"][0] == "distilled-augment3-passes2-attention1-rows45075-lr2e-4-T2-epochs3-unseen-seed42"
    assert attended["labels alone"][0] == "labels-alone-rows45075-lr2e-4-epochs3-unseen-seed42"


def test_unlabelled_sentences_spread_over_the_corpus_and_name_their_arm(tmp_path):
    sys.path.insert(0, str(BENCH))
    from distill_texts import spread_sentences

    short, long = "too short .", " ".join(["word"] * 41)
    documents = [[f"book {b} sentence {s} of five words" for s in range(10)] + [short, long] for b in range(3)]
    picked = spread_sentences(documents, 6)
    # every book contributes, in corpus order, and only sentences of 5 to 40 words
    assert picked == [f"book {b} sentence {s} of five words" for b in range(3) for s in (0, 5)]
    with pytest.raises(SystemExit, match="only 30 sentences"):
        spread_sentences(documents, 31)

    folders = distill_value_folders(tmp_path, unlabelled_sentences=45075)
    assert folders["distilled"][0] == "distilled-augment3-passes2-gutenberg45075-rows45075-lr2e-4-T2-epochs3-unseen-seed42"
    # the control learns from the labels alone, so the extra texts do not name it: one control serves both arms
    assert folders["labels alone"] == distill_value_folders(tmp_path)["labels alone"]


def test_joined_rows_pair_two_different_training_rows_once_and_name_their_arm(tmp_path):
    sys.path.insert(0, str(BENCH))
    from distill_texts import joined_rows

    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"row {i}\t{i % 2}\n" for i in range(10)))
    path = joined_rows(200, train, 4, tmp_path / "runs")
    assert path.name == "joined-rows-200-of-4.tsv"
    lines = path.read_text().splitlines()
    assert lines[0] == "sentence" and len(lines) == 201
    pairs = {tuple(line.split(" row ")) for line in lines[1:]}
    firsts, seconds = {first for first, _ in pairs}, {f"row {second}" for _, second in pairs}
    # only the first --train-limit rows, never a row joined to itself, both orders drawn
    assert firsts == seconds == {f"row {i}" for i in range(4)}
    assert all(first != f"row {second}" for first, second in pairs) and len(pairs) == 12
    # written once: every seed's run reads the same file
    path.write_text("sentence\nkept\n")
    assert joined_rows(200, train, 4, tmp_path / "runs").read_text() == "sentence\nkept\n"

    folders = distill_value_folders(tmp_path, joined_rows=45075)
    assert folders["distilled"][0] == "distilled-augment3-passes2-joined45075-rows45075-lr2e-4-T2-epochs3-unseen-seed42"
    # the control learns from the labels alone, so the extra texts do not name it: one control serves both arms
    assert folders["labels alone"] == distill_value_folders(tmp_path)["labels alone"]


def test_distill_value_reads_the_teachers_training_file_from_its_run_card(tmp_path):
    sys.path.insert(0, str(BENCH))
    from distill_value import fine_tuned_on

    assert fine_tuned_on(tmp_path) is None
    (tmp_path / "run_card.json").write_text(json.dumps({"options": {"train_path": "runs/split/train.tsv"}}))
    assert fine_tuned_on(tmp_path) == Path("runs/split/train.tsv")


def test_distill_value_pairs_the_arms_by_seed():
    sys.path.insert(0, str(BENCH))
    from distill_value import paired_gain

    gain, error, wins = paired_gain([0.90, 0.91, 0.89, 0.92], [0.89, 0.89, 0.90, 0.90])
    assert gain == pytest.approx(0.01)
    # differences 0.01, 0.02, -0.01, 0.02: sd 0.014142, over √4 seeds
    assert error == pytest.approx(0.0141421 / 2, rel=1e-5)
    assert wins == 3
    with pytest.raises(ValueError):
        paired_gain([0.9, 0.9], [0.9])


def test_a_bench_run_is_repeated_until_its_card_is_written_and_resumes_from_its_checkpoint(tmp_path):
    sys.path.insert(0, str(BENCH))
    from defaults_sweep import train_once

    calls, output = tmp_path / "calls", tmp_path / "run"
    command = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')",
               str(calls)]
    output.mkdir()
    (output / "metrics.json").write_text("{}")  # rewritten at each evaluation: an interrupted run has one
    train_once(command, output)
    (output / "checkpoint").mkdir()
    train_once(command, output)
    (output / "run_card.json").write_text("{}")
    train_once(command, output)
    assert calls.read_text().splitlines() == [f"--overwrite --output {output}", f"--resume {output} --output {output}"]


def test_defaults_sweep_scores_unseen_sentences_only_for_sst2():
    assert stops("defaults_sweep.py", "--task", "conll", "--held-apart", "sentences") == (
        2, "defaults_sweep.py: error: --held-apart sentences is SST-2's split; --task conll scores its own "
           "held-apart file")


def test_defaults_sweep_on_unseen_sentences_trains_on_the_splits_file_and_scores_its_sentences(tmp_path,
                                                                                                monkeypatch):
    sys.path.insert(0, str(BENCH))
    import defaults_sweep

    calls = []
    monkeypatch.setattr(defaults_sweep, "one_epoch_run", lambda *a: calls.append(a) or {"steps": 1})
    split = (tmp_path / "train.tsv", tmp_path / "sentences.tsv", tmp_path / "selection.tsv")
    row = defaults_sweep.run("sst2", "2e-4", [], tmp_path, 1, split)
    plain = defaults_sweep.run("sst2", "2e-4", [], tmp_path, 1)
    (task, options, output, threads, *files), (_, plain_options, plain_output, _) = calls
    assert options == ["--learning-rate", "2e-4", "--train", str(split[0])]  # the last --train given wins
    assert files == [split[1], split[2]] and output == tmp_path / "sst2-lr2e-4-unseen"
    assert plain_options == ["--learning-rate", "2e-4"] and plain_output == tmp_path / "sst2-lr2e-4"
    assert row["name"] == "sst2-lr2e-4-unseen" and plain["name"] == "sst2-lr2e-4"
    default = defaults_sweep.run("sst2", "default", ["--seed", "2"], tmp_path, 1, split)  # finetune's own rate
    assert calls[-1][1] == ["--seed", "2", "--train", str(split[0])] and default["name"] == "sst2-lrdefault-seed2-unseen"
    another_start = defaults_sweep.run("sst2", "default", ["--model", "runs/minilm-dropout0"], tmp_path, 1, split)
    assert another_start["name"] == "sst2-lrdefault-modelruns-minilm-dropout0-unseen"  # one folder, not a nest


def test_pretraining_value_passes_the_classifier_pooling_to_both_fine_tunings(tmp_path, monkeypatch):
    sys.path.insert(0, str(BENCH))
    import pretraining_value

    calls = []
    monkeypatch.setattr(pretraining_value, "one_epoch_run", lambda *a: calls.append(a) or {})
    for pooling in ("mean", None):
        pretraining_value.finetune(tmp_path / "start", 3, 20_000, tmp_path / "out", 1, None, "4e-4", 1.0, 1, pooling)
    (_, mean_options, *_), (_, config_options, *_) = calls
    assert mean_options[-2:] == ["--classifier-pooling", "mean"]
    assert "--classifier-pooling" not in config_options  # the checkpoint's config decides, as before the option


def test_the_bench_reads_a_process_with_the_children_its_threads_started(tmp_path):
    """`serve.py` measures a server with its inference process and `prepare.py` a command with its workers: both walk
    the process tree, which must reach a child started from a thread other than the main one."""
    sys.path.insert(0, str(BENCH))
    from processes import (cpu_ticks, peak_memory_mb, process_tree, resident_mb, stolen_share, thread_cpu_seconds,
                           tree_cpu_seconds)

    started = cpu_ticks()
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, threading, time\n"
        "sleeper = [sys.executable, '-c', 'import time; time.sleep(60)']\n"
        "threading.Thread(target=subprocess.run, args=(sleeper,)).start()\n"
        "sum(range(3 * 10 ** 7))\n"
        "time.sleep(60)\n")])
    try:
        deadline = time.monotonic() + 30
        while len(process_tree(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = process_tree(parent.pid)
        assert len(tree) == 2 and tree[0] == parent.pid
        time.sleep(0.2)  # the sum runs after the thread's start
        while tree_cpu_seconds(parent.pid) < 0.1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree_cpu_seconds(parent.pid) >= 0.1
        threads = thread_cpu_seconds(parent.pid)
        assert {key.split("/")[0] for key in threads} == {str(pid) for pid in tree} and len(threads) >= 3
        child_alone = resident_mb(tree[1])
        assert 0 < child_alone < resident_mb(parent.pid)
        assert peak_memory_mb(parent.pid) * 2 ** 20 >= resident_mb(parent.pid) * 1e6 * 0.99
    finally:
        for pid in process_tree(parent.pid)[::-1]:
            os.kill(pid, 9)
        parent.wait()
    assert process_tree(parent.pid) == [parent.pid] and tree_cpu_seconds(parent.pid) == 0.0  # ended: nothing to read
    assert 0 <= stolen_share(started) <= 1


def test_the_memory_bench_corpus_has_every_word_new_and_reads_as_documents(tmp_path):
    """`prepare.py --new-words N` times the command on a corpus of N words that never repeat: each must be a word
    the tokenizer's cache has not met, and the file must read as documents of sentences."""
    sys.path.insert(0, str(BENCH))
    from prepare import write_new_words

    from bertforge.pretraining.corpus import read_documents

    corpus = tmp_path / "new.txt"
    write_new_words(1_234, corpus)
    documents = list(read_documents(corpus))
    words = [word for document in documents for line in document for word in line.split() if word != "."]
    assert len(words) == len(set(words)) == 1_234 and all(len(word) >= 5 and word.isalpha() for word in words)
    assert [len(document) for document in documents] == [50, 50, 3]  # 103 lines of 12 words or fewer
    assert stops("prepare.py", "--new-words", 100_000, 10) == (
        2, "prepare.py: error: --new-words takes counts of 1000 words or more, got 10")


@pytest.mark.parametrize("arguments,message", [
    (("--steps", "1"), "--steps must be at least 2 (the first is a warm-up), got 1"),
    (("--seq-length", "600"), "--batch-size and --threads must be at least 1, --seq-length 1 to 512"),
    (("--size", "huge"), "unknown model size 'huge'"),
])
def test_activation_checkpointing_bench_names_a_wrong_option(arguments, message):
    code, line = stops("activation_checkpointing.py", *arguments)
    assert code == 2 and line.startswith(f"activation_checkpointing.py: error: {message}"), line

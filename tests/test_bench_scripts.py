"""Bench scripts' own argument checks: a wrong option stops with one line naming it, before any work; and the helpers
of the pre-training, fine-tuning and measuring benches. distill_value.py's are in tests/test_bench_distill.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from bench_helpers import BENCH, stops


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

"""Pre-training: instances, masking statistics, shards, the training loop, exact resume, DDP."""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bertforge.cli.main import cli
from bertforge.errors import CheckpointError, ConfigError, InputError
from bertforge.model import BertConfig, BertModel, BertForPreTraining
from bertforge.pretraining import (IS_NEXT, NOT_NEXT, MaskingConfig, PrepareOptions, PretrainingData,
                                   create_instances, mask_sequence, prepare, read_documents, truncate_seq_pair)
from bertforge.pretraining.instances import tokenize_documents
from bertforge.pretraining.config import TrainingConfig
from bertforge.pretraining.trainer import train
from conftest import fixture_data, kill_at_first_checkpoint

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def free_port() -> int:
    """A port no one listens on now, for torchrun's rendezvous (a fixed one collides with other runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    """Six documents of real text: slices of the first Gutenberg books, as JSON Lines."""
    records = []
    with gzip.open(fixture_data("corpus", "gutenberg_train.jsonl.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            records += [text[start:start + 25_000] for start in (20_000, 60_000, 100_000)]
            if len(records) >= 6:
                break
    path = tmp_path_factory.mktemp("corpus") / "books.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, corpus_file, tokenizer) -> Path:
    directory = tmp_path_factory.mktemp("data")
    prepare([corpus_file], directory, tokenizer, PrepareOptions(dupe_factor=5, shard_size=500), progress=False)
    return directory


# --- SPEC §3 examples -------------------------------------------------------------------------

def test_spec_nsp_examples(tmp_path, tokenizer):
    """`She cooked pasta / It was delicious` is isNext; B from another document is notNext."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("She cooked pasta.\nIt was delicious.\n\nTurn the radio on.\n\nShe bought a new hat.\n")
    documents = list(read_documents(corpus))
    assert documents == [["She cooked pasta.", "It was delicious."], ["Turn the radio on."], ["She bought a new hat."]]
    tokenized = tokenize_documents(documents, tokenizer, 128).documents
    seen = set()
    for seed in range(40):
        for instance in create_instances(tokenized, 128, 0.0, 1, random.Random(seed),
                                         tokenizer.cls_token_id, tokenizer.sep_token_id):
            a = tokenizer.decode(instance.tokens[1:instance.segment_b_start - 1].tolist())
            b = tokenizer.decode(instance.tokens[instance.segment_b_start:-1].tolist())
            seen.add((a, b, instance.next_sentence_label))
    assert ("she cooked pasta.", "it was delicious.", IS_NEXT) in seen
    assert ("turn the radio on.", "she bought a new hat.", NOT_NEXT) in seen
    # a notNext B never comes from A's own document when there are others
    assert not any(label == NOT_NEXT and a == "she cooked pasta." and b == "it was delicious." for a, b, label in seen)


def test_truncate_seq_pair_trims_longer_side():
    rng = random.Random(0)
    a_front, a_back, b_front, b_back = truncate_seq_pair(100, 10, 50, rng)
    assert b_front == b_back == 0 and a_front + a_back == 60
    assert a_front > 0 and a_back > 0  # both ends, at random
    assert truncate_seq_pair(30, 31, 20, rng)[0:2] != (0, 0)  # shrinks both once lengths meet
    assert sum(truncate_seq_pair(5, 5, 20, rng)) == 0


# --- statistics over many instances -----------------------------------------------------------

def test_instances_statistics(data_dir, tokenizer):
    data = PretrainingData(data_dir)
    index = data.index
    assert index["instances"] > 1200
    assert 0.45 <= index["stats"]["is_next_fraction"] <= 0.55
    lengths = np.concatenate([np.load(data_dir / f"{s['name']}.lengths.npy") for s in index["shards"]])
    assert lengths.max() <= 128 and lengths.min() >= 5
    assert (lengths < 100).mean() > 0.05  # short_seq_prob makes some short targets
    batch = data.batch(np.arange(64), epoch=0)
    ids = batch["input_ids"]
    assert (ids[:, 0] == tokenizer.cls_token_id).all()
    assert (batch["attention_mask"].sum(1) == lengths[:64]).all()
    # token type 1 exactly on B and its [SEP]; both segments end with [SEP]
    for row in range(64):
        types, length = batch["token_type_ids"][row], lengths[row]
        b_start = int(np.argmax(types)) if types.any() else length
        assert ids[row, b_start - 1] == tokenizer.sep_token_id or batch["labels"][row, b_start - 1] == tokenizer.sep_token_id
        assert types[length:].sum() == 0


def _masking_counts(tokenizer, data, whole_word_mask: bool):
    masking = MaskingConfig.for_tokenizer(tokenizer, whole_word_mask=whole_word_mask)
    counts = {"tokens": 0, "picked": 0, "mask": 0, "same": 0, "random": 0}
    for index in range(len(data)):
        raw = data._gather(np.array([index]))
        tokens = raw["input_ids"][0, :raw["lengths"][0]].astype(np.int64)
        masked, positions, originals = mask_sequence(tokens, masking, np.random.default_rng([7, index]))
        assert len(positions) <= masking.max_predictions_per_seq
        assert not np.isin(tokens[positions], masking.special_ids).any()
        counts["tokens"] += len(tokens)
        counts["picked"] += len(positions)
        counts["mask"] += int((masked[positions] == tokenizer.mask_token_id).sum())
        counts["same"] += int((masked[positions] == originals).sum())
        if whole_word_mask:
            picked = np.zeros(len(tokens), dtype=bool)
            picked[positions] = True
            # a "##" piece is picked exactly when the piece before it is (unless that is [SEP]/[CLS])
            joined = masking.continuation[tokens[1:]] & ~np.isin(tokens[:-1], masking.special_ids)
            assert (picked[1:][joined] == picked[:-1][joined]).all()
    counts["random"] = counts["picked"] - counts["mask"] - counts["same"]
    return counts


@pytest.mark.parametrize("whole_word_mask", [False, True])
def test_masking_statistics(data_dir, tokenizer, whole_word_mask):
    counts = _masking_counts(tokenizer, PretrainingData(data_dir), whole_word_mask)
    picked = counts["picked"]
    assert picked > 20_000
    assert abs(picked / counts["tokens"] - 0.15) < 0.01
    assert abs(counts["mask"] / picked - 0.8) < 0.01
    # "unchanged" also includes random draws that hit the original token (1 in 30k)
    assert abs(counts["same"] / picked - 0.1) < 0.01
    assert abs(counts["random"] / picked - 0.1) < 0.01


def test_dynamic_masks_are_deterministic_and_change_per_epoch(data_dir):
    data = PretrainingData(data_dir)
    indices = np.array([5, 17, 3])
    first, again, other_epoch = data.batch(indices, 0), data.batch(indices, 0), data.batch(indices, 1)
    assert (first["labels"] == again["labels"]).all() and (first["input_ids"] == again["input_ids"]).all()
    assert (first["labels"] != other_epoch["labels"]).any()
    # the mask of an instance does not depend on the batch it is in
    alone = data.batch(indices[1:2], 0)
    width = alone["labels"].shape[1]
    assert (alone["labels"][0] == first["labels"][1, :width]).all()


def test_static_masks_are_stored(tmp_path, corpus_file, tokenizer):
    prepare([corpus_file], tmp_path, tokenizer, PrepareOptions(masking="static", dupe_factor=1), max_documents=1,
            progress=False)
    data = PretrainingData(tmp_path)
    a, b = data.batch(np.arange(8), 0), data.batch(np.arange(8), 3)
    assert (a["labels"] == b["labels"]).all() and (a["input_ids"] == b["input_ids"]).all()
    picked = a["labels"] != -100
    assert picked.any() and ((a["input_ids"] == tokenizer.mask_token_id) <= picked).all()


# --- bad input ----------------------------------------------------------------------------------

def test_bad_corpus_files(tmp_path, tokenizer, caplog):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InputError, match="empty.txt"):
        list(read_documents(empty))
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"text": "   "}\n')
    with pytest.raises(InputError, match=r"blank.jsonl: no text found \(the file is empty or blank\)$"):
        list(read_documents(blank))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait.\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin1.txt.*UTF-8"):
        list(read_documents(latin1))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine."}\n{"txt": "no text field"}\n')
    # the reader train-vocab uses too: the same messages, and a JSON document is named as one
    with pytest.raises(InputError, match=r"bad\.jsonl:2: expected a JSON object with a string \"text\" field$"):
        list(read_documents(bad_json))
    document = tmp_path / "document.jsonl"
    document.write_text('[\n  {"text": "fine."}\n]\n')
    with pytest.raises(InputError, match=r"document\.jsonl:1: not valid JSON \(.*\); JSON Lines hold one object "
                                         r"per line, and this looks like one JSON document"):
        list(read_documents(document))
    with pytest.raises(InputError, match="missing.txt: no such file"):
        list(read_documents(tmp_path / "missing.txt"))
    # no document breaks: a warning, and NSP instances are still made
    one = tmp_path / "one.txt"
    one.write_text("\n".join(f"Sentence number {i} is here." for i in range(200)) + "\n")
    with caplog.at_level("WARNING"):
        index = prepare([one], tmp_path / "one", tokenizer, PrepareOptions(dupe_factor=2), progress=False)
    assert "no blank lines" in caplog.text
    assert 0.3 < index["stats"]["is_next_fraction"] < 0.7
    assert "end mid-sentence" not in caplog.text  # one sentence a line, as the format asks


def test_hard_wrapped_prose_is_named_in_a_warning(tmp_path, caplog):
    """A book as it is printed (lines wrapped mid-sentence, paragraphs between blank lines) would become
    fragments as segments and paragraphs as documents: the warning says so and names the JSONL remedy."""
    words = "Alice was beginning to get very tired of sitting by her sister on the bank, and of having".split()
    paragraph = "\n".join(" ".join(words[i:i + 6]) for i in range(0, len(words), 6)) + " nothing to do.\n"
    book = tmp_path / "book.txt"
    book.write_text("\n".join([paragraph] * 8), encoding="utf-8")
    with caplog.at_level("WARNING"):
        assert len(list(read_documents(book))) == 8
    assert re.search(r"book\.txt: 16 of its 24 lines end mid-sentence, as hard-wrapped prose does.*JSON Lines record",
                     caplog.text)


def test_long_sentences_are_truncated_and_counted(tmp_path, tokenizer):
    corpus = tmp_path / "long.txt"
    corpus.write_text("word " * 300 + "\nshort one.\n\nanother document.\nwith two lines.\n")
    index = prepare([corpus], tmp_path / "out", tokenizer, PrepareOptions(max_seq_length=64), progress=False)
    assert index["stats"]["truncated_sentences"] == 1
    assert PretrainingData(tmp_path / "out").batch(np.arange(index["instances"]), 0)["input_ids"].shape[1] <= 64


def test_a_chunk_of_one_document_is_named_in_a_warning(tmp_path, tokenizer, caplog):
    """Its notNext pairs cannot draw from another document (BERT's tool does the same, silently)."""
    corpus = tmp_path / "one.txt"
    corpus.write_text("The cat sat on the mat.\nIt was warm there.\nThe dog barked.\nThen it slept.\n\n"
                      "A second document.\nWith two lines.\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="bertforge.pretraining.shards"):
        prepare([corpus], tmp_path / "whole", tokenizer, PrepareOptions(max_seq_length=16), progress=False)
    assert "single document" not in caplog.text
    with caplog.at_level("WARNING", logger="bertforge.pretraining.shards"):
        prepare([corpus], tmp_path / "split", tokenizer, PrepareOptions(max_seq_length=16, chunk_tokens=1),
                progress=False)
    assert "2 chunk(s) held a single document, so their notNext pairs take the second segment from that same " \
           "document" in caplog.text


def test_cli_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = CliRunner().invoke(cli, ["pretrain", "prepare", str(empty), str(tmp_path / "out")])
    assert result.exit_code == 2 and "empty.jsonl" in result.output
    result = CliRunner().invoke(cli, ["pretrain", "train", str(tmp_path), str(tmp_path / "run")])
    assert result.exit_code == 2 and "not a prepared data directory" in result.output
    # the engine's check of the settings, before any data is read or anything written
    result = CliRunner().invoke(cli, ["pretrain", "train", str(tmp_path), str(tmp_path / "run"), "--weight-decay", "-1"])
    assert result.exit_code == 2 and "error: --weight-decay must be 0 or more, got -1.0" in result.output
    assert not (tmp_path / "run").exists()
    # as in finetune: 0 would freeze the weights, a negative norm means nothing
    for norm in ("0", "-1"):
        result = CliRunner().invoke(cli, ["pretrain", "train", str(tmp_path), str(tmp_path / "run"),
                                          "--max-grad-norm", norm])
        assert result.exit_code == 2 and "Invalid value for '--max-grad-norm'" in result.output
        assert f"{float(norm)} is not in the range x>0" in result.output
    for option, value in (("--skip-documents", "-1"), ("--max-documents", "0")):
        result = CliRunner().invoke(cli, ["pretrain", "prepare", str(empty), str(tmp_path / "out"), option, value])
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output


def test_a_damaged_data_directory_is_named_when_it_is_opened(data_dir, tmp_path):
    """A damaged or hand-edited index.json raised a JSONDecodeError, AttributeError or KeyError, and a shard
    shorter than its index said an IndexError in the middle of training; a truncated shard named only the folder."""
    import shutil

    def damaged(name, change) -> Path:
        directory = shutil.copytree(data_dir, tmp_path / name)
        index = json.loads((directory / "index.json").read_text())
        written = change(directory, index)
        (directory / "index.json").write_text(written if isinstance(written, str) else json.dumps(index))
        return directory

    shard = json.loads((data_dir / "index.json").read_text())["shards"][0]
    for name, change, message in (
            ("brace", lambda d, i: "{bad", "index.json: not valid JSON (Expecting property name"),
            ("empty", lambda d, i: "", "index.json: not valid JSON (Expecting value: line 1 column 1"),
            ("list", lambda d, i: "[]", "index.json: a JSON list, not the object `pretrain prepare` writes"),
            ("no-options", lambda d, i: i.pop("options"), "index.json: no 'options'"),
            ("shards", lambda d, i: i.update(shards={}), "index.json: 'shards' is {}, not a list"),
            ("more", lambda d, i: i["shards"][0].update(instances=shard["instances"] + 1),
             f"shard-00000.input_ids.npy: holds {shard['instances']} instances where its index.json counts "
             f"{shard['instances'] + 1}"),
            ("truncated", lambda d, i: (d / "shard-00000.lengths.npy").write_bytes(b"\x93NUMPY"),
             "shard-00000.lengths.npy: a shard file is damaged")):
        directory = damaged(name, change)
        with pytest.raises(InputError) as error:
            PretrainingData(directory)
        assert str(error.value).startswith(str(directory / message.split(":")[0])), error.value
        assert message in str(error.value) and str(error.value).endswith("; prepare the data again")
    result = CliRunner().invoke(cli, ["pretrain", "train", str(tmp_path / "empty"), str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.startswith(f"error: {tmp_path / 'empty' / 'index.json'}: not valid")
    assert not (tmp_path / "run").exists()


# --- training -------------------------------------------------------------------------------------

def _config(data_dir, output_dir, **overrides):
    settings = dict(data_dir=str(data_dir), output_dir=str(output_dir), model_size="tiny", max_steps=8, batch_size=8,
                    learning_rate=1e-3, warmup_steps=2, checkpoint_every=4, log_every=2, seed=3, progress=False)
    settings.update(overrides)
    return TrainingConfig(**settings)


@pytest.mark.slow
def test_fifty_steps_on_real_text_loss_falls(data_dir, tmp_path):
    result = train(_config(data_dir, tmp_path, max_steps=50, log_every=10, checkpoint_every=50,
                           eval_data_dir=str(data_dir), eval_every=50, eval_instances=64))
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    losses = [float(row.split(",")[1]) for row in rows[1:]]
    assert len(losses) == 5 and losses[-1] < losses[0] - 1.0
    assert result["eval"]["mlm_accuracy"] > 0.05
    assert (tmp_path / "training_curves.png").stat().st_size > 1000
    # the final model loads in transformers with the same predictions
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import BertForPreTraining as ReferenceModel

    from bertforge.model.heads import BertForPreTraining

    ours = BertForPreTraining.from_pretrained(tmp_path / "final")
    reference = ReferenceModel.from_pretrained(tmp_path / "final").eval()
    batch = {k: torch.from_numpy(v) for k, v in PretrainingData(data_dir).batch(np.arange(4), 0).items()}
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        expected = reference(**inputs)
        actual = ours(**inputs)
    torch.testing.assert_close(actual.prediction_logits, expected.prediction_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual.seq_relationship_logits, expected.seq_relationship_logits, atol=1e-5, rtol=0)


def test_resume_refuses_another_configuration(data_dir, tmp_path):
    train(_config(data_dir, tmp_path, max_steps=4))
    with pytest.raises(CheckpointError, match=r"learning_rate: checkpoint 0\.001, now 0\.002"):
        train(_config(data_dir, tmp_path / "again", max_steps=4, learning_rate=2e-3), resume_from=tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        train(_config(data_dir, tmp_path / "x"), resume_from=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="--batch-size 8 must be a multiple"):
        train(_config(data_dir, tmp_path / "y", batch_size=8, gradient_accumulation_steps=3))


def _train_command(data_dir, run_dir, *extra):
    return [PYTHON, "-m", "bertforge", "pretrain", "train", str(data_dir), str(run_dir), "--model-size", "tiny",
            "--batch-size", "8", "--gradient-accumulation-steps", "2", "--lr", "1e-3", "--warmup-steps", "3",
            "--threads", "1", "--seed", "5", *extra]


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(Path(run_dir) / "final" / "model.safetensors")


def _train_in_process(data_dir, run_dir, **overrides):
    """The run `_train_command` describes, in this process (one thread, as there)."""
    train(_config(data_dir, run_dir, batch_size=8, gradient_accumulation_steps=2, learning_rate=1e-3,
                  warmup_steps=3, seed=5, **overrides))


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(data_dir, tmp_path):
    steps = ["--max-steps", "16", "--checkpoint-every", "4", "--log-every", "4"]
    _train_in_process(data_dir, tmp_path / "whole", max_steps=16, checkpoint_every=4, log_every=4)

    run = tmp_path / "killed"
    killed_at = kill_at_first_checkpoint(_train_command(data_dir, run, *steps), run, timeout=120)
    assert not (run / "final").exists(), "the run finished before it could be killed"
    assert 4 <= killed_at < 16

    subprocess.run(_train_command(data_dir, run, *steps, "--resume", str(run)), check=True, capture_output=True)
    whole, resumed = _weights(tmp_path / "whole"), _weights(run)
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    # the log was cut back to the checkpoint and continued: one row per logged step
    steps_logged = [int(r.split(",")[0]) for r in (run / "train_log.csv").read_text().splitlines()[1:]]
    assert steps_logged == list(range(4, 17, 4))


def _two_nodes(command: list[str]) -> None:
    """Run `command` as `torchrun --nnodes 2` would on two machines: two node processes (one worker
    each) meeting at a c10d rendezvous, here both on localhost."""
    torchrun = [PYTHON, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend",
                "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "bertforge-test", "-m", "bertforge"]
    nodes = [subprocess.Popen(torchrun + command[3:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-2000:]


def _assert_same_run(run, reference) -> None:
    trained, expected = _weights(run), _weights(reference)
    for name in expected:
        torch.testing.assert_close(trained[name], expected[name], atol=2e-6, rtol=1e-5, msg=name)


@pytest.mark.slow
def test_two_nodes_train_as_one_process_and_resume_with_another_process_count(data_dir, tmp_path):
    """The same global batch on two nodes gives one process's weights and loss curve (each rank reads
    its own rows of each batch); a run checkpointed by one process continues on two nodes."""
    common = ["--max-steps", "6", "--checkpoint-every", "2", "--log-every", "1", "--dropout", "0"]  # dropout draws differ per process
    _train_in_process(data_dir, tmp_path / "single", max_steps=6, checkpoint_every=2, log_every=1, dropout=0.0)

    _two_nodes(_train_command(data_dir, tmp_path / "two-nodes", *common))
    _assert_same_run(tmp_path / "two-nodes", tmp_path / "single")
    single_log, nodes_log = [(tmp_path / run / "train_log.csv").read_text().splitlines()[1:]
                             for run in ("single", "two-nodes")]
    assert len(single_log) == len(nodes_log) == 6
    for a, b in zip(single_log, nodes_log):
        assert float(a.split(",")[1]) == pytest.approx(float(b.split(",")[1]), rel=1e-5)

    run = tmp_path / "one-then-two"
    killed_at = kill_at_first_checkpoint(_train_command(data_dir, run, *common), run, timeout=120)
    assert not (run / "final").exists() and killed_at < 6, "the run finished before it could be killed"
    _two_nodes(_train_command(data_dir, run, *common, "--resume", str(run)))
    _assert_same_run(run, tmp_path / "single")


def test_export_run_directory_as_float16(data_dir, tmp_path):
    train(_config(data_dir, tmp_path / "run", max_steps=2, checkpoint_every=2))
    result = CliRunner().invoke(cli, ["pretrain", "export", str(tmp_path / "run"), str(tmp_path / "half")])
    assert result.exit_code == 0, result.output
    half = load_file(tmp_path / "half" / "model.safetensors")
    full = load_file(tmp_path / "run" / "final" / "model.safetensors")
    assert all(t.dtype == torch.float16 for t in half.values()) and half.keys() == full.keys()
    for name in full:
        torch.testing.assert_close(half[name].float(), full[name], atol=1e-3, rtol=1e-3)
    result = CliRunner().invoke(cli, ["pretrain", "evaluate", str(tmp_path / "half"), str(data_dir), "--instances", "16"])
    assert result.exit_code == 0 and 0.0 <= json.loads(result.output)["mlm_accuracy"] <= 1.0


def test_export_of_a_run_whose_checkpoint_was_hand_edited_names_the_file(data_dir, tmp_path):
    """Before, settings that are not a run's (a key TrainingConfig lacks, or no object at all) ended in a TypeError
    or KeyError from rebuilding the model."""
    train(_config(data_dir, tmp_path / "run", max_steps=2, checkpoint_every=2))
    manifest = tmp_path / "run" / "checkpoint" / "checkpoint.json"
    state = json.loads(manifest.read_text())
    for args, words in (({**state["args"], "layers": 3}, "its 'args' are not a pretrain train run's settings ("),
                        ([1, 2], "'args' is [1, 2], not an object")):
        manifest.write_text(json.dumps({**state, "args": args}))
        result = CliRunner().invoke(cli, ["pretrain", "export", str(tmp_path / "run"), str(tmp_path / "out")])
        assert result.exit_code == 2 and result.output.startswith(f"error: export {tmp_path / 'run'}: ") \
            and f"{manifest}: " in result.output and words in result.output, result.output


def test_export_sets_the_dropout_for_fine_tuning(data_dir, tmp_path):
    """A run pre-trained without dropout exports with the dropout fine-tuning wants; the weights are unchanged."""
    train(_config(data_dir, tmp_path / "run", max_steps=2, checkpoint_every=2, dropout=0.0))
    for source, name in ((tmp_path / "run", "from-run"), (tmp_path / "run" / "final", "from-model")):
        result = CliRunner().invoke(cli, ["pretrain", "export", str(source), str(tmp_path / name),
                                          "--dtype", "float32", "--dropout", "0.1"])
        assert result.exit_code == 0, result.output
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["hidden_dropout_prob"] == config["attention_probs_dropout_prob"] == 0.1
        exported = load_file(tmp_path / name / "model.safetensors")
        for key, tensor in load_file(tmp_path / "run" / "final" / "model.safetensors").items():
            assert torch.equal(exported[key], tensor), key
    assert json.loads((tmp_path / "run" / "final" / "config.json").read_text())["hidden_dropout_prob"] == 0.0
    result = CliRunner().invoke(cli, ["pretrain", "export", str(tmp_path / "run"), str(tmp_path / "x"), "--dropout", "1"])
    assert result.exit_code == 2 and "Invalid value for '--dropout'" in result.output and "Traceback" not in result.output


def test_export_of_a_run_without_its_checkpoint_points_to_final(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    result = CliRunner().invoke(cli, ["pretrain", "export", str(run), str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: {run}: no config.json (or Google's bert_config.json) there\n" in result.output
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=30522)).save_pretrained(run / "final")
    result = CliRunner().invoke(cli, ["pretrain", "export", str(run), str(tmp_path / "out")])
    assert result.exit_code == 2 and f"{run}: a training run's folder, with no model of its own; its final model " \
        f"is {run / 'final'}: use that" in result.output
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_a_model_without_pretraining_heads(data_dir, tmp_path):
    """Random MLM and NSP heads would be scored as if trained: refused as fill-mask and nsp refuse them."""
    BertModel(BertConfig.from_size("tiny", vocab_size=30522)).save_pretrained(tmp_path / "encoder")
    result = CliRunner().invoke(cli, ["pretrain", "evaluate", str(tmp_path / "encoder"), str(data_dir)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{tmp_path / 'encoder'}: pretrain evaluate needs a masked-language-model head (cls.predictions.*) " \
           "and a next-sentence-prediction head" in result.output
    assert "it can do: feature-extraction" in result.output


def test_init_from_continues_a_checkpoint_and_refuses_another_vocabulary(data_dir, tmp_path):
    """--init-from starts from a checkpoint's weights (here an encoder without MLM/NSP heads), not random ones."""
    encoder = BertModel(BertConfig.from_size("tiny", vocab_size=30522))
    encoder.save_pretrained(tmp_path / "encoder")
    start = encoder.embeddings.word.weight.detach().clone()
    train(_config(data_dir, tmp_path / "run", max_steps=2, learning_rate=1e-5, init_from=str(tmp_path / "encoder")))
    continued = BertForPreTraining.from_pretrained(tmp_path / "run" / "final")
    assert (continued.bert.embeddings.word.weight - start).abs().max() < 1e-3
    encoder.resize_token_embeddings(pad_to_multiple_of=64)  # 30528 rows: a padded table still holds the data's ids
    encoder.save_pretrained(tmp_path / "padded")
    train(_config(data_dir, tmp_path / "padded-run", max_steps=2, init_from=str(tmp_path / "padded")))
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=100)).save_pretrained(tmp_path / "small-vocab")
    with pytest.raises(ConfigError, match="vocabulary has 100 pieces"):
        train(_config(data_dir, tmp_path / "x", init_from=str(tmp_path / "small-vocab")))
    # a size typed beside the checkpoint would be ignored: refused before any work
    result = CliRunner().invoke(cli, ["pretrain", "train", str(data_dir), str(tmp_path / "y"), "--model-size", "base",
                                      "--init-from", str(tmp_path / "encoder")])
    assert result.exit_code == 2 and result.output.strip() == \
        f"error: --model-size base with --init-from {tmp_path / 'encoder'}: the checkpoint's config.json sets the " \
        "size; give one of them"
    assert not (tmp_path / "y").exists()


def test_existing_run_needs_resume_or_overwrite(data_dir, tmp_path):
    run = tmp_path / "run"
    command = ["pretrain", "train", str(data_dir), str(run), "--model-size", "tiny", "--batch-size", "8",
               "--max-steps", "2", "--checkpoint-every", "2", "--threads", "1"]
    assert CliRunner().invoke(cli, command).exit_code == 0
    first = (run / "final" / "model.safetensors").read_bytes()
    result = CliRunner().invoke(cli, command)
    assert result.exit_code != 0
    assert "holds a training run" in result.output and "--resume" in result.output and "--overwrite" in result.output
    # --overwrite starts afresh: the same seed gives the same weights, and nothing of the old run is left
    (run / "stale.txt").write_text("from the old run")
    result = CliRunner().invoke(cli, command + ["--overwrite", "--seed", "42"])
    assert result.exit_code == 0, result.output
    assert not (run / "stale.txt").exists()
    assert (run / "final" / "model.safetensors").read_bytes() == first  # pretrain train twice: identical
    card = json.loads((run / "run_card.json").read_text())
    assert card["command"][-2:] == ["--seed", "42"] and card["options"]["max_steps"] == 2
    assert card["threads"] == 1 and card["inputs"][0]["path"] == str(data_dir)


def test_evaluate_rejects_zero_batch_size_and_instances(data_dir, tmp_path):
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=30522)).save_pretrained(tmp_path / "model")
    for option in ("--batch-size", "--instances"):
        result = CliRunner().invoke(cli, ["pretrain", "evaluate", str(tmp_path / "model"), str(data_dir), option, "0"])
        assert result.exit_code == 2 and option in result.output and "0" in result.output, result.output


def test_overwrite_never_deletes_what_the_run_reads_and_a_failed_run_keeps_the_old_one(data_dir, tmp_path):
    """--overwrite deleted OUTPUT_DIR before the run was checked: with its data or --init-from inside, or a
    bad setting, the old run and the inputs were gone."""
    import shutil

    run = tmp_path / "run"
    command = ["pretrain", "train", str(run / "data"), str(run), "--model-size", "tiny", "--batch-size", "8",
               "--max-steps", "2", "--threads", "1"]
    shutil.copytree(data_dir, run / "data")
    (run / "train_log.csv").write_text("step,loss\n")  # an earlier run's log, so --overwrite would delete it
    result = CliRunner().invoke(cli, [*command, "--overwrite"])
    assert result.exit_code == 2 and f"error: OUTPUT_DIR {run}: would overwrite the input {run / 'data'}" in result.output
    assert (run / "data" / "index.json").exists()
    result = CliRunner().invoke(cli, ["pretrain", "train", str(data_dir), str(run), "--model-size", "tiny",
                                      "--max-steps", "2", "--warmup-steps", "9", "--overwrite"])
    assert result.exit_code == 2 and "warmup" in result.output
    assert (run / "train_log.csv").exists() and (run / "data" / "index.json").exists()
    result = CliRunner().invoke(cli, ["pretrain", "train", str(data_dir), str(tmp_path / "new" / "run"),
                                      "--model-size", "tiny", "--max-steps", "2", "--warmup-steps", "9"])
    assert result.exit_code == 2 and not (tmp_path / "new").exists()


def test_a_run_resumes_from_its_data_moved_elsewhere_but_not_into_another_directory(data_dir, tmp_path):
    import shutil

    train(_config(data_dir, tmp_path / "run", max_steps=4, checkpoint_every=2))
    moved = shutil.copytree(data_dir, tmp_path / "moved")
    train(_config(moved, tmp_path / "run", max_steps=4, checkpoint_every=2), resume_from=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"--resume .*run continues the run in that directory: give it as the output "
                                          r"directory too"):
        train(_config(moved, tmp_path / "elsewhere", max_steps=4), resume_from=tmp_path / "run")
    assert not (tmp_path / "elsewhere").exists()


def test_a_model_on_another_vocabulary_is_refused_by_every_command_that_reads_shards(data_dir, tmp_path, tokenizer):
    """A reordered vocab.txt has as many tokens: every id would be read as another token. A smaller table
    cannot hold the data's ids at all. pretrain train --init-from, pretrain evaluate and distill --task mlm
    check both with PretrainingData.check_model, so they say the same."""
    from bertforge.tokenization import BertTokenizer

    tokens = sorted(tokenizer.vocab, key=tokenizer.vocab.get)
    shuffled = tokens[:1000] + tokens[1000:][::-1]
    (tmp_path / "vocab.txt").write_text("\n".join(shuffled) + "\n", encoding="utf-8")
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=len(tokens))).save_pretrained(
        tmp_path / "reordered", tokenizer=BertTokenizer.from_pretrained(tmp_path / "vocab.txt"))
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=100)).save_pretrained(tmp_path / "small")
    for model, message in (("reordered", f"its vocabulary is not the one {data_dir} was prepared with"),
                           ("small", f"its vocabulary has 100 pieces, the prepared data {len(tokenizer)}")):
        model = tmp_path / model
        for option, command in (
                ("--init-from", ["pretrain", "train", data_dir, tmp_path / "run", "--init-from", model,
                                 "--max-steps", "2"]),
                ("MODEL_DIR", ["pretrain", "evaluate", model, data_dir]),
                ("--teacher", ["distill", "--task", "mlm", "--teacher", model, "--train", data_dir,
                               "--output", tmp_path / "student", "--max-steps", "2"])):
            result = CliRunner().invoke(cli, list(map(str, command)))
            assert result.exit_code == 2 and f"{option} {model}: {message}" in result.output, result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "student").exists()


def test_a_model_with_fewer_positions_than_the_data_is_refused_naming_both(data_dir, tmp_path):
    """pretrain evaluate said `sequence of 128 tokens is longer than the model's max_position_embeddings (64);
    truncate it (max_length=64)`: neither folder, and an option the command lacks."""
    model = tmp_path / "short"
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=30522, max_position_embeddings=64)).save_pretrained(model)
    for option, command in (("MODEL_DIR", ["pretrain", "evaluate", model, data_dir]),
                            ("--init-from", ["pretrain", "train", data_dir, tmp_path / "run", "--init-from", model,
                                             "--max-steps", "2"])):
        result = CliRunner().invoke(cli, list(map(str, command)))
        assert result.exit_code == 2 and result.output == (
            f"error: {option} {model}: it has 64 positions (max_position_embeddings), fewer than the 128 tokens "
            f"{data_dir} was prepared for; prepare the data with --max-seq-length 64, or use a model with more "
            "positions\n"), result.output
    assert not (tmp_path / "run").exists()


def test_a_masking_rate_the_prediction_cap_cuts_is_a_warning(caplog):
    with caplog.at_level("WARNING", logger="bertforge.pretraining.shards"):
        PrepareOptions(masked_lm_prob=0.3).validate()
    assert ("--masked-lm-prob 0.3 of --max-seq-length 128 asks for 38 predictions a sequence, more than "
            "--max-predictions-per-seq 20: full sequences get 20 (15.6%)") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="bertforge.pretraining.shards"):
        PrepareOptions().validate()
    assert not caplog.records


def test_export_and_convert_write_a_new_folder_never_over_their_source_or_others_files(tmp_path):
    model = tmp_path / "model"
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=30522)).save_pretrained(model)
    from bertforge.tokenization import BertTokenizer

    BertTokenizer.from_pretrained().save_pretrained(model)
    weights = (model / "model.safetensors").read_bytes()
    result = CliRunner().invoke(cli, ["pretrain", "export", str(model), str(model)])
    assert result.exit_code == 2 and "would overwrite the input" in result.output
    assert (model / "model.safetensors").read_bytes() == weights
    run = tmp_path / "finetuned"  # a fine-tuning run's folder: its model beside its logs
    run.mkdir()
    for name in ("config.json", "metrics.json", "train_log.csv"):
        (run / name).write_text("{}")
    for command in (["pretrain", "export", str(model), str(run)], ["convert", str(model), str(run)]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2 and "holds metrics.json, train_log.csv, which this command does not write" \
            in result.output, result.output
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.json", "train_log.csv"]
    assert CliRunner().invoke(cli, ["pretrain", "export", str(model), str(tmp_path / "half")]).exit_code == 0
    assert CliRunner().invoke(cli, ["pretrain", "export", str(model), str(tmp_path / "half"),
                                    "--dtype", "bfloat16"]).exit_code == 0  # an earlier export is replaced


def test_every_command_that_reads_a_model_takes_a_file_of_its_folder(data_dir, tmp_path):
    """pretrain train --init-from and the MODEL_DIR of pretrain evaluate and export were click directories: given
    model/config.json, which predict --model takes, they stopped at click's `Directory '.../config.json' is a file.`
    convert took the file but read it as a TensorFlow checkpoint (`config.json.index: cannot read`)."""
    from bertforge.tokenization import BertTokenizer

    model = tmp_path / "model"
    BertForPreTraining(BertConfig.from_size("tiny", vocab_size=30522)).save_pretrained(model, BertTokenizer.from_pretrained())
    config_file = str(model / "config.json")
    result = CliRunner().invoke(cli, ["pretrain", "evaluate", config_file, str(data_dir), "--instances", "8"])
    assert result.exit_code == 0 and json.loads(result.output)["instances"] == 8, result.output
    for command in (["pretrain", "export", "--dtype", "float32"], ["convert"]):
        result = CliRunner().invoke(cli, [*command, config_file, str(tmp_path / "out")])
        assert result.exit_code == 0, (command, result.output)
        assert load_file(tmp_path / "out" / "model.safetensors").keys() == load_file(model / "model.safetensors").keys()
    result = CliRunner().invoke(cli, ["pretrain", "train", str(data_dir), str(tmp_path / "run"), "--init-from",
                                      config_file, "--max-steps", "1", "--batch-size", "2"])
    assert result.exit_code == 0 and (tmp_path / "run" / "final" / "config.json").is_file(), result.output

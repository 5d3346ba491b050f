"""Pre-training data, `pretrain prepare`: the NSP instances of SPEC §3, the statistics of instances and masks over
many of them, dynamic and static masks; bad input named in one line or a warning (corpus files, hard-wrapped prose,
long sentences, a chunk of one document, a damaged data directory, a masking rate the prediction cap cuts)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.errors import InputError
from bertforge.pretraining import (IS_NEXT, NOT_NEXT, MaskingConfig, PrepareOptions, PretrainingData, create_instances,
                                   mask_sequence, prepare, read_documents, truncate_seq_pair)
from bertforge.pretraining.instances import tokenize_documents

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_a_corpus_file_given_twice_is_refused_naming_it(tmp_path, tokenizer):
    """Its documents were read, and made into instances, twice without a word."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("One sentence here.\nAnother one there.\n\nA second document.\nIt ends.\n")
    (tmp_path / "sub").mkdir()
    result = CliRunner().invoke(cli, ["pretrain", "prepare", str(corpus), str(tmp_path / "sub" / ".." / "c.txt"),
                                      str(tmp_path / "data")])
    assert result.exit_code == 2 and result.output.strip() == \
        f"error: CORPUS {tmp_path / 'sub' / '..' / 'c.txt'}: the same file given twice (as {corpus} too); it would " \
        f"be counted twice: give it once", result.output
    with pytest.raises(InputError, match=r"^CORPUS .*c\.txt: the same file given twice; "):
        prepare([corpus, corpus], tmp_path / "data", tokenizer, PrepareOptions(), progress=False)
    assert not (tmp_path / "data").exists()


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


def test_a_masking_rate_the_prediction_cap_cuts_is_a_warning(caplog):
    with caplog.at_level("WARNING", logger="bertforge.pretraining.shards"):
        PrepareOptions(masked_lm_prob=0.3).validate()
    assert ("--masked-lm-prob 0.3 of --max-seq-length 128 asks for 38 predictions a sequence, more than "
            "--max-predictions-per-seq 20: full sequences get 20 (15.6%)") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="bertforge.pretraining.shards"):
        PrepareOptions().validate()
    assert not caplog.records

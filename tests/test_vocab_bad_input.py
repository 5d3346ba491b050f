"""Bad input to vocabulary training: an empty corpus, a vocabulary smaller than the alphabet, unknown algorithms
and options out of range, and corpus files that are not UTF-8, not valid JSON Lines or gzip, or missing; each
refused in one line naming the file and line."""

from __future__ import annotations

import gzip
import json

import pytest

from bertforge.errors import ConfigError, InputError
from bertforge.io.readers import read_corpus
from bertforge.tokenization.trainers import train_bpe, train_byte_level_bpe, train_vocab, train_wordpiece
from vocab_helpers import SPEC_TEXT


@pytest.mark.parametrize("algorithm", ["bpe", "byte-bpe", "wordpiece"])
def test_empty_corpus(algorithm):
    for texts in ([], [""]) if algorithm == "byte-bpe" else ([], [""], ["  \n\t \x00"]):
        with pytest.raises(InputError, match="corpus is empty"):
            train_vocab(algorithm, texts)
    # To byte-level BPE whitespace is text like any other.
    if algorithm == "byte-bpe":
        assert train_vocab(algorithm, ["  \n\t "] * 2, vocab_size=262).merges == [("Ġ", "Ġ")]


def test_vocab_size_smaller_than_alphabet():
    with pytest.raises(ConfigError, match=r"--vocab-size 12 .* 5 special tokens plus the 11 symbols .* at least 16 "
                                          r"\(or cap the alphabet with --limit-alphabet\)"):
        train_bpe(SPEC_TEXT, 12)
    with pytest.raises(ConfigError, match="at least 261"):
        train_byte_level_bpe(SPEC_TEXT, 260)


def test_unknown_algorithm_and_bad_options():
    with pytest.raises(ConfigError, match="unknown algorithm 'sentencepiece': choose one of wordpiece, bpe, byte-bpe"):
        train_vocab("sentencepiece", SPEC_TEXT)
    with pytest.raises(ConfigError, match="--min-frequency -1: must be an integer, 0 or more"):
        train_bpe(SPEC_TEXT, 100, min_frequency=-1)
    with pytest.raises(ConfigError, match="--vocab-size 0: must be an integer from 1 to 10,000,000"):
        train_bpe(SPEC_TEXT, 0)
    with pytest.raises(ConfigError, match="--limit-alphabet 0: must be a positive integer"):
        train_wordpiece(SPEC_TEXT, 100, limit_alphabet=0)
    with pytest.raises(ConfigError, match=r"needs the special tokens .* missing: \[MASK\]"):
        train_wordpiece(SPEC_TEXT, 100, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])


@pytest.mark.parametrize("algorithm, tokens, message", [
    ("bpe", ["x"], "--special-token x: BPE needs its unknown token [UNK] among the special tokens; give "
                   "--special-token [UNK] too"),
    ("wordpiece", ["x", "[PAD]"], "--special-token x [PAD]: a WordPiece vocabulary for BertTokenizer needs the "
                                  "special tokens [PAD] [UNK] [CLS] [SEP] [MASK]; missing: [UNK] [CLS] [SEP] [MASK]"),
])
def test_special_tokens_that_cannot_make_the_vocabulary_name_the_option(tmp_path, algorithm, tokens, message):
    """The BPE message said "the special tokens ['x']", naming no option."""
    from click.testing import CliRunner

    from bertforge.cli.main import cli

    corpus = tmp_path / "c.txt"
    corpus.write_text(SPEC_TEXT[0], encoding="utf-8")
    result = CliRunner().invoke(cli, ["train-vocab", "--algorithm", algorithm, "--input", str(corpus), "--output",
                                      str(tmp_path / "out"), *(a for token in tokens for a in ("--special-token", token))])
    assert result.exit_code == 2 and result.output.strip() == f"error: {message}", result.output
    assert not (tmp_path / "out").exists()


def test_an_input_file_given_twice_is_refused_naming_it_and_the_option(tmp_path):
    """Its words were counted twice without a word, passing --min-frequency they do not reach."""
    from click.testing import CliRunner

    from bertforge.cli.main import cli

    corpus = tmp_path / "c.txt"
    corpus.write_text(SPEC_TEXT[0], encoding="utf-8")
    result = CliRunner().invoke(cli, ["train-vocab", "--input", str(corpus), "--input", str(corpus), "--output",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.strip() == \
        f"error: --input {corpus}: the same file given twice; it would be counted twice: give it once", result.output
    assert not (tmp_path / "out").exists()


def test_non_utf8_file_names_file_and_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\nna\u00efve\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.txt:2: not UTF-8 text \(byte 0xef at byte 3 of the line\)"):
        list(read_corpus([path]))
    gz = tmp_path / "latin1.jsonl.gz"
    with gzip.open(gz, "wb") as f:
        f.write(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"latin1\.jsonl\.gz:2: not UTF-8 text \(byte 0xe9 at byte 14 of the line\)"):
        list(read_corpus([gz]))


def test_corpus_formats_and_file_errors(tmp_path):
    texts = ["first book\nwith two lines", "second ünïcode book"]
    (tmp_path / "c.txt").write_text("\n".join(texts), encoding="utf-8")
    with gzip.open(tmp_path / "c.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(texts))
    records = "".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts))
    (tmp_path / "c.jsonl").write_text(records + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(records)
    assert "".join(read_corpus([tmp_path / "c.txt"])) == "\n".join(texts)
    assert "".join(read_corpus([tmp_path / "c.txt.gz"])) == "\n".join(texts)
    assert list(read_corpus([tmp_path / "c.jsonl", tmp_path / "c.jsonl.gz"])) == texts * 2
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl:2: expected a JSON object with a string \"text\" field"):
        list(read_corpus([tmp_path / "bad.jsonl"]))
    (tmp_path / "broken.jsonl").write_text('{"text": "a"\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"broken\.jsonl:1: not valid JSON"):
        list(read_corpus([tmp_path / "broken.jsonl"]))
    with pytest.raises(InputError, match=r"missing\.txt: no such file"):
        read_corpus([tmp_path / "c.txt", tmp_path / "missing.txt"])
    (tmp_path / "fake.txt.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match=r"fake\.txt\.gz: not a valid gzip file"):
        list(read_corpus([tmp_path / "fake.txt.gz"]))

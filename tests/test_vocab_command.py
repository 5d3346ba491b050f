"""The `train-vocab` command: the files it writes and their use by `tokenize`, its one-line errors (each file
named once), and its refusal to overwrite a model's vocabulary."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bertforge import BertTokenizer
from bertforge.errors import BertforgeError
from bertforge.io.readers import read_corpus
from bertforge.tokenization.trainers import train_vocab
from vocab_helpers import SPEC_TEXT


def test_cli_trains_and_writes_files(tmp_path):
    from bertforge.cli.train_vocab import train_vocab as command

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SPEC_TEXT[0] + "\n", encoding="utf-8")
    result = CliRunner().invoke(command, ["--algorithm", "bpe", "--vocab-size", "15", "--min-frequency", "1",
                                          "--special-token", "[UNK]", "--input", str(corpus),
                                          "--output", str(tmp_path / "bpe"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "bpe: 15 tokens (1 special, 11 alphabet, 3 merges)" in result.output
    assert (tmp_path / "bpe" / "merges.txt").read_text().split("\n")[1:4] == ["s t", "m e", "me n"]
    # the SPEC's encoding example, from the command line, and a clear word where a BERT model is expected
    from bertforge.cli.main import cli

    result = CliRunner().invoke(cli, ["tokenize", "--model", str(tmp_path / "bpe"), "mean bear"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tokens"] == ["me", "a", "n", "b", "e", "a", "[UNK]"]
    with pytest.raises(BertforgeError, match=r"no vocab.txt or tokenizer.json: it holds a BPE vocabulary"):
        BertTokenizer.from_pretrained(tmp_path / "bpe")
    config = tmp_path / "bpe" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "tokenizer_class": "Unigram"}))
    result = CliRunner().invoke(cli, ["tokenize", "--model", str(tmp_path / "bpe"), "mean"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"{config}: tokenizer_class 'Unigram' is not one of BPE, ByteLevelBPE" in result.output

    result = CliRunner().invoke(command, ["--input", str(corpus), "--output", str(tmp_path / "wp"),
                                          "--vocab-size", "100", "--min-frequency", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "note: no pair seen at least 1 times was left" in result.output
    assert BertTokenizer.from_pretrained(tmp_path / "wp").tokenize("camel") == ["camel"]


def test_cli_errors(tmp_path):
    from bertforge.cli.main import cli

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\n")
    result = CliRunner().invoke(cli, ["train-vocab", "--input", str(bad), "--output", str(tmp_path / "out"),
                                      "--no-progress"])
    assert result.exit_code == 2
    assert "error: " in result.output and "bad.txt:2: not UTF-8 text (byte 0xff at byte 1 of the line)" in result.output
    result = CliRunner().invoke(cli, ["train-vocab", "--algorithm", "unigram", "--input", str(bad),
                                      "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and "'unigram' is not one of 'wordpiece', 'bpe', 'byte-bpe'" in result.output
    with pytest.raises(BertforgeError):
        train_vocab("bpe", read_corpus([bad]))


def test_cli_names_each_file_once(tmp_path):
    """Reading errors name their file and line already; only an empty corpus needs the files named."""
    from bertforge.cli.main import cli

    broken = tmp_path / "bad.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    for path, message in ((broken, f"error: {broken}:2: not valid JSON"),
                          (empty, f"error: {empty}: the corpus is empty: no words to learn a vocabulary from")):
        result = CliRunner().invoke(cli, ["train-vocab", "--input", str(path), "--output", str(tmp_path / "out"),
                                          "--no-progress"])
        assert result.exit_code == 2 and message in result.output and result.output.count(path.name) == 1, \
            result.output


def test_cli_refuses_to_overwrite_a_models_vocabulary_and_alphabet_limits_byte_bpe_has_not(tmp_path):
    """A model's weights are indexed by its vocabulary: a new one written into its folder breaks it."""
    from bertforge.cli.main import cli

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n" * 20, encoding="utf-8")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    (model / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["train-vocab", "--input", str(corpus), "--output", str(model),
                                      "--vocab-size", "60", "--no-progress"])
    assert result.exit_code == 2 and f"error: --output {model}: holds a model (config.json)" in result.output
    assert (model / "vocab.txt").read_text(encoding="utf-8") == "[PAD]\n"
    result = CliRunner().invoke(cli, ["train-vocab", "--input", str(corpus), "--output", str(tmp_path / "bytes"),
                                      "--algorithm", "byte-bpe", "--limit-alphabet", "30", "--vocab-size", "300"])
    assert result.exit_code == 2 and "error: --limit-alphabet applies to wordpiece and bpe" in result.output
    assert not (tmp_path / "bytes").exists()

"""Trained vocabularies as files: the byte-level round trip is exact, the saved BPE and byte-level BPE files
encode the same in the `tokenizers` library, a WordPiece vocab.txt loads in BertTokenizer, a saved BPE loads
back, and a damaged BPE folder is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertforge import BertTokenizer
from bertforge.tokenization.bpe import BPE, ByteLevelBPE
from bertforge.tokenization.trainers import DEFAULT_SPECIAL_TOKENS, train_bpe, train_byte_level_bpe, train_vocab
from vocab_helpers import HARD_STRINGS, SPEC_TEXT


@pytest.fixture(scope="module")
def trained(train_lines, tmp_path_factory) -> dict[str, Path]:
    """A 2,000-piece vocabulary of each kind, trained on the first 4,000 lines (TRAIN_LINES) and saved."""
    directories = {}
    for algorithm in ("bpe", "byte-bpe", "wordpiece"):
        directory = tmp_path_factory.mktemp(algorithm)
        train_vocab(algorithm, train_lines, vocab_size=2000).save_pretrained(directory)
        directories[algorithm] = directory
    return directories


def test_byte_level_round_trip_is_exact(trained, check_lines):
    tokenizer = ByteLevelBPE.from_pretrained(trained["byte-bpe"])
    assert len(tokenizer.merges) == 2000 - 256 - len(DEFAULT_SPECIAL_TOKENS)
    for text in check_lines + HARD_STRINGS:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
    assert len(tokenizer.encode(check_lines[0])) < len(check_lines[0].encode("utf-8"))  # merges were applied


def test_bpe_files_encode_the_same_in_tokenizers(trained, check_lines):
    import tokenizers

    ours = BPE.from_pretrained(trained["bpe"])
    vocab, merges = (str(trained["bpe"] / name) for name in ("vocab.json", "merges.txt"))
    reference = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(vocab, merges, unk_token="[UNK]"))
    reference.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    reference.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    reference.add_special_tokens(list(DEFAULT_SPECIAL_TOKENS))
    texts = check_lines + HARD_STRINGS + ["a [MASK] b[SEP]"]
    expected = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    assert [ours.encode(text) for text in texts] == expected
    assert ours.unk_token in ours.tokenize(HARD_STRINGS[0])  # emoji are outside this alphabet


def test_byte_level_files_encode_the_same_in_tokenizers(trained, check_lines):
    import tokenizers

    ours = ByteLevelBPE.from_pretrained(trained["byte-bpe"])
    reference = tokenizers.ByteLevelBPETokenizer(str(trained["byte-bpe"] / "vocab.json"),
                                                 str(trained["byte-bpe"] / "merges.txt"))
    reference.add_special_tokens(list(DEFAULT_SPECIAL_TOKENS))
    texts = check_lines + HARD_STRINGS + ["a [MASK] b[SEP]"]
    expected = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    assert [ours.encode(text) for text in texts] == expected


def test_byte_level_normalisation_options_match_tokenizers(train_lines, check_lines, tmp_path):
    import tokenizers

    ours = train_byte_level_bpe(train_lines[:3000], 600, lowercase=True, strip_accents=True)
    ours.save_pretrained(tmp_path)
    reference = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(str(tmp_path / "vocab.json"),
                                                                     str(tmp_path / "merges.txt")))
    reference.normalizer = tokenizers.normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=True)
    reference.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    texts = check_lines[:2000] + HARD_STRINGS + ["Crème BRÛLÉE ΣΑΣ İstanbul"]
    assert [ours.encode(t) for t in texts] == [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    assert ours.decode(ours.encode("Crème BRÛLÉE")) == "creme brulee"


def test_wordpiece_vocab_txt_loads_in_bert_tokenizer(trained, check_lines):
    lines = (trained["wordpiece"] / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert lines[:5] == list(DEFAULT_SPECIAL_TOKENS) and len(lines) == 2000 + 1  # one token a line
    tokenizer = BertTokenizer.from_pretrained(trained["wordpiece"])
    assert tokenizer.do_lower_case
    encoded = tokenizer(check_lines[:2000])["input_ids"]
    pieces = sum(len(ids) - 2 for ids in encoded)
    unknown = sum(ids.count(tokenizer.vocab["[UNK]"]) for ids in encoded)
    words = sum(len(tokenizer.basic.tokenize(line)) for line in check_lines[:2000])
    assert unknown < 0.01 * words and words < pieces < 4 * words
    import tokenizers

    reference = tokenizers.BertWordPieceTokenizer(str(trained["wordpiece"] / "vocab.txt"), lowercase=True)
    assert [e.ids for e in reference.encode_batch(check_lines[:2000])] == encoded


def test_save_and_load_round_trip(tmp_path):
    bpe = train_bpe(SPEC_TEXT + ["naïve Café"], 30, min_frequency=1, lowercase=False)
    bpe.save_pretrained(tmp_path)
    loaded = BPE.from_pretrained(tmp_path)
    assert (loaded.vocab, loaded.merges, loaded.lowercase) == (bpe.vocab, bpe.merges, False)
    assert loaded.tokenize("Café camel") == bpe.tokenize("Café camel")


def test_a_damaged_bpe_folder_is_named(tmp_path):
    """A BPE folder's files are read as every settings file is: a directory where vocab.json should be was an
    IsADirectoryError, a tokenizer_config.json holding a list an AttributeError; merges.txt's lines were "FILE, line
    N", one not UTF-8 "(byte offset N)"."""
    from bertforge.errors import CheckpointError
    from bertforge.tokenization.bpe import load_merges_tokenizer

    bpe = train_bpe(SPEC_TEXT, 30, min_frequency=1)
    for name, damage, message in (("vocab", lambda f: (f / "vocab.json").unlink() or (f / "vocab.json").mkdir(),
                                   "vocab.json: is a directory, not a file"),
                                  ("config", lambda f: (f / "tokenizer_config.json").write_text("[]"),
                                   "tokenizer_config.json: a JSON list, not a JSON object"),
                                  # FILE:LINE, as the data files' readers name a line
                                  ("merges", lambda f: (f / "merges.txt").write_bytes(b"#version: 0.2\nc \xe9\n"),
                                   r"merges.txt:2: not UTF-8 text \(byte 0xe9 at byte 3 of the line\); .*"),
                                  ("merge", lambda f: (f / "merges.txt").write_text("#version: 0.2\na b\nab\n"),
                                   "merges.txt:3: expected two tokens separated by one space, got 'ab'")):
        folder = tmp_path / name
        bpe.save_pretrained(folder)
        damage(folder)
        with pytest.raises(CheckpointError, match=f"^{folder}/{message}$"):
            load_merges_tokenizer(folder)

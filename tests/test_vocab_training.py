"""Vocabulary training (SPEC §1 "Training a vocabulary"): the worked examples, the incremental
trainers against a recount-everything reference, the byte-level round trip, interoperability
with the `tokenizers` library and BertTokenizer, bad input, and the `train-vocab` command."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from bertforge import BertTokenizer
from bertforge.errors import BertforgeError, ConfigError, InputError
from bertforge.tokenization import byte_level, merging
from bertforge.tokenization.basic import BasicTokenizer
from bertforge.tokenization.bpe import BPE, ByteLevelBPE
from bertforge.io.readers import read_corpus
from bertforge.tokenization.trainers import (DEFAULT_SPECIAL_TOKENS, count_bert_words, count_byte_level_words,
                                             train_bpe, train_byte_level_bpe, train_vocab, train_wordpiece)
from conftest import gutenberg_lines

SPEC_CORPUS = {"cost": 2, "best": 2, "menu": 1, "men": 1, "camel": 1}
SPEC_TEXT = [" ".join(word for word, n in SPEC_CORPUS.items() for _ in range(n))]

HARD_STRINGS = [
    "I 🥰 emoji 😀✨ and ❤️ hearts, 👩‍👩‍👧 family, 🇫🇷 flag",
    "北京欢迎你 and 東京タワー, 한국어 텍스트",
    "e\u0301 combining acute, a\u0308\u0304 stacked marks, नमस्ते दुनिया",
    "tab\there\nnewline\rcarriage\x0bvtab\x0cform feed\x00nul\x1c\x1d\x1e\x1fseparators\x85nel\x7fdel",
    "zero\u200bwidth\u200djoiner\ufeffbom and\u00a0nbsp\u2028line\u2029para\u3000ideographic space",
    "  leading, trailing and   runs of spaces   \n\n\n  ",
    "can't won't it's they're we've I'm you'll he'd 'quoted' ''",
    "ΣΑΣ İstanbul ǅemal ﬁne ½ ² ① Ⅻ ٣ ๓ 1,234.5e-6",
    "\ue000 private use, \U0001d400 math bold A, \U00020000 CJK extension B",
    "",
]


# Slices of the Gutenberg fixture (three books), so that these tests run the same everywhere.
TRAIN_LINES = 4_000  # about 230 kB
CHECK_LINES = 1_900


@pytest.fixture(scope="module")
def train_lines() -> list[str]:
    return gutenberg_lines(TRAIN_LINES)


@pytest.fixture(scope="module")
def check_lines() -> list[str]:
    """Lines the vocabularies were not trained on."""
    return gutenberg_lines(CHECK_LINES, skip=TRAIN_LINES)


# --- SPEC §1 examples ---------------------------------------------------------------------------

def test_spec_bpe_example():
    # Size 14 counts the learned vocabulary; BPE also needs its [UNK], hence 15.
    bpe = train_bpe(SPEC_TEXT, vocab_size=15, special_tokens=["[UNK]"], min_frequency=1)
    assert set(bpe.vocab) - {"[UNK]"} == {"a", "b", "c", "e", "l", "m", "n", "o", "s", "t", "u", "st", "me", "men"}
    assert bpe.merges == [("s", "t"), ("m", "e"), ("me", "n")]
    assert bpe.tokenize("mean") == ["me", "a", "n"]
    # The seed shows `be a <UNK>`, but `be` is not in its own vocabulary: `r` is unknown.
    assert bpe.tokenize("bear") == ["b", "e", "a", "[UNK]"]


def rust_bpe_merges(lines: list[str], vocab_size: int, min_frequency: int) -> list[tuple[str, str]]:
    """The merges the `tokenizers` BpeTrainer learns with BERT's normaliser and pre-tokenizer."""
    import tokenizers

    reference = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    reference.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    reference.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    reference.train_from_iterator(lines, tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(DEFAULT_SPECIAL_TOKENS),
        show_progress=False))
    return [tuple(m) for m in json.loads(reference.to_str())["model"]["merges"]]


def pair_counts_after(word_counts: Counter, merges: list[tuple[str, str]]) -> Counter:
    """Pair counts once `merges` are applied to every word, recounted from the characters."""
    counts = Counter()
    for word, n in word_counts.items():
        pieces = list(word)
        for a, b in merges:
            i = 0
            while i + 1 < len(pieces):
                if pieces[i] == a and pieces[i + 1] == b:
                    pieces[i:i + 2] = [a + b]
                i += 1
        for pair in zip(pieces, pieces[1:]):
            counts[pair] += n
    return counts


@pytest.mark.parametrize("corpus", ["spec", "gutenberg"])
def test_bpe_merges_equal_tokenizers_until_a_tie(corpus):
    """Merge for merge the same as the Rust trainer up to the first tie in counts, where both take a
    pair of the top count: we the one with the larger ids, it the smaller (SPEC text: `me n` and
    `b e`, with `c o`, `o st` and `e st`, are all seen twice after `s t` and `m e`)."""
    lines = SPEC_TEXT if corpus == "spec" else gutenberg_lines(2000)
    size = 20 if corpus == "spec" else 600
    ours = train_bpe(lines, size, min_frequency=2)
    ours_merges, theirs = [tuple(m) for m in ours.merges], rust_bpe_merges(lines, size, 2)
    tie = next(i for i, (a, b) in enumerate(zip(ours_merges, theirs)) if a != b)
    assert tie >= (2 if corpus == "spec" else 10)
    if corpus == "spec":
        assert (ours_merges[tie], theirs[tie]) == (("me", "n"), ("b", "e"))
    counts = pair_counts_after(count_bert_words(lines), ours_merges[:tie])
    top = max(counts.values())
    assert counts[ours_merges[tie]] == counts[theirs[tie]] == top
    ours_ids, their_ids = ([ours.vocab[symbol] for symbol in pair] for pair in (ours_merges[tie], theirs[tie]))
    assert ours_ids > their_ids


def test_spec_byte_level_bytes():
    no_merges = train_byte_level_bpe(SPEC_TEXT, vocab_size=256, special_tokens=[])
    assert no_merges.merges == []
    assert [byte_level.symbols_to_bytes(t).hex() for t in no_merges.tokenize("best")] == ["62", "65", "73", "74"]
    assert [byte_level.symbols_to_bytes(t).hex() for t in no_merges.tokenize("你好")] == [
        "e4", "bd", "a0", "e5", "a5", "bd"]
    assert no_merges.decode(no_merges.encode("你好")) == "你好"


def test_spec_wordpiece_stem(tmp_path):
    # The seed writes the vocabulary without `##`; every piece may also continue a word.
    pieces = ["a", "b", "c", "e", "l", "m", "o", "s", "t", "u", "st"]
    tokens = [*DEFAULT_SPECIAL_TOKENS, *pieces, *("##" + p for p in pieces)]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n")
    assert BertTokenizer.from_pretrained(tmp_path / "vocab.txt").tokenize("stem") == ["st", "##e", "##m"]


def test_wordpiece_merges_by_likelihood_not_frequency():
    bpe = train_bpe(SPEC_TEXT, vocab_size=13, special_tokens=["[UNK]"], min_frequency=1)
    assert bpe.merges == [("s", "t")]  # the most frequent pair: 4 times
    wordpiece = train_wordpiece(SPEC_TEXT, vocab_size=40, min_frequency=1)
    learned = [t for t in wordpiece.vocab if t not in DEFAULT_SPECIAL_TOKENS and len(t.removeprefix("##")) > 1]
    # score = count(ab) / (count(a) count(b)): `##a ##m` (camel only) scores 1 / (1 * 1) = 1,
    # `##n ##u` 1 / (2 * 1); `##s ##t` only 4 / (4 * 4), so WordPiece learns it much later.
    assert learned[:2] == ["##am", "##nu"]
    assert learned.index("##st") > 4
    assert wordpiece.tokenize("camel menu") == ["camel", "menu"]


# --- the incremental trainers against a reference that recounts everything ----------------------

def reference_merges(word_counts: dict[str, int], symbols: dict[str, list[str]], vocab: list[str], vocab_size: int,
                     min_frequency: int, likelihood: bool) -> list[str]:
    """The textbook loop: recount every pair (and symbol) from scratch before each merge."""
    vocab = list(vocab)
    words = {word: list(s) for word, s in symbols.items()}
    while len(vocab) < vocab_size:
        pair_counts, symbol_counts = Counter(), Counter()
        for word, pieces in words.items():
            for piece in pieces:
                symbol_counts[piece] += word_counts[word]
            for pair in zip(pieces, pieces[1:]):
                pair_counts[pair] += word_counts[word]
        ids = {token: i for i, token in enumerate(vocab)}
        eligible = [(pair, n) for pair, n in pair_counts.items() if n >= max(min_frequency, 1)]
        if not eligible:
            break
        if likelihood:
            (a, b), _ = max(eligible, key=lambda e: (e[1] / (symbol_counts[e[0][0]] * symbol_counts[e[0][1]]),
                                                      ids[e[0][0]], ids[e[0][1]]))
        else:
            (a, b), _ = max(eligible, key=lambda e: (e[1], ids[e[0][0]], ids[e[0][1]]))
        merged = a + b.removeprefix("##") if likelihood else a + b
        if merged not in ids:
            vocab.append(merged)
        for word, pieces in words.items():
            out, i = [], 0
            while i < len(pieces):
                if pieces[i] == a and i + 1 < len(pieces) and pieces[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(pieces[i])
                    i += 1
            words[word] = out
    return vocab


@pytest.mark.parametrize("min_frequency, loose_floors", [(1, False), (3, True)])
def test_trainers_equal_the_recounting_reference(min_frequency, loose_floors, monkeypatch):
    if loose_floors:
        # Every symbol gets a floor half its count: stale bounds everywhere, many candidates.
        monkeypatch.setattr(merging, "EXACT_UP_TO_PAIRS", 0)
        monkeypatch.setattr(merging, "FLOOR_SLACK", 2)
    lines = gutenberg_lines(800, skip=5000) + HARD_STRINGS
    size = 400
    words = count_bert_words(lines)
    bpe = train_bpe(lines, size, min_frequency=min_frequency)
    vocab = [*DEFAULT_SPECIAL_TOKENS, *sorted({c for w in words for c in w})]
    assert sorted(bpe.vocab, key=bpe.vocab.get) == reference_merges(
        words, {w: list(w) for w in words}, vocab, size, min_frequency, likelihood=False)

    wordpiece = train_wordpiece(lines, size, min_frequency=min_frequency)
    split = {w: [w[0], *("##" + c for c in w[1:])] for w in words}
    vocab = [*DEFAULT_SPECIAL_TOKENS, *sorted({s for pieces in split.values() for s in pieces})]
    assert list(wordpiece.vocab) == reference_merges(words, split, vocab, size, min_frequency, likelihood=True)

    pieces = count_byte_level_words(lines)
    byte_bpe = train_byte_level_bpe(lines, 256 + 5 + 150, min_frequency=min_frequency)
    vocab = [*DEFAULT_SPECIAL_TOKENS, *sorted(byte_level.bytes_to_unicode().values())]
    assert sorted(byte_bpe.vocab, key=byte_bpe.vocab.get) == reference_merges(
        pieces, {p: list(p) for p in pieces}, vocab, 256 + 5 + 150, min_frequency, likelihood=False)


def test_wordpiece_says_when_the_corpus_commonest_words_stay_split(caplog):
    """The likelihood score spends a low --min-frequency on rare words: "the" stays in pieces."""
    from conftest import sst2_sentences

    lines = sst2_sentences(1000)
    with caplog.at_level("WARNING", logger="bertforge.tokenization.trainers"):
        split = train_vocab("wordpiece", lines, vocab_size=800, min_frequency=2)
    assert "the" not in split.vocab
    assert "wordpiece: 63 of the corpus's 100 most frequent words are not whole tokens ('the', 'and'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="bertforge.tokenization.trainers"):
        whole = train_vocab("wordpiece", lines, vocab_size=800, min_frequency=10)
    assert "the" in whole.vocab and not caplog.records


def test_training_is_deterministic_and_order_free(train_lines):
    lines = train_lines[:5000]
    first = train_wordpiece(lines, 800)
    assert list(train_wordpiece(lines, 800).vocab) == list(first.vocab)
    assert list(train_wordpiece(lines[::-1], 800).vocab) == list(first.vocab)
    bpe = train_bpe(lines, 800)
    assert train_bpe(lines[::-1], 800).merges == bpe.merges


# --- word counting and pre-tokenization -----------------------------------------------------------

@pytest.mark.parametrize("lowercase", [True, False])
def test_word_counts_equal_the_basic_tokenizer(lowercase, check_lines):
    texts = check_lines[:3000] + HARD_STRINGS
    basic = BasicTokenizer(lowercase)
    assert count_bert_words(texts, lowercase) == Counter(w for text in texts for w in basic.tokenize(text))


def test_byte_level_pretokenization_equals_tokenizers(check_lines):
    from tokenizers import pre_tokenizers

    reference = pre_tokenizers.ByteLevel(add_prefix_space=False)
    texts = check_lines[:3000] + HARD_STRINGS + ["\n".join(check_lines[:200])]
    for text in texts:
        ours = [byte_level.to_symbols(piece) for piece in byte_level.pretokenize(text)]
        assert ours == [piece for piece, _ in reference.pre_tokenize_str(text)], text
        assert byte_level.pretokenize(text) == byte_level.pretokenizer().findall(text)
    expected = Counter(byte_level.to_symbols(p) for text in texts for p in byte_level.pretokenizer().findall(text))
    assert count_byte_level_words(texts) == expected


# --- trained vocabularies: round trip, files, interoperability ----------------------------------------

@pytest.fixture(scope="module")
def trained(train_lines, tmp_path_factory) -> dict[str, Path]:
    """A 2,000-piece vocabulary of each kind, trained on the first 40,000 lines and saved."""
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
    """A BPE folder's JSON files are read as every settings file is: a directory where vocab.json should be
    was an IsADirectoryError, a tokenizer_config.json holding a list an AttributeError."""
    from bertforge.errors import CheckpointError
    from bertforge.tokenization.bpe import load_merges_tokenizer

    bpe = train_bpe(SPEC_TEXT, 30, min_frequency=1)
    for name, damage, message in (("vocab", lambda f: (f / "vocab.json").unlink() or (f / "vocab.json").mkdir(),
                                   "vocab.json: is a directory, not a file"),
                                  ("config", lambda f: (f / "tokenizer_config.json").write_text("[]"),
                                   "tokenizer_config.json: a JSON list, not a JSON object")):
        folder = tmp_path / name
        bpe.save_pretrained(folder)
        damage(folder)
        with pytest.raises(CheckpointError, match=f"^{folder}/{message}$"):
            load_merges_tokenizer(folder)


def test_limit_alphabet(tmp_path):
    text = ["aaaa bbb cc d ab ab abd"]
    bpe = train_bpe(text, 20, limit_alphabet=2, special_tokens=["[UNK]"], min_frequency=1)
    # `a` (7 times) and `b` (6) are kept; `c` and `d` cut words (`abd` counts as `ab`).
    assert list(bpe.vocab) == ["[UNK]", "a", "b", "ab", "aa", "bb", "bbb", "aaaa"]
    assert bpe.tokenize("abd") == ["ab", "[UNK]"]
    wordpiece = train_wordpiece(text, 40, limit_alphabet=2, min_frequency=1)
    assert not any("c" in t or "d" in t for t in wordpiece.vocab if t not in DEFAULT_SPECIAL_TOKENS)


# --- bad input --------------------------------------------------------------------------------------

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


# --- the command ----------------------------------------------------------------------------------

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


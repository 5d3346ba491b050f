"""Vocabulary training (SPEC §1 "Training a vocabulary"): the worked examples, merges against the `tokenizers`
trainer, the incremental trainers against a recount-everything reference, determinism, the alphabet limit,
and the word counts and byte-level pre-tokenization the trainers start from."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bertforge import BertTokenizer
from bertforge.tokenization import byte_level, merging
from bertforge.tokenization.basic import BasicTokenizer
from bertforge.tokenization.trainers import (DEFAULT_SPECIAL_TOKENS, count_bert_words, count_byte_level_words,
                                             train_bpe, train_byte_level_bpe, train_vocab, train_wordpiece)
from conftest import gutenberg_lines
from vocab_helpers import HARD_STRINGS, SPEC_TEXT


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


def test_limit_alphabet(tmp_path):
    text = ["aaaa bbb cc d ab ab abd"]
    bpe = train_bpe(text, 20, limit_alphabet=2, special_tokens=["[UNK]"], min_frequency=1)
    # `a` (7 times) and `b` (6) are kept; `c` and `d` cut words (`abd` counts as `ab`).
    assert list(bpe.vocab) == ["[UNK]", "a", "b", "ab", "aa", "bb", "bbb", "aaaa"]
    assert bpe.tokenize("abd") == ["ab", "[UNK]"]
    wordpiece = train_wordpiece(text, 40, limit_alphabet=2, min_frequency=1)
    assert not any("c" in t or "d" in t for t in wordpiece.vocab if t not in DEFAULT_SPECIAL_TOKENS)


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

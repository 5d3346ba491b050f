"""Train a vocabulary from a corpus: BPE, byte-level BPE and WordPiece.

All three follow SPEC §1: count the words of the corpus → split each distinct word into its
characters (or bytes) → repeatedly merge one adjacent pair of symbols into a new symbol until
the vocabulary has `vocab_size` entries. They differ in the words and in the pair they merge:

* **BPE** (`train_bpe`): the words of BERT's basic tokenizer; merge the most *frequent* pair.
* **Byte-level BPE** (`train_byte_level_bpe`): GPT-2's pre-tokens written as UTF-8 bytes (see
  `byte_level`); the alphabet is all 256 bytes; merge the most frequent pair.
* **WordPiece** (`train_wordpiece`): BERT's words, every symbol after the first of a word
  marked `##`; merge the pair with the highest likelihood gain
  ``score(a, b) = count(ab) / (count(a) · count(b))``, which favours pairs whose parts are rare
  on their own, not merely frequent pairs.

This module counts the words and sets up the alphabet; the merge loops are in `merging`.
Counts are kept up to date incrementally there: a merge rewrites only the words that hold the
pair (an index maps each pair to those words) and adjusts only the pair counts around each
occurrence; heaps with lazy deletion find the next pair.

Determinism and ties. Ids number the special tokens, then the alphabet in code-point order,
then each new token in the order it was learned. Among pairs with the same count (BPE) or the
same score (WordPiece) the pair with the *larger* ids wins, left id first, then right id, so a
tie goes to the pair built from the most recent merge. That is what makes the SPEC corpus
`(cost,2) (best,2) (menu,1) (men,1) (camel,1)` learn `st`, `me`, then `men` (of the pairs seen
twice, `me n` holds the newest symbol); the `tokenizers` library takes the smaller ids on a tie
and learns `be` third. The output depends only on the word counts, never on dictionary order.

`min_frequency`: a pair seen fewer times than this is never merged (BPE stops there).
`limit_alphabet`: keep only the most frequent characters (ties by code point); a character
outside the alphabet cuts a BPE word in two (it will encode as `[UNK]`), and drops the whole
word for WordPiece (which encodes such a word as a single `[UNK]`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from bertforge.errors import ConfigError, InputError
from bertforge.progress import progress_bar
from bertforge.tokenization import byte_level
from bertforge.tokenization.bert_words import BertWords
from bertforge.tokenization.bert_tokenizer import BertTokenizer
from bertforge.tokenization.bpe import BPE, ByteLevelBPE
from bertforge.tokenization.merging import CONTINUATION, SymbolPairs, learn_bpe, learn_wordpiece

logger = logging.getLogger(__name__)

ALGORITHMS = ("wordpiece", "bpe", "byte-bpe")
DEFAULT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Far above any real vocabulary (the largest BERTs have 250,000 pieces); a larger request is a typo,
# and the trainers allocate per requested token.
MAX_VOCAB_SIZE = 10_000_000


# --- word counting ----------------------------------------------------------------------------

def count_bert_words(texts: Iterable[str], lowercase: bool = True, strip_accents: bool | None = None,
                     show_progress: bool = False) -> Counter[str]:
    """How often each word of BERT's basic tokenizer occurs in `texts`: the whitespace chunks
    are counted first, then each distinct chunk is split into words once (see `bert_words`)."""
    splitter = BertWords(lowercase, strip_accents)
    words: Counter[str] = Counter()
    for chunk, n in _count_pieces(texts, splitter.chunks, show_progress).items():
        for word in splitter.words(chunk):
            words[word] += n
    return words


def count_byte_level_words(texts: Iterable[str], lowercase: bool = False, strip_accents: bool = False,
                           show_progress: bool = False) -> Counter[str]:
    """How often each GPT-2 pre-token occurs in `texts`, written as byte-level symbols."""
    units = _count_pieces(texts, lambda text: byte_level.pretokenize_units(
        byte_level.normalize(text, lowercase, strip_accents)), show_progress)
    pieces: Counter[str] = Counter()
    for unit, n in units.items():
        for piece in byte_level.pretokenize(unit):
            pieces[piece] += n
    return Counter({byte_level.to_symbols(piece): n for piece, n in pieces.items()})


def _count_pieces(texts: Iterable[str], split: Callable[[str], list[str]], show_progress: bool) -> Counter[str]:
    counts: Counter[str] = Counter()
    with progress_bar(desc="counting words", unit="char", unit_scale=True, disable=not show_progress) as bar:
        for text in texts:
            counts.update(split(text))
            bar.update(len(text))
    return counts


# --- from word counts to symbols ------------------------------------------------------------

def _alphabet(word_counts: Counter[str], limit_alphabet: int | None) -> set[str]:
    char_counts: Counter[str] = Counter()
    for word, n in word_counts.items():
        for char in word:
            char_counts[char] += n
    if limit_alphabet is None or len(char_counts) <= limit_alphabet:
        return set(char_counts)
    ranked = sorted(char_counts.items(), key=lambda item: (-item[1], item[0]))
    return {char for char, _ in ranked[:limit_alphabet]}


def _segments(word: str, alphabet: set[str]) -> list[str]:
    """The pieces of `word` between characters outside the alphabet."""
    pieces, start = [], 0
    for i, char in enumerate(word):
        if char not in alphabet:
            if start < i:
                pieces.append(word[start:i])
            start = i + 1
    if start < len(word):
        pieces.append(word[start:])
    return pieces


def _initial_vocab(special_tokens: Sequence[str], alphabet: Iterable[str]) -> list[str]:
    vocab = list(dict.fromkeys(special_tokens))
    vocab.extend(sorted(set(alphabet) - set(vocab)))
    return vocab


def _check_size(vocab: list[str], vocab_size: int, special_tokens: Sequence[str], hint: str = "") -> None:
    if vocab_size < len(vocab):
        specials = len(set(special_tokens))
        raise ConfigError(
            f"--vocab-size {vocab_size} is smaller than the {specials} special tokens plus the "
            f"{len(vocab) - specials} symbols of the alphabet: raise it to at least {len(vocab)}{hint}")


# --- the trainers ---------------------------------------------------------------------------

def _check_options(vocab_size: int, min_frequency: int, special_tokens: Sequence[str],
                   limit_alphabet: int | None) -> None:
    if not isinstance(vocab_size, int) or not 1 <= vocab_size <= MAX_VOCAB_SIZE:
        raise ConfigError(f"--vocab-size {vocab_size!r}: must be an integer from 1 to {MAX_VOCAB_SIZE:,}")
    if not isinstance(min_frequency, int) or min_frequency < 0:
        raise ConfigError(f"--min-frequency {min_frequency!r}: must be an integer, 0 or more")
    if limit_alphabet is not None and (not isinstance(limit_alphabet, int) or limit_alphabet < 1):
        raise ConfigError(f"--limit-alphabet {limit_alphabet!r}: must be a positive integer")
    if isinstance(special_tokens, str) or not all(isinstance(t, str) and t for t in special_tokens):
        raise ConfigError(f"--special-token: each must be a non-empty string, got {special_tokens!r}")


class EmptyCorpusError(InputError):
    """No words in the texts. The trainers see texts, not files: a caller that read files names them."""


def _require_words(word_counts: Counter[str]) -> None:
    if not word_counts:
        raise EmptyCorpusError("the corpus is empty: no words to learn a vocabulary from")
    logger.info("%d words, %d distinct", sum(word_counts.values()), len(word_counts))


def train_bpe(texts: Iterable[str], vocab_size: int = 30_000, *, min_frequency: int = 2,
              special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS, limit_alphabet: int | None = None,
              lowercase: bool = True, strip_accents: bool | None = None, unk_token: str = "[UNK]",
              show_progress: bool = False) -> BPE:
    """Character-level BPE over BERT's words (`strip_accents=None` follows `lowercase`)."""
    _check_options(vocab_size, min_frequency, special_tokens, limit_alphabet)
    if unk_token not in special_tokens:
        raise ConfigError(f"--special-token {' '.join(special_tokens)}: BPE needs its unknown token {unk_token} among "
                          f"the special tokens; give --special-token {unk_token} too")
    word_counts = count_bert_words(texts, lowercase, strip_accents, show_progress)
    _require_words(word_counts)
    alphabet = _alphabet(word_counts, limit_alphabet)
    vocab = _initial_vocab(special_tokens, alphabet)
    _check_size(vocab, vocab_size, special_tokens, " (or cap the alphabet with --limit-alphabet)")
    if limit_alphabet is not None:
        pieces: Counter[str] = Counter()
        for word, n in word_counts.items():
            for piece in _segments(word, alphabet):
                pieces[piece] += n
        word_counts = pieces
    pairs = _symbolize(word_counts, vocab, lambda word: word)
    merges = learn_bpe(pairs, vocab, vocab_size, min_frequency, show_progress)
    return BPE({token: i for i, token in enumerate(vocab)}, [(vocab[a], vocab[b]) for a, b in merges],
               unk_token=unk_token, lowercase=lowercase, strip_accents=strip_accents,
               special_tokens=list(dict.fromkeys(special_tokens)))


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int = 30_000, *, min_frequency: int = 2,
                         special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS, lowercase: bool = False,
                         strip_accents: bool = False, show_progress: bool = False) -> ByteLevelBPE:
    """Byte-level BPE; the alphabet is always the 256 bytes (so there is no `limit_alphabet`).
    Lower-casing and accent stripping are off by default so decoding gives back the text."""
    _check_options(vocab_size, min_frequency, special_tokens, None)
    word_counts = count_byte_level_words(texts, lowercase, strip_accents, show_progress)
    _require_words(word_counts)
    vocab = _initial_vocab(special_tokens, byte_level.bytes_to_unicode().values())
    _check_size(vocab, vocab_size, special_tokens)
    pairs = _symbolize(word_counts, vocab, lambda word: word)
    merges = learn_bpe(pairs, vocab, vocab_size, min_frequency, show_progress)
    return ByteLevelBPE({token: i for i, token in enumerate(vocab)}, [(vocab[a], vocab[b]) for a, b in merges],
                        lowercase=lowercase, strip_accents=strip_accents,
                        special_tokens=list(dict.fromkeys(special_tokens)))


def train_wordpiece(texts: Iterable[str], vocab_size: int = 30_000, *, min_frequency: int = 2,
                    special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS, limit_alphabet: int | None = None,
                    lowercase: bool = True, strip_accents: bool | None = None,
                    show_progress: bool = False) -> BertTokenizer:
    """WordPiece by likelihood gain; returns a `BertTokenizer` on the new vocabulary (special
    tokens first), so `save_pretrained(dir)` writes the `vocab.txt` BERT loads. The special
    tokens must include BERT's five: [PAD] [UNK] [CLS] [SEP] [MASK].

    The score favours pairs whose parts are rare, so with a low `min_frequency` most of the
    vocabulary goes to rare words seen a few times; on real text a higher one (say 50) gives
    far fewer pieces per word (docs/benchmarks.md, vocabulary training)."""
    _check_options(vocab_size, min_frequency, special_tokens, limit_alphabet)
    missing = [t for t in DEFAULT_SPECIAL_TOKENS if t not in special_tokens]
    if missing:
        raise ConfigError(f"--special-token {' '.join(special_tokens)}: a WordPiece vocabulary for BertTokenizer "
                          f"needs the special tokens {' '.join(DEFAULT_SPECIAL_TOKENS)}; missing: {' '.join(missing)}")
    word_counts = count_bert_words(texts, lowercase, strip_accents, show_progress)
    _require_words(word_counts)
    alphabet = _alphabet(word_counts, limit_alphabet)
    if limit_alphabet is not None:
        word_counts = Counter({w: n for w, n in word_counts.items() if all(char in alphabet for char in w)})
    symbols = {word[0] for word in word_counts} | {CONTINUATION + char for word in word_counts for char in word[1:]}
    vocab = _initial_vocab(special_tokens, symbols)
    _check_size(vocab, vocab_size, special_tokens, " (or cap the alphabet with --limit-alphabet)")
    pairs = _symbolize(word_counts, vocab, lambda word: [word[0], *(CONTINUATION + char for char in word[1:])])
    learn_wordpiece(pairs, vocab, vocab_size, min_frequency, show_progress)
    _warn_frequent_words_split(word_counts, vocab, min_frequency)
    extra = [t for t in dict.fromkeys(special_tokens) if t not in DEFAULT_SPECIAL_TOKENS]
    return BertTokenizer({token: i for i, token in enumerate(vocab)}, do_lower_case=lowercase,
                         strip_accents=strip_accents, additional_special_tokens=extra)


# Of the corpus's most frequent words, the share that may stay split before the trainer says so.
FREQUENT_WORDS, FREQUENT_SPLIT_SHARE = 100, 0.1


def _warn_frequent_words_split(word_counts: Counter[str], vocab: list[str], min_frequency: int) -> None:
    """The likelihood score can leave "the" in pieces while it learns rare words whole (docs/benchmarks.md):
    say so, with the remedies, rather than hand over a vocabulary that splits the commonest words."""
    tokens = set(vocab)
    frequent = [word for word, _ in word_counts.most_common(FREQUENT_WORDS)]
    split = [word for word in frequent if word not in tokens]
    if len(split) > FREQUENT_SPLIT_SHARE * len(frequent):
        logger.warning("wordpiece: %d of the corpus's %d most frequent words are not whole tokens (%s): the likelihood "
                       "score favours pairs of rare parts; a higher --min-frequency than %d (on 5 MB of books, 50 gave "
                       "1.5 pieces per word where 2 gave 3.3: docs/benchmarks.md) or --algorithm bpe keeps frequent "
                       "words whole", len(split), len(frequent), ", ".join(map(repr, split[:5])), min_frequency)


def _symbolize(word_counts: Counter[str], vocab: list[str], symbols: Callable[[str], Iterable[str]]) -> SymbolPairs:
    """The distinct words as lists of symbol ids, with their pairs. (The order of the words
    does not matter: every choice is made on counts and ids alone.)"""
    index = {token: i for i, token in enumerate(vocab)}
    return SymbolPairs([[index[s] for s in symbols(word)] for word in word_counts], list(word_counts.values()))


TRAINERS = {"wordpiece": train_wordpiece, "bpe": train_bpe, "byte-bpe": train_byte_level_bpe}


def train_vocab(algorithm: str, texts: Iterable[str], **options) -> BPE | ByteLevelBPE | BertTokenizer:
    """`train_wordpiece`, `train_bpe` or `train_byte_level_bpe` by name (`ALGORITHMS`)."""
    if algorithm not in TRAINERS:
        raise ConfigError(f"unknown algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    return TRAINERS[algorithm](texts, **options)

"""WordPiece: split one normalised word into vocabulary pieces, greedy longest match first.

`stem` with the vocabulary {a,b,c,e,l,m,o,s,t,u,st} becomes `st ##e ##m`: take the longest
prefix that is in the vocabulary, then the longest `##`-prefixed piece of what is left, and so
on. A piece inside a word must be in the vocabulary with its `##`, as in Google's vocabularies:
the example's set needs `##e` and `##m` beside `e` and `m` (tests/test_tokenizer.py). If some
remainder has no piece at all, the whole word becomes `[UNK]` (not just that part), as in Google's
original.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from bertforge.errors import CheckpointError, InputError
from bertforge.io.settings_files import read_settings_text
from bertforge.tokenization.basic import WHITESPACE

# Whitespace between two characters of a line: no token holds any (BERT's tokenizer splits text at it first),
# and a file of sentences (a README, a corpus) would otherwise load as a vocabulary that gives [UNK] for every word.
# It starts at the rare whitespace and looks behind from there: a search 3 times as fast on bert-base's vocab.txt.
_SPACE, _IN_A_LINE = re.escape(WHITESPACE), re.escape(WHITESPACE.replace("\n", ""))
WORDS_ON_A_LINE = re.compile(f"[{_IN_A_LINE}](?<=[^{_SPACE}].)[{_IN_A_LINE}]*[^{_SPACE}]")


def load_vocab(path: str | Path) -> dict[str, int]:
    """Read a `vocab.txt`: one token per line, the 0-based line number is its id."""
    path = Path(path)
    # line ends as Python's text mode reads them (\r\n and \r too), as transformers' load_vocab reads the file
    text = read_settings_text(path, CheckpointError).replace("\r\n", "\n").replace("\r", "\n")
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    if tokens and tokens[0].startswith("\ufeff"):  # not dropped: transformers would read a different first token
        raise CheckpointError(f"{path}:1: starts with a byte-order mark, which transformers reads as part of the "
                              f"first token; save it without one")
    words = WORDS_ON_A_LINE.search(text)  # one search of the whole text: loading is on every start-up path
    if words:
        line_number = text.count("\n", 0, words.start()) + 1
        raise CheckpointError(f"{path}:{line_number}: {tokens[line_number - 1][:60]!r} holds whitespace, which "
                              f"no token does: this is not a vocab.txt (one WordPiece token a line)")
    # One dict comprehension (C speed: loading is on every tokenizer's start-up path); a repeated
    # token makes the dict shorter than the list, and only then is the repeat looked for.
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        first: dict[str, int] = {}
        for line_number, token in enumerate(tokens, start=1):
            if token in first:
                raise CheckpointError(f"{path}:{line_number}: token {token!r} repeats line {first[token]}")
            first[token] = line_number
    if not vocab:
        raise CheckpointError(f"{path}: the vocabulary is empty")
    return vocab


def vocab_fingerprint(tokenizer) -> str:
    """What "the same vocabulary" means everywhere: the same tokens in id order, so that every id means the same
    token (prepared shards' ids, a model or a distilled student reading them). Kept in every prepared index.json:
    changing how it is computed would refuse all data prepared before."""
    tokens = sorted(tokenizer.vocab, key=tokenizer.vocab.get)
    return hashlib.sha256("\n".join(tokens).encode()).hexdigest()[:16]


class WordPiece:
    def __init__(self, vocab: dict[str, int], unk_token: str = "[UNK]", max_input_chars_per_word: int = 100,
                 continuation_prefix: str = "##"):
        if unk_token not in vocab:
            raise InputError(f"the unknown token {unk_token!r} is not in the vocabulary")
        if max_input_chars_per_word < 1:
            raise InputError(f"max_input_chars_per_word must be at least 1, got {max_input_chars_per_word}")
        self.vocab = vocab
        self.unk_token = unk_token
        self.unk_id = vocab[unk_token]
        self.max_input_chars_per_word = max_input_chars_per_word
        self.prefix = continuation_prefix

    def split(self, word: str) -> list[tuple[int, int, int]]:
        """(id, start, end) for each piece of `word`; spans are character spans in `word`."""
        if len(word) > self.max_input_chars_per_word:
            return [(self.unk_id, 0, len(word))]
        vocab = self.vocab
        pieces = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                candidate = word[start:end] if start == 0 else self.prefix + word[start:end]
                piece_id = vocab.get(candidate)
                if piece_id is not None:
                    pieces.append((piece_id, start, end))
                    break
                end -= 1
            else:
                return [(self.unk_id, 0, len(word))]
            start = end
        return pieces

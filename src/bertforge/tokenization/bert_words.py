"""BERT's basic tokenization, in a form made for counting and caching: text → whitespace-
separated chunks (`str.split`, at C speed) → the words of each chunk. A corpus repeats the same
chunks over and over, so a trainer or an encoder splits each distinct chunk once.

The words are exactly those of `BasicTokenizer.tokenize` (the tests check it on the corpus and
on hard strings); plain ASCII chunks take a small regex instead of the tokenizer's full one,
whose Unicode classes make Python's `re` slow.
"""

from __future__ import annotations

import re

from bertforge.tokenization.basic import BasicTokenizer

# Characters Python's str.split() takes for whitespace but BERT drops as control characters
# (gluing their neighbours together): deleting them first keeps `str.split` exact.
_SPLIT_UNSAFE = "\x0b\x0c\x1c\x1d\x1e\x1f\x85"
_DELETE_SPLIT_UNSAFE = str.maketrans("", "", _SPLIT_UNSAFE)
_HAS_SPLIT_UNSAFE = re.compile(f"[{_SPLIT_UNSAFE}]")
# BERT's split of a printable ASCII chunk: each punctuation character alone, runs of the rest.
_ASCII_WORDS = re.compile(r"[!-/:-@\[-`{-~]|[^!-/:-@\[-`{-~]+")


class BertWords:
    def __init__(self, lowercase: bool = True, strip_accents: bool | None = None,
                 special_tokens: tuple[str, ...] = ()):
        self.basic = BasicTokenizer(lowercase, strip_accents, never_split=tuple(special_tokens))
        self.lowercase = lowercase
        self.special_tokens = tuple(special_tokens)

    @staticmethod
    def chunks(text: str) -> list[str]:
        """The whitespace-separated chunks of `text` (no word ever spans two)."""
        if _HAS_SPLIT_UNSAFE.search(text):
            text = text.translate(_DELETE_SPLIT_UNSAFE)
        return text.split()

    def words(self, chunk: str) -> list[str]:
        """The normalised words of one chunk; special tokens are kept whole."""
        if chunk.isascii() and chunk.isprintable() and not any(t in chunk for t in self.special_tokens):
            return _ASCII_WORDS.findall(chunk.lower() if self.lowercase else chunk)
        return self.basic.tokenize(chunk)

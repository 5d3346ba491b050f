"""BERT's basic tokenization: text cleaning, normalisation and the split into words.

The semantics are those of Google's BERT as implemented by the Hugging Face `tokenizers`
library (`BertNormalizer` + `BertPreTokenizer`), which is the reference every BERT model
since has been trained with:

* cleaning: NUL, U+FFFD and control, format and private-use characters (Unicode Cc, Cf,
  Co, Cs; tab, newline and CR excepted) are dropped; unassigned code points (Cn) are kept as
  ordinary characters, as the reference does; whitespace becomes a separator;
* every CJK ideograph is a word of its own;
* uncased: accents stripped (NFD, then combining marks dropped) and lower-cased char by char;
* punctuation (ASCII 33-47, 58-64, 91-96, 123-126 and every Unicode P* character) is a word
  of its own.

Categories come from Python's Unicode tables (Unicode 14 in Python 3.11), the reference's from older
ones: about 500 characters assigned since (Unicode 10-14) are categorised differently by the two
(`bench/unicode_parity.py` counts them); every other code point tokenizes identically.

The split keeps, for every word, the character span it came from in the original text, so
the tokenizer can report offsets into the user's string.
"""

from __future__ import annotations

import array
import re
import unicodedata
from functools import lru_cache

# Unicode White_Space characters that survive cleaning (the C* ones such as \x0b, \x0c and
# \x85 are dropped as control characters before whitespace is looked at).
WHITESPACE = "\t\n\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    # The reference starts this block at U+2B920 (Google's code says U+2B820); we follow the
    # reference, since it is what tokenized the text every published checkpoint learned from.
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def is_control(char: str) -> bool:
    if char in "\t\n\r":
        return False
    return unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs")


def has_text(text: str) -> bool:
    """Whether BERT's cleaning leaves anything of `text`: more than spaces and the control, format
    (zero-width) and replacement characters it drops."""
    return any(not (char.isspace() or char in "\x00\ufffd" or is_control(char)) for char in text)


def is_punctuation(char: str) -> bool:
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk(char: str) -> bool:
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def _char_class(chars: str) -> str:
    """A regex character class matching exactly `chars`, written as ranges."""
    parts = []
    cps = sorted({ord(c) for c in chars})
    start = prev = cps[0]
    for cp in cps[1:] + [None]:
        if cp is not None and cp == prev + 1:
            prev = cp
            continue
        parts.append(re.escape(chr(start)) if start == prev else f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
        if cp is not None:
            start = prev = cp
    return "".join(parts)


# Planes 2 and above hold ideographs, tags, variation selectors and private use, never punctuation;
# scanning only planes 0-1 keeps building the word pattern (every tokenizer load) at a few
# hundredths of a second instead of a second (tests/test_startup.py checks it against the full range).
PUNCTUATION_PLANES_END = 0x20000


def punctuation_chars(end: int = PUNCTUATION_PLANES_END) -> str:
    """Every character below `end` that BERT treats as punctuation (see `is_punctuation`)."""
    ascii_punctuation = "".join(chr(cp) for cp in range(128) if is_punctuation(chr(cp)))
    # All code points as one string, built in C (a join of chr() over 130,000 of them takes longer
    # than the rest of loading a tokenizer).
    chars = array.array("I", range(128, end)).tobytes().decode("utf-32-le", "surrogatepass")
    # Categories are two characters, the first upper-case: joined, "P" only ever starts one, so a
    # search of one string finds them all without a Python-level loop over every code point.
    categories = "".join(map(unicodedata.category, chars))
    return ascii_punctuation + "".join(chars[match.start() // 2] for match in re.finditer("P", categories))


@lru_cache(maxsize=1)
def _isolated_class() -> str:
    """Characters that always form a word of their own: punctuation and CJK ideographs."""
    punctuation = punctuation_chars()
    cjk = "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in CJK_RANGES)
    return _char_class(punctuation) + cjk


@lru_cache(maxsize=64)
def word_pattern(special_tokens: tuple[str, ...] = ()) -> re.Pattern:
    """Matches, in the original text, a special token, one isolated character, or a run of
    other non-whitespace characters (control characters included: cleaning drops them
    inside the run, which glues `a\\x00b` into `ab` exactly as the reference does)."""
    isolated = _isolated_class()
    space = _char_class(WHITESPACE)
    run = f"[^{space}{isolated}]"
    if not special_tokens:
        return re.compile(f"[{isolated}]|{run}+")
    specials = "|".join(re.escape(t) for t in sorted(special_tokens, key=len, reverse=True))
    isolated_re = re.compile(f"[{space}{isolated}]")
    if not all(isolated_re.match(token) for token in special_tokens):
        # A special token that starts with a letter may hide inside a run: stop runs at it.
        run = f"(?:(?!{specials}){run})"
    return re.compile(f"(?P<special>{specials})|[{isolated}]|{run}+")


def normalize_with_alignment(word: str, lowercase: bool, strip_accents: bool) -> tuple[str, list[int]]:
    """Clean and normalise one word char by char; `alignment[i]` is the index in `word` of
    the character the i-th normalised character came from."""
    out: list[str] = []
    alignment: list[int] = []
    for i, char in enumerate(word):
        if char == "\x00" or char == "\ufffd" or is_control(char):
            continue
        pieces = unicodedata.normalize("NFD", char) if strip_accents else char
        for piece in pieces:
            if strip_accents and unicodedata.category(piece) == "Mn":
                continue
            if lowercase:
                piece = piece.lower()
            out.append(piece)
            alignment.extend([i] * len(piece))
    return "".join(out), alignment


def split_normalized(text: str) -> list[tuple[str, int, int]]:
    """Split an already-normalised run on punctuation and CJK characters that normalisation
    produced (e.g. U+037E GREEK QUESTION MARK decomposes to `;`)."""
    words: list[tuple[str, int, int]] = []
    start = 0
    for i, char in enumerate(text):
        if is_punctuation(char) or is_cjk(char):
            if start < i:
                words.append((text[start:i], start, i))
            words.append((char, i, i + 1))
            start = i + 1
    if start < len(text):
        words.append((text[start:], start, len(text)))
    return words


class BasicTokenizer:
    """Splits text into normalised words with their character spans in the original text."""

    def __init__(self, do_lower_case: bool = True, strip_accents: bool | None = None,
                 never_split: tuple[str, ...] = ()):
        self.do_lower_case = do_lower_case
        # As in the reference: accents follow lower-casing unless set explicitly.
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self.never_split = tuple(never_split)
        self._pattern = word_pattern(self.never_split)

    def normalize(self, run: str) -> list[tuple[str, list[int] | None]]:
        """Normalise one run of non-space characters into words. Each word comes with the
        index in `run` of the character each of its characters came from, or None when the
        word is `run` itself character for character (the common ASCII case)."""
        if run.isascii() and run.isprintable():
            return [(run.lower() if self.do_lower_case else run, None)]
        text, alignment = normalize_with_alignment(run, self.do_lower_case, self.strip_accents)
        return [(piece, alignment[s:e]) for piece, s, e in split_normalized(text)]

    def tokenize(self, text: str) -> list[str]:
        """The normalised words of `text` (special tokens kept whole)."""
        words = []
        for match in self._pattern.finditer(text):
            if match.lastgroup == "special":
                words.append(match.group())
            else:
                words.extend(word for word, _ in self.normalize(match.group()))
        return words

    def finditer(self, text: str):
        """Regex matches of special tokens and runs to normalise, in order."""
        return self._pattern.finditer(text)

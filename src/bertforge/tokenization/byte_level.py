"""Byte-level text handling for byte-level BPE: GPT-2's byte → printable character mapping, its
pre-tokenization, and optional normalisation.

Every UTF-8 byte gets a printable stand-in character (printable Latin-1 bytes stand for
themselves; the others, space and control bytes included, are shifted to U+0100 and up, so a
space is `Ġ`). A pre-token is then its UTF-8 bytes written with those characters, the
alphabet is exactly 256 symbols, and no input is ever unknown.

Pre-tokenization is GPT-2's regular expression, as the Hugging Face `tokenizers` `ByteLevel`
pre-tokenizer applies it (`add_prefix_space=False`)::

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

It keeps every character, whitespace included (a space sticks to the word after it), so
joining the pieces gives back the text exactly. Python's `re` has no `\\p{..}` classes, so
letters, numbers and whitespace are spelled out from `unicodedata` with the definitions the
Rust side uses: `\\p{L}` = categories L*, `\\p{N}` = N*, `\\s` = tab to CR, U+0085 and the
categories Zs, Zl, Zp (Python's own `\\s` would add U+001C-U+001F).
"""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache

from bertforge.tokenization.basic import _char_class


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's mapping from each byte value to a printable character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


@lru_cache(maxsize=1)
def _symbol_to_byte() -> dict[str, int]:
    return {char: b for b, char in bytes_to_unicode().items()}


def to_symbols(text: str) -> str:
    """`text` as byte-level symbols: one printable character per UTF-8 byte."""
    # Read as Latin-1, each byte is the character with the same number: translate maps it.
    return text.encode("utf-8").decode("latin-1").translate(bytes_to_unicode())


def symbols_to_bytes(symbols: str) -> bytes:
    """The bytes that byte-level symbols (a token, or several joined) stand for."""
    table = _symbol_to_byte()
    return bytes(table[char] for char in symbols)


@lru_cache(maxsize=1)
def _chars_by_category() -> dict[str, str]:
    """Every code point grouped by its Unicode general category (one scan, ~2 s, cached)."""
    groups: dict[str, list[str]] = {}
    for cp in range(sys.maxunicode + 1):
        char = chr(cp)
        groups.setdefault(unicodedata.category(char), []).append(char)
    return {category: "".join(chars) for category, chars in groups.items()}


def _categories(prefix: str) -> str:
    return "".join(chars for category, chars in _chars_by_category().items() if category.startswith(prefix))


# GPT-2's expression over ASCII text alone: letters, digits and whitespace are then plain
# ranges, which Python's `re` matches an order of magnitude faster than the full classes.
_ASCII_PRETOKENIZER = re.compile(
    r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\t-\r A-Za-z0-9]+|[\t-\r ]+(?![^\t-\r ])|[\t-\r ]+")


@lru_cache(maxsize=1)
def pretokenizer() -> re.Pattern:
    """GPT-2's pre-tokenization regex (see the module docstring); `findall` gives the pieces."""
    letters = _char_class(_categories("L"))
    numbers = _char_class(_categories("N"))
    space = _char_class("\t\n\x0b\x0c\r\x85" + _categories("Zs") + _categories("Zl") + _categories("Zp"))
    return re.compile(
        rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{letters}]+| ?[{numbers}]+| ?[^{space}{letters}{numbers}]+"
        rf"|[{space}]+(?![^{space}])|[{space}]+"
    )


def pretokenize(text: str) -> list[str]:
    """GPT-2's pre-tokens of `text`; joined, they give `text` back."""
    if text.isascii():
        return _ASCII_PRETOKENIZER.findall(text)
    return pretokenizer().findall(text)


# Python's `\s` is the Rust side's plus U+001C-U+001F; text holding those is taken whole.
_PYTHON_ONLY_SPACE = re.compile("[\x1c-\x1f]")
_UNITS = re.compile(r"\s*\S+|\s+")


def pretokenize_units(text: str) -> list[str]:
    """`text` cut into pieces that pre-tokenize on their own exactly as they do in place: each
    run of non-space characters with the whitespace before it. No pre-token crosses from one
    piece to the next (a whitespace run is matched before the characters that follow it, at
    most its last space joining them, and every other pre-token stops at whitespace), so a
    corpus is counted by pre-tokenizing each distinct piece once."""
    if _PYTHON_ONLY_SPACE.search(text):
        return [text]
    return _UNITS.findall(text)


@lru_cache(maxsize=1)
def _nonspacing_marks() -> re.Pattern:
    return re.compile(f"[{_char_class(_categories('Mn'))}]+")


def normalize(text: str, lowercase: bool, strip_accents: bool) -> str:
    """Optional normalisation before byte-level pre-tokenization, BERT's: accents go first
    (NFD, then nonspacing marks dropped; spacing marks such as Devanagari vowel signs stay),
    then each character is lower-cased on its own. In `tokenizers` terms:
    `BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=..., lowercase=...)`
    (its `StripAccents` normaliser would drop spacing marks too)."""
    if strip_accents and not text.isascii():
        text = _nonspacing_marks().sub("", unicodedata.normalize("NFD", text))
    if lowercase:
        # str.lower() turns a word-final Σ into ς by looking at its neighbours; lower-casing
        # character by character (as BERT and `tokenizers` do) always gives σ.
        text = text.replace("Σ", "σ").lower()
    return text

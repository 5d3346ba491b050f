"""Paragraphs → sentences, at the speed of the tokenizer.

pysbd (the Golden Rules segmenter) splits English well but at ~0.15 MB/s: most of its time goes to
compiling regular expressions it builds per abbreviation and per sentence, which overflow Python's
regex cache, and to patterns that start with a look-behind (slow to scan for). `RuleSplitter`
applies the same rules in the same order (`sentence_periods.py`: abbreviations, numbers, lists;
here: ellipses, text between quotes, brackets and dashes, the boundary pattern, quotations that end
a sentence), each compiled once and skipped where a cheap test says it cannot match: about 30 times
faster, and tests/test_sentences.py holds it to pysbd's boundaries. `PysbdSplitter` stays
available (`pretrain prepare --splitter pysbd`).

Protected characters are swapped for placeholders while the rules run, so that a protected "." or
"?" no longer matches the boundary pattern, and swapped back in each finished sentence.
"""

from __future__ import annotations

import re

from bertforge.errors import ConfigError
from bertforge.pretraining.sentence_periods import (
    LEFT_PAREN, PERIOD, mark_list_items, protect_abbreviations, protect_numbers)

# Placeholders. Where pysbd's patterns name one (∯ a protected period, ȸ "no final punctuation",
# ☉☈☇☄ for "?!", "!?", "??", "!!"), it is kept so that those patterns read as pysbd's.
END = "ȸ"
EXCLAMATION, QUESTION, APOSTROPHE, WORD_DOT, RIGHT_PAREN = "\ue001", "\ue002", "\ue003", "\ue004", "\ue006"
FULL_STOP, SPECIAL_PERIOD, FULL_EXCLAMATION, FULL_QUESTION = "\ue009", "\ue00a", "\ue00b", "\ue00c"
PUNCTUATION = "。．.！!?？"
# (placeholder, original) pairs, restored with str.replace: faster than str.translate with a dict.
RESTORE_SYMBOLS = [(PERIOD, "."), (FULL_STOP, "。"), (SPECIAL_PERIOD, "．"), (FULL_EXCLAMATION, "！"),
                   (EXCLAMATION, "!"), (QUESTION, "?"), (FULL_QUESTION, "？"), ("☉", "?!"), ("☇", "??"),
                   ("☈", "!?"), ("☄", "!!"), (LEFT_PAREN, "("), (RIGHT_PAREN, ")"), (END, "")]
RESTORE_ELLIPSES = [("ƪƪƪ", "..."), ("♟" * 7, " . . . "), ("♝" * 7, ". . . ."), ("☏☏", ".."), (WORD_DOT, ".")]
ANY_PLACEHOLDER = re.compile("[∯ȸ☉☇☈☄ƪ♟♝☏\ue001-\ue00c]")
# (character, placeholder) pairs of text between quotes or brackets; str.replace of each present one
# is faster than str.translate, which looks every character up in a dict.
PROTECT = [(".", PERIOD), ("。", FULL_STOP), ("．", SPECIAL_PERIOD), ("！", FULL_EXCLAMATION), ("!", EXCLAMATION),
           ("?", QUESTION), ("？", FULL_QUESTION)]
PROTECT_WITH_APOSTROPHES = PROTECT + [("'", APOSTROPHE)]
ANY_PUNCTUATION = re.compile("[。．.！!?？]")

CONTINUOUS_PUNCTUATION = re.compile(r"(?<=\S)(!|\?){3,}(?=(\s|\Z|$))")
NUMBERED_REFERENCE_HINT = re.compile(r"[.∯](?:\[|\d{1,3}(?:\s?\d{1,3})?\s[A-Z])")
NUMBERED_REFERENCE = re.compile(r"(?<=[^\d\s])(\.|∯)((\[(\d{1,3},?\s?-?\s?)*\b\d{1,3}\])+|((\d{1,3}\s?)?\d{1,3}))(\s)"
                                r"(?=[A-Z])")
WITHIN_WORD_PERIOD_HINT = re.compile(r"\.[a-zA-Z0-9_]")
WITHIN_WORD_PERIOD = re.compile(r"([a-zA-Z0-9_])(\.)([a-zA-Z0-9_])")
GEO_LOCATION = re.compile(r"(?<=[a-zA-z]°)\.(?=\s*\d+)")
FILE_FORMAT = re.compile(r"(?<=\s)\.(?=(jpe?g|png|gif|tiff?|pdf|ps|docx?|xlsx?|svg|bmp|tga|exif|odt|html?|txt|rtf|bat"
                         r"|sxw|xml|zip|exe|msi|blend|wmv|mp[34]|pptx?|flac|rb|cpp|cs|js)\s)")
PARENS_BETWEEN_QUOTES = re.compile(r'["\”]\s\(.*\)\s["\“]')
ELLIPSIS_RULES = [(re.compile(r"(\s\.){3}\s"), "♟" * 7), (re.compile(r"(?<=[a-z])(\.\s){3}\.($|\\n)"), "♝" * 7),
                  (re.compile(r"(?<=\S)\.{3}(?=\.\s[A-Z])"), "ƪƪƪ"), (re.compile(r"\.\.\.(?=\s+[A-Z])"), "☏☏."),
                  (re.compile(r"\.\.\."), "ƪƪƪ")]

# Text between quotes, brackets and dashes: its punctuation ends no sentence. pysbd's patterns (with
# its look-ahead-and-back-reference way of writing an atomic group); a leading "(?<=\s)" is written
# as a space kept in the match, which scans much faster and, with single spaces, means the same.
LEADING_APOSTROPHE_WORD = re.compile(r" '(?:[^']|'[a-zA-Z])*'\S")
BETWEEN_SINGLE_QUOTES = re.compile(r" '(?:[^']|'[a-zA-Z])*'")
BETWEEN = [(opening, re.compile(pattern)) for opening, pattern in (
    (" ‘", r" ‘(?:[^’]|’[a-zA-Z])*’"),
    ('"', r'"(?=(?P<tmp>[^\"\\]+|\\{2}|\\.)*)(?P=tmp)"'),
    ("[", r"\[(?=(?P<tmp>[^\]\\]+|\\{2}|\\.)*)(?P=tmp)\]"),
    ("(", r"\((?=(?P<tmp>[^\(\)\\]+|\\{2}|\\.)*)(?P=tmp)\)"),
    ("«", r"\«(?=(?P<tmp>[^»\\]+|\\{2}|\\.)*)(?P=tmp)\»"),
    ("--", r"--(?=(?P<tmp>[^--]*))(?P=tmp)--"),
    ("“", r"\“(?=(?P<tmp>[^”\\]+|\\{2}|\\.)*)(?P=tmp)\”"))]
EXCLAMATION_WORD = re.compile("|".join(re.escape(w) for w in (
    "!Xũ !Kung ǃʼOǃKung !Xuun !Kung-Ekoka ǃHu ǃKhung ǃKu ǃung ǃXo ǃXû ǃXung ǃXũ !Xun Yahoo! Y!J Yum!").split()))
DOUBLE_PUNCTUATION = re.compile(r"\?!|!\?|\?\?|!!")
EXCLAMATION_BEFORE_LOWER = re.compile(r"\!(?=\,\s[a-z])|\!(?=\s[a-z])")
ROMAN_NUMERAL_IN_PARENS = re.compile(r"\(((?=[mdclxvi])m*(c[md]|d?c*)(x[cl]|l?x*)(i[xv]|v?i*))\)(?=\s[A-Z])")
# pysbd's `\S.*?[.!?...]` is written `\S[^.!?...\n]*[.!?...]`: the same matches, found by a tight loop
# instead of a lazy one that tries the end at every character.
SENTENCE_BOUNDARY = re.compile(
    r"（(?:[^）])*）(?=\s?[A-Z])|「(?:[^」])*」(?=\s[A-Z])|\((?:[^\)]){2,}\)(?=\s[A-Z])|\'(?:[^\'])*[^,]\'(?=\s[A-Z])"
    r"|\"(?:[^\"])*[^,]\"(?=\s[A-Z])|\“(?:[^\”])*[^,]\”(?=\s[A-Z])|[。．.！!?？ ]{2,}|\S[^。．.！!?？ȸȹ☉☈☇☄\n]*[。．.！!?？ȸȹ☉☈☇☄]"
    r"|[。．.！!?？]")
QUOTATION_AT_END = re.compile(r"[!?\.-][\"\'“”]\s{1}[A-Z]")
SPLIT_AFTER_QUOTATION = re.compile(r"(?<=[!?\.-][\"\'“”])\s{1}(?=[A-Z])")
ONLY_LETTERS = re.compile(r"\A[a-zA-Z]*\Z")
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def _replace_all(text: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        if old in text:
            text = text.replace(old, new)
    return text


def _protect(match: re.Match) -> str:
    return _replace_all(match.group(), PROTECT_WITH_APOSTROPHES)


def _protect_keeping_apostrophes(match: re.Match) -> str:
    return _replace_all(match.group(), PROTECT)


def _between_punctuation(text: str) -> str:
    if "'" in text and not (LEADING_APOSTROPHE_WORD.search(text) and "' " not in text):
        text = BETWEEN_SINGLE_QUOTES.sub(_protect_keeping_apostrophes, text)
    for opening, pattern in BETWEEN:
        if opening in text:
            text = pattern.sub(_protect, text)
    return text


def _raw_sentences(text: str) -> list[str]:
    """pysbd's `process_text`: one line (lists already broken into lines) → sentence pieces."""
    if text[-1] not in PUNCTUATION:
        text += END
    if "!" in text or "ǃ" in text:
        text = EXCLAMATION_WORD.sub(_protect, text)
    text = _between_punctuation(text)
    if ("!" in text or "?" in text) and not DOUBLE_PUNCTUATION.match(text):
        text = text.replace("?!", "☉").replace("!?", "☈").replace("??", "☇").replace("!!", "☄")
    if "?" in text:
        text = text.replace("?'", QUESTION + "'").replace('?"', QUESTION + '"')
    if "!" in text:
        text = text.replace("!'", EXCLAMATION + "'").replace('!"', EXCLAMATION + '"')
        text = EXCLAMATION_BEFORE_LOWER.sub(EXCLAMATION, text)
    if "(" in text:
        text = ROMAN_NUMERAL_IN_PARENS.sub(rf"{LEFT_PAREN}\1{RIGHT_PAREN}", text)
    if text.endswith(EXCLAMATION):
        text = text[:-1] + "!"
    return SENTENCE_BOUNDARY.findall(text)


def _finish(sentence: str) -> list[str]:
    """pysbd's `post_process_segments`: restore symbols, then split after a quotation that ends a
    sentence (`"...," he said. "Next ...`)."""
    if ANY_PLACEHOLDER.search(sentence):
        sentence = _replace_all(sentence, RESTORE_SYMBOLS)
        if len(sentence) > 2 and ONLY_LETTERS.match(sentence):
            return [sentence]
        sentence = _replace_all(sentence, RESTORE_ELLIPSES)
    elif len(sentence) > 2 and ONLY_LETTERS.match(sentence):
        return [sentence]
    if QUOTATION_AT_END.search(sentence):
        return SPLIT_AFTER_QUOTATION.split(sentence)
    return [sentence.replace("\n", "").strip()]


def _protect_within_words(text: str) -> str:
    if WITHIN_WORD_PERIOD_HINT.search(text):
        text = WITHIN_WORD_PERIOD.sub(rf"\1{WORD_DOT}\3", text)
    if "°" in text:
        text = GEO_LOCATION.sub(PERIOD, text)
    if " ." in text:
        text = FILE_FORMAT.sub(PERIOD, text)
    return text


def _split_paragraphs(text: str) -> list[str]:
    """Paragraphs at blank lines, hard-wrapped lines joined, single spaces."""
    return [p for p in (" ".join(paragraph.split()) for paragraph in PARAGRAPH_BREAK.split(text)) if p]


class RuleSplitter:
    """pysbd's English rules, compiled once (see the module docstring)."""

    name = "rules"

    def split(self, text: str) -> list[str]:
        """A document → its sentences."""
        return [s for paragraph in _split_paragraphs(text) for s in self.segment(paragraph)]

    def __init__(self):
        self._pysbd: PysbdSplitter | None = None

    def segment(self, paragraph: str) -> list[str]:
        """One paragraph → its sentences, stripped, none empty. Line breaks count as spaces."""
        text = " ".join(paragraph.split())
        if not text:
            return []
        if ANY_PLACEHOLDER.search(text):
            # Text that holds a placeholder character itself would come back altered: pysbd splits it
            # (and treats its own placeholders as it always has).
            if self._pysbd is None:
                self._pysbd = PysbdSplitter()
            return self._pysbd.segment(text)
        text = protect_numbers(protect_abbreviations(mark_list_items(text)))
        if "!!" in text or "??" in text or "!?" in text or "?!" in text:
            text = CONTINUOUS_PUNCTUATION.sub(lambda m: m.group().replace("!", EXCLAMATION).replace("?", QUESTION),
                                              text)
        if NUMBERED_REFERENCE_HINT.search(text):
            text = NUMBERED_REFERENCE.sub("∯\\2\r\\7", text)
        text = _protect_within_words(text)
        if "(" in text and ('"' in text or "”" in text):
            text = PARENS_BETWEEN_QUOTES.sub(
                lambda m: re.sub(r"(?<=\))\s", "\r", re.sub(r"\s(?=\()", "\r", m.group())), text)
        sentences = []
        for line in text.split("\r"):
            if not line:
                continue
            if ".." in line or " ." in line:
                for pattern, replacement in ELLIPSIS_RULES:
                    line = pattern.sub(replacement, line)
            pieces = _raw_sentences(line) if ANY_PUNCTUATION.search(line) else [line]
            for piece in pieces:
                for sentence in _finish(piece):
                    sentence = sentence.replace(APOSTROPHE, "'").strip()
                    if sentence:
                        sentences.append(sentence)
        return sentences


class PysbdSplitter:
    """pysbd itself: the reference the rules are measured against, about 30 times slower."""

    name = "pysbd"

    def __init__(self, language: str = "en"):
        import pysbd

        self._segmenter = pysbd.Segmenter(language=language, clean=False)

    def split(self, text: str) -> list[str]:
        return [s for paragraph in _split_paragraphs(text) for s in self.segment(paragraph)]

    def segment(self, paragraph: str) -> list[str]:
        return [s.strip() for s in self._segmenter.segment(paragraph) if s.strip()]


SPLITTERS = {"rules": RuleSplitter, "pysbd": PysbdSplitter}


def make_splitter(name: str = "rules"):
    """A splitter by its `--splitter` name."""
    if name not in SPLITTERS:
        raise ConfigError(f"--splitter must be one of {', '.join(SPLITTERS)}, got {name!r}")
    return SPLITTERS[name]()

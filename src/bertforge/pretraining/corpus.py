"""Reading a pre-training corpus as documents made of sentences.

Two formats, as in BERT's data preparation:
- plain text (`.txt`, optionally `.gz`): one sentence a line, a blank line between documents;
- JSON Lines (`.jsonl`, optionally `.gz`): one document a line with a `text` field, split into
  paragraphs at blank lines and into sentences with pysbd (hard-wrapped lines are joined first).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from bertforge.errors import InputError

logger = logging.getLogger(__name__)

Document = list[str]  # the sentences of one document, in order


def _open(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8")


def _is_jsonl(path: Path) -> bool:
    suffixes = path.suffixes[-2:] if path.suffix == ".gz" else path.suffixes[-1:]
    return bool(suffixes) and suffixes[0] in (".jsonl", ".json")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) pairs, turning a decoding failure into an error naming the file."""
    line_number = 0
    try:
        with _open(path) as f:
            for line_number, line in enumerate(f, 1):
                yield line_number, line
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (near line {line_number + 1}: {e.reason})") from None
    except (OSError, EOFError) as e:  # e.g. a truncated or corrupt .gz
        raise InputError(f"{path}: cannot be read ({e})") from None


class SentenceSplitter:
    """Paragraphs → sentences with pysbd, the rule-based splitter (handles "Mr.", "e.g.", ...)."""

    def __init__(self, language: str = "en"):
        import pysbd

        self._segmenter = pysbd.Segmenter(language=language, clean=False)

    def split(self, text: str) -> list[str]:
        sentences = []
        for paragraph in re.split(r"\n\s*\n", text):
            paragraph = " ".join(paragraph.split())  # undo the hard wrapping
            if paragraph:
                sentences.extend(s.strip() for s in self._segmenter.segment(paragraph) if s.strip())
        return sentences


def _plain_text_documents(path: Path) -> Iterator[Document]:
    document: Document = []
    breaks = 0
    for _, line in _lines(path):
        line = line.strip()
        if line:
            document.append(line)
        elif document:
            breaks += 1
            yield document
            document = []
    if document:
        if breaks == 0:
            logger.warning("%s has no blank lines between documents: it is read as one document, so "
                           "notNext segments come from elsewhere in the same text", path)
        yield document


def _jsonl_documents(path: Path, splitter: SentenceSplitter, skip: int) -> Iterator[Document]:
    """Documents from JSON Lines; the first `skip` records are passed over without the (slow)
    sentence splitting."""
    records = 0
    for line_number, line in _lines(path):
        if not line.strip():
            continue
        records += 1
        if records <= skip:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{line_number}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(f"{path}:{line_number}: expected an object with a string field 'text'")
        sentences = splitter.split(record["text"])
        if sentences:
            yield sentences


def read_documents(path: str | Path, skip: int = 0, limit: int | None = None) -> Iterator[Document]:
    """Stream the documents of a corpus file, skipping the first `skip` and stopping after `limit`
    (so a held-out part can be carved from the same file). Empty documents are left out."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"corpus file not found: {path}")
    if _is_jsonl(path):
        documents = _jsonl_documents(path, SentenceSplitter(), skip)
    else:
        documents = (doc for index, doc in enumerate(_plain_text_documents(path)) if index >= skip)
    count = 0
    for document in documents:
        if limit is not None and count >= limit:
            return
        count += 1
        yield document
    if count == 0:
        raise InputError(f"{path}: no text found (the file is empty"
                         + (f" or has at most {skip} documents to skip)" if skip else ")"))

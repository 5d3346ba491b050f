"""Reading a pre-training corpus as documents made of sentences.

Two formats, as in BERT's data preparation:
- plain text (`.txt`, optionally `.gz`): one sentence a line, a blank line between documents;
- JSON Lines (`.jsonl`, optionally `.gz`): one document a line with a `text` field, split into
  paragraphs at blank lines and into sentences (hard-wrapped lines are joined first) by pysbd's
  rules (`sentences.py`; pysbd itself with `splitter="pysbd"`).

Readers report how many bytes of the file each document took (`on_bytes`), for a progress bar in
megabytes: one Gutenberg document is a whole book, so counting documents says little.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from bertforge.errors import InputError
from bertforge.io.readers import check_input_file, corpus_jsonl_texts, decoded_lines, is_jsonl
from bertforge.pretraining.sentences import make_splitter

logger = logging.getLogger(__name__)

Document = list[str]  # the sentences of one document, in order
RawDocument = str | list[str]  # a JSON Lines record's text, not yet split; or a text file's document
ByteCounter = Callable[[int], object]


def _ignore(_: int) -> None:
    return None


def text_size(path: str | Path) -> int | None:
    """The bytes of text in a corpus file, for a progress bar's total: its size, or for a `.gz` the
    uncompressed size its trailer records. That is kept modulo 4 GiB (and for the last member of a
    concatenated file only), so None for a file of over 1 GiB compressed or an unreadable one."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.suffix.lower() != ".gz":
            return size
        if size > 1 << 30:
            return None
        with open(path, "rb") as f:
            f.seek(-4, 2)
            return struct.unpack("<I", f.read(4))[0]
    except (OSError, struct.error):
        return None


# A line of a one-sentence-a-line file ends a sentence; a hard-wrapped line mostly ends in a word or a comma.
MID_SENTENCE_END = ",;-\u2013\u2014"
WRAPPED_SHARE, WRAPPED_MIN_LINES = 0.5, 20


def _plain_text_documents(path: Path, on_bytes: ByteCounter) -> Iterator[Document]:
    document: Document = []
    breaks = size = lines = open_lines = 0
    for _, line in decoded_lines(path, keep_ends=True):
        size += len(line.encode("utf-8"))
        line = line.strip()
        if line:
            document.append(line)
            lines += 1
            open_lines += line[-1].isalnum() or line[-1] in MID_SENTENCE_END
        elif document:
            breaks += 1
            on_bytes(size)
            size = 0
            yield document
            document = []
    on_bytes(size)
    if lines >= WRAPPED_MIN_LINES and open_lines > WRAPPED_SHARE * lines:
        # Each wrapped line would be a segment and each paragraph a document: fragments, and few isNext pairs.
        logger.warning("%s: %d of its %d lines end mid-sentence, as hard-wrapped prose does, but a text corpus is "
                       "read as one sentence a line with a blank line between documents; to have the text split "
                       "into sentences, give each document as a JSON Lines record {\"text\": ...} in a .jsonl file",
                       path, open_lines, lines)
    if document:
        if breaks == 0:
            logger.warning("%s has no blank lines between documents: it is read as one document, so "
                           "notNext segments come from elsewhere in the same text", path)
        yield document


def read_raw_documents(path: str | Path, skip: int = 0, limit: int | None = None,
                       on_bytes: ByteCounter = _ignore) -> Iterator[RawDocument]:
    """`read_documents` without the sentence splitting, which is most of the work: what the chunks
    of `pretrain prepare` are cut from before any process splits them."""
    path = check_input_file(path)
    if is_jsonl(path):
        documents = corpus_jsonl_texts(path, skip, on_bytes)
    else:
        documents = (doc for index, doc in enumerate(_plain_text_documents(path, on_bytes)) if index >= skip)
    count = 0
    for document in documents:
        if limit is not None and count >= limit:
            return
        count += 1
        yield document
    if count == 0:
        raise InputError(f"{path}: no text found (the file is empty or blank"
                         + (f", or has at most {skip} documents to skip)" if skip else ")"))


def split_document(document: RawDocument, splitter) -> Document:
    return splitter.split(document) if isinstance(document, str) else document


def estimated_tokens(document: RawDocument) -> int:
    """About 4 characters a token: the size by which chunks are cut, known before splitting."""
    return (len(document) if isinstance(document, str) else sum(len(s) for s in document)) // 4


def read_documents(path: str | Path, skip: int = 0, limit: int | None = None, splitter: str = "rules",
                   on_bytes: ByteCounter = _ignore) -> Iterator[Document]:
    """Stream the documents of a corpus file, skipping the first `skip` and stopping after `limit`
    (so a held-out part can be carved from the same file). Empty documents are left out.
    `splitter` names the sentence splitter of JSON Lines documents ("rules" or "pysbd");
    `on_bytes(n)` is called as each n bytes of the file are read."""
    split = make_splitter(splitter)
    for document in read_raw_documents(path, skip, limit, on_bytes):
        sentences = split_document(document, split)
        if sentences:
            yield sentences

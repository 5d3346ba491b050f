"""Read a training corpus from files: `.txt`, `.jsonl` (one JSON object with a `text` field per
line), each optionally gzip-compressed (`.gz`).

Files are read as bytes and decoded here, so that text which is not UTF-8 is reported with the
file name and the byte offset of the first bad byte (in the decompressed data for `.gz` files)
instead of a bare `UnicodeDecodeError` from deep inside a trainer.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from bertforge.errors import InputError

# Plain text is handed on in pieces of about this many bytes, cut at line ends: large enough
# that the per-piece overhead vanishes, small enough to keep memory flat.
TEXT_CHUNK_BYTES = 1 << 20
UTF8_BOM = b"\xef\xbb\xbf"


def read_corpus(paths: Iterable[str | Path]) -> Iterator[str]:
    """The texts of every file in `paths`, in order: pieces of whole lines for text files, the
    `text` field of each record for `.jsonl` files. Any other extension is read as plain text.
    Missing files are reported at once, before anything is read."""
    paths = [Path(path) for path in paths]
    for path in paths:
        if not path.is_file():
            raise InputError(f"corpus file not found: {path}" if not path.exists() else f"{path} is not a file")
    return _read_files(paths)


def _read_files(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        try:
            yield from _read_file(path)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise InputError(f"{path}: not a valid gzip file ({e})") from None


def _read_file(path: Path) -> Iterator[str]:
    compressed = path.suffix == ".gz"
    kind = Path(path.stem).suffix if compressed else path.suffix
    where = "byte offset {} of the decompressed data" if compressed else "byte offset {}"
    with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
        if kind == ".jsonl":
            yield from _read_jsonl(f, path, where)
        else:
            yield from _read_text(f, path, where)


def _decode(data: bytes, path: Path, offset: int, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        at = where.format(offset + e.start)
        raise InputError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at {at})") from None


def _read_text(f, path: Path, where: str) -> Iterator[str]:
    offset = 0
    while lines := f.readlines(TEXT_CHUNK_BYTES):
        data = b"".join(lines)
        start = len(UTF8_BOM) if offset == 0 and data.startswith(UTF8_BOM) else 0
        yield _decode(data[start:], path, offset + start, where)
        offset += len(data)


def _read_jsonl(f, path: Path, where: str) -> Iterator[str]:
    offset = 0
    for line_number, line in enumerate(f, start=1):
        text = _decode(line, path, offset, where)
        offset += len(line)
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}, line {line_number}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(f"{path}, line {line_number}: expected a JSON object with a string \"text\" field")
        yield record["text"]

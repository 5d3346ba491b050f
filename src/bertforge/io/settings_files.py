"""Reading the files bertforge keeps settings in (config.json, tokenizer files and vocab.txt, run cards,
checkpoint manifests, prepared data's index): every reason a file cannot be had is one line naming it, in the
error class of the caller's concern. Data files (SQuAD, JSON Lines, tables) are `readers`' concern."""

from __future__ import annotations

import json
from pathlib import Path

from bertforge.errors import BertforgeError, InputError
from bertforge.io.readers import decode_text


def read_settings_text(path: str | Path, error: type[BertforgeError] = InputError) -> str:
    """The text of `path`; missing, a directory or unreadable, it is an `error` reading "path: reason"; not UTF-8,
    "path:line: reason", as every reader says it (`readers.decode_text`)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a file") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_text(data, path, error=error)


def read_json_object(path: str | Path, error: type[BertforgeError] = InputError, what: str = "a JSON object") -> dict:
    """The object in the JSON file `path`; unreadable (`read_settings_text`), not JSON, or JSON but not an
    object (`what` says what it should be), it is an `error` reading "path: reason"."""
    path = Path(path)
    try:
        data = json.loads(read_settings_text(path, error))
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: a JSON {type(data).__name__}, not {what}")
    return data

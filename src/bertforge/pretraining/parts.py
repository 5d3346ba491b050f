"""A data set prepared in parts (`pretrain prepare --part I/N`, one part per machine), read as one.

The user gathers the part directories in one directory (under any names) and gives that to
training. The parts must come from the same command on the same corpus: the same vocabulary,
options, corpus files (by name), documents skipped and kept, number of parts and corpus chunks,
and every part from 1 to N must be there exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path

from bertforge.errors import InputError, is_whole_number
from bertforge.io.settings_files import read_json_object

FORMAT_VERSION = 1
INDEX_FILE = "index.json"

# What the parts of one data set share, as (what the error calls it, how to read it from an index).
_SHARED = [
    ("vocabulary", lambda index: index["vocab_fingerprint"]),
    ("corpus files", lambda index: [Path(name).name for name in index["corpus"]]),
    ("--skip-documents", lambda index: index["skip_documents"]),
    ("--max-documents", lambda index: index["max_documents"]),
    ("number of parts", lambda index: index["part"]["count"]),
    ("number of corpus chunks", lambda index: index["part"]["corpus_chunks"]),
]


# The keys of an index the readers use, with the JSON type each must have.
_KEYS = {"options": (dict, "an object"), "vocab_fingerprint": (str, "a string"), "corpus": (list, "a list"),
         "instances": (int, "a whole number"), "shards": (list, "a list"), "stats": (dict, "an object")}


def _damaged(index_path: Path, problem: str) -> InputError:
    return InputError(f"{index_path}: {problem}; prepare the data again")


def read_index(directory: Path) -> dict:
    """A data directory's index, checked for the keys the readers use: a damaged or hand-edited one is
    refused here, naming the key, not found out by a KeyError or an IndexError in the middle of training."""
    index_path = directory / INDEX_FILE
    try:
        index = read_json_object(index_path, what="the object `pretrain prepare` writes")
    except InputError as e:
        raise InputError(f"{e}; prepare the data again") from None
    if index.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{index_path}: format version {index.get('format_version')} is not "
                         f"{FORMAT_VERSION}; prepare the data again")
    for key, (kind, what) in _KEYS.items():
        if key not in index:
            raise _damaged(index_path, f"no {key!r}")
        if not isinstance(index[key], kind) or isinstance(index[key], bool):
            raise _damaged(index_path, f"{key!r} is {json.dumps(index[key])[:40]}, not {what}")
    part = index.get("part")
    if part is not None and not (isinstance(part, dict)
                                 and all(is_whole_number(part.get(key)) for key in ("index", "count", "corpus_chunks"))):
        raise _damaged(index_path, "'part' is not null nor an object of its index, count and corpus_chunks")
    for number, shard in enumerate(index["shards"]):
        # a plain file name: the shard's files are read from this directory, nowhere else
        if not (isinstance(shard, dict) and isinstance(shard.get("name"), str) and shard["name"]
                and Path(shard["name"]).name == shard["name"] and is_whole_number(shard.get("instances"))):
            raise _damaged(index_path, f"shards[{number}] is not a shard's file name and number of instances")
    return index


def load_index(directory: Path) -> dict:
    """The index of a data directory, or of the parts in it merged into one (shard names then
    lead with the part's directory)."""
    if (directory / INDEX_FILE).is_file():
        return read_index(directory)
    parts = sorted(p for p in directory.iterdir() if (p / INDEX_FILE).is_file()) if directory.is_dir() else []
    if not parts:
        raise InputError(f"{directory} is not a prepared data directory (no {INDEX_FILE}, nor directories with one "
                         "made by `--part`); make one with `bertforge pretrain prepare`")
    return _merge(directory, {path: read_index(path) for path in parts})


def _merge(directory: Path, indexes: dict[Path, dict]) -> dict:
    for path, index in indexes.items():
        if not index.get("part"):
            raise InputError(f"{path} is a whole data set, not a part made with `--part I/N`: give it on its own, "
                             f"or keep only parts in {directory}")
    (first_path, first), *others = indexes.items()
    for path, index in others:
        for name, read in _SHARED:
            if read(index) != read(first):
                raise InputError(f"{path} and {first_path} are parts of different data sets: their {name} differ "
                                 f"({read(index)} and {read(first)})")
        for key, value in first["options"].items():
            if index["options"].get(key) != value:
                raise InputError(f"{path} and {first_path} are parts of different data sets: prepared with "
                                 f"{key} {index['options'].get(key)} and {value}")
    count, numbered = first["part"]["count"], {}
    for path, index in indexes.items():
        number = index["part"]["index"]
        if number in numbered:
            raise InputError(f"{path} and {numbered[number]} are both part {number}/{count}")
        numbered[number] = path
    missing = [f"{number}/{count}" for number in range(1, count + 1) if number not in numbered]
    if missing:
        raise InputError(f"{directory}: part {', '.join(missing)} missing (found {len(numbered)} of {count})")
    ordered = [indexes[numbered[number]] for number in range(1, count + 1)]
    stats = {key: sum(index["stats"][key] for index in ordered) for key in first["stats"] if key != "is_next_fraction"}
    instances = sum(index["instances"] for index in ordered)
    return {**first, "part": None, "parts": [numbered[number].name for number in range(1, count + 1)],
            "instances": instances,
            "shards": [{**shard, "name": f"{numbered[number].name}/{shard['name']}"}
                       for number, index in zip(range(1, count + 1), ordered) for shard in index["shards"]],
            "stats": {**stats, "is_next_fraction": stats["is_next"] / instances}}

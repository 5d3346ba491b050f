"""Google's original BERT checkpoints (TensorFlow 1 `Saver` bundles), read without TensorFlow.

A release folder holds `bert_config.json`, `vocab.txt` and a checkpoint `PREFIX.index` +
`PREFIX.data-0000K-of-0000N`. The `.index` file is a LevelDB table (an SSTable: prefix-compressed
key/value blocks, an index block and a 48-byte footer) whose keys are variable names and whose
values are `BundleEntryProto` messages: dtype, shape, data shard, offset, size and a CRC32C of
the bytes. The data shards are raw little-endian arrays. Both are parsed here with `struct` and
numpy, nothing is unpickled or executed, and every block and tensor CRC is checked (masked as
TensorFlow masks them).

`read_tf_checkpoint` returns the weights under Hugging Face names (`weight_names.hf_to_bertforge`
does the rest): Google stores dense kernels `[in, out]`, PyTorch `[out, in]`, so kernels are
transposed; `output_weights` matrices are already `[out, in]`. Optimiser slots, the step
counter and any other variable are skipped without reading their bytes.
"""

from __future__ import annotations

import logging
import re
import struct
from pathlib import Path

import google_crc32c
import numpy as np
import torch

from bertforge.errors import CheckpointError

log = logging.getLogger(__name__)

FOOTER_SIZE = 48
TABLE_MAGIC = 0xDB4775248B80FB57
# TensorFlow's DataType enum → numpy dtype (little-endian), for the types a BERT checkpoint holds.
DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 14: "bfloat16",
          19: "<f2"}
SKIPPED = re.compile(r"(/adam_[mv]$|^global_step$|/Adam(_1)?$|^beta[12]_power$)")

# Google's names (after the layer number is made a path part) → Hugging Face names.
HEAD_NAMES = {
    "cls/predictions/output_bias": "cls.predictions.bias",
    "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
    "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
    "cls/squad/output_weights": "qa_outputs.weight",  # run_squad.py
    "cls/squad/output_bias": "qa_outputs.bias",
    "output_weights": "classifier.weight",  # run_classifier.py
    "output_bias": "classifier.bias",
}
SUFFIXES = {"kernel": "weight", "gamma": "weight", "beta": "bias", "bias": "bias"}


def mask_crc(crc: int) -> int:
    """TensorFlow's (and LevelDB's) masked CRC: stored CRCs are rotated and offset so that a CRC
    of data that itself contains CRCs stays well distributed."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --- protobuf wire format, just what BundleEntryProto needs ------------------------------------

def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of one protobuf message: ints for varint/fixed, bytes for nested."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", data, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", data, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    if pos != len(data):
        raise ValueError("message runs past its end")
    return fields


def _entry(data: bytes) -> dict:
    """BundleEntryProto: dtype=1, shape=2 (TensorShapeProto: dim=2 {size=1}), shard_id=3, offset=4,
    size=5, crc32c=6, slices=7."""
    entry = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0, "crc32c": None, "sliced": False}
    for number, value in _fields(data):
        if number == 1:
            entry["dtype"] = value
        elif number == 2:
            for dim_number, dim in _fields(value):
                if dim_number == 2:
                    entry["shape"].append(dict(_fields(dim)).get(1, 0))
        elif number in (3, 4, 5):
            entry[("shard_id", "offset", "size")[number - 3]] = value
        elif number == 6:
            entry["crc32c"] = value
        elif number == 7:
            entry["sliced"] = True
    return entry


# --- the SSTable of the .index file ----------------------------------------------------------

def _block(data: bytes, offset: int, size: int, path: Path) -> bytes:
    """One table block after checking its 5-byte trailer (compression type, masked CRC32C)."""
    if offset + size + 5 > len(data):
        raise CheckpointError(f"{path}: truncated (a block ends past the end of the file)")
    contents, kind = data[offset:offset + size], data[offset + size]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if mask_crc(google_crc32c.value(data[offset:offset + size + 1])) != stored:
        raise CheckpointError(f"{path}: CRC mismatch in the block at byte {offset} (corrupt file)")
    if kind != 0:  # TensorFlow's bundle writer never compresses
        raise CheckpointError(f"{path}: compressed table block (type {kind}) is not supported")
    return contents


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of a block: each key shares a prefix with the previous one."""
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_length]))
        pos += value_length
    return entries


def read_index(path: Path) -> dict[str, dict]:
    """Variable name → BundleEntryProto fields, from a `.index` file; "" holds the header."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise CheckpointError(f"{path}: not a TensorFlow checkpoint index (no table footer; truncated or another "
                              "kind of file)")
    try:
        footer = data[len(data) - FOOTER_SIZE:]
        _, pos = _varint(footer, 0)  # the meta-index block: unused by TensorFlow's bundles
        _, pos = _varint(footer, pos)
        index_offset, pos = _varint(footer, pos)
        index_size, pos = _varint(footer, pos)
        entries = {}
        for _, handle in _block_entries(_block(data, index_offset, index_size, path)):
            offset, pos = _varint(handle, 0)
            size, _ = _varint(handle, pos)
            for key, value in _block_entries(_block(data, offset, size, path)):
                entries[key.decode("utf-8")] = value
        header = dict(_fields(entries.pop("", b"")))
        parsed = {name: _entry(value) for name, value in entries.items()}
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: malformed checkpoint index ({e})") from None
    if header.get(2, 0) != 0:
        raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
    parsed[""] = {"num_shards": header.get(1, 1)}
    return parsed


def find_checkpoint(directory: Path) -> Path | None:
    """The checkpoint prefix in a folder: `bert_model.ckpt` (Google's releases), the one the
    `checkpoint` file names (what run_classifier.py / run_squad.py leave), or the only one."""
    if (directory / "bert_model.ckpt.index").exists():
        return directory / "bert_model.ckpt"
    state = directory / "checkpoint"
    if state.exists():
        match = re.search(r'^model_checkpoint_path:\s*"(.*)"', state.read_text(encoding="utf-8"), re.MULTILINE)
        if match:
            # Absolute paths point where training ran (often gs://); the files sit next to this one.
            prefix = directory / Path(match.group(1)).name
            if prefix.with_name(prefix.name + ".index").exists():
                return prefix
    indexes = sorted(directory.glob("*.index"))
    if len(indexes) > 1:
        raise CheckpointError(f"{directory}: several checkpoints ({', '.join(p.name for p in indexes)}) and no "
                              "`checkpoint` file naming one; pass the prefix, e.g. "
                              f"{directory / indexes[-1].name.removesuffix('.index')}")
    return indexes[0].with_suffix("") if indexes else None


def _tensor(entry: dict, name: str, shard: Path, handle) -> np.ndarray:
    if entry["sliced"]:
        raise CheckpointError(f"{shard}: variable {name!r} is partitioned into slices, which is not supported")
    if entry["dtype"] not in DTYPES:
        raise CheckpointError(f"{shard}: variable {name!r} has TensorFlow dtype {entry['dtype']}, not supported")
    dtype = DTYPES[entry["dtype"]]
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    expected = int(np.prod(entry["shape"], dtype=np.int64)) * itemsize
    if entry["size"] != expected:
        raise CheckpointError(f"{shard}: variable {name!r} has {entry['size']} bytes, its shape "
                              f"{entry['shape']} needs {expected}")
    handle.seek(entry["offset"])
    raw = handle.read(entry["size"])
    if len(raw) != entry["size"]:
        raise CheckpointError(f"{shard}: truncated (variable {name!r} ends at byte "
                              f"{entry['offset'] + entry['size']}, the file has {handle.seek(0, 2)})")
    if entry["crc32c"] is not None and mask_crc(google_crc32c.value(raw)) != entry["crc32c"]:
        raise CheckpointError(f"{shard}: CRC mismatch in variable {name!r} (corrupt file)")
    if dtype == "bfloat16":  # numpy has no bfloat16: widen the 16 bits into float32's upper half
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])
    return np.frombuffer(raw, dtype).reshape(entry["shape"])


def read_tf_arrays(prefix: Path, wanted=lambda name: True) -> dict[str, np.ndarray]:
    """Google's variable name → array, for the variables `wanted` accepts, CRC-checked."""
    index_file = prefix.with_name(prefix.name + ".index")
    entries = read_index(index_file)
    num_shards = entries.pop("")["num_shards"]
    by_shard: dict[int, list[str]] = {}
    for name, entry in entries.items():
        if wanted(name):
            by_shard.setdefault(entry["shard_id"], []).append(name)
    arrays = {}
    for shard_id, names in sorted(by_shard.items()):
        shard = prefix.with_name(f"{prefix.name}.data-{shard_id:05d}-of-{num_shards:05d}")
        try:
            with open(shard, "rb") as handle:
                for name in sorted(names, key=lambda n: entries[n]["offset"]):
                    arrays[name] = _tensor(entries[name], name, shard, handle)
        except FileNotFoundError:
            raise CheckpointError(f"{shard}: data shard missing ({index_file.name} lists {num_shards})") from None
    return arrays


def hf_name(google_name: str) -> tuple[str, bool] | None:
    """Google's variable name → (Hugging Face name, transpose?); None for an unknown name."""
    name = re.sub(r"/layer_(\d+)/", r"/layer/\1/", google_name)
    if name in HEAD_NAMES:
        return HEAD_NAMES[name], False
    module, _, leaf = name.rpartition("/")
    if module == "bert/embeddings" and leaf.endswith("_embeddings"):  # tables: no kernel/bias leaf
        return f"bert.embeddings.{leaf}.weight", False
    if leaf not in SUFFIXES or not module.startswith(("bert/", "cls/predictions/transform/")):
        return None
    return f"{module.replace('/', '.')}.{SUFFIXES[leaf]}", leaf == "kernel"


def read_tf_checkpoint(prefix: Path) -> dict[str, torch.Tensor]:
    """A Google BERT checkpoint as Hugging Face weights. Optimiser slots and names that are not
    Google's BERT names are skipped unread (the loader then says which encoder weights it lacks)."""
    ignored = []

    def wanted(name: str) -> bool:
        if SKIPPED.search(name):
            return False
        if hf_name(name) is None:
            ignored.append(name)
            return False
        return True

    weights = {}
    for name, array in read_tf_arrays(prefix, wanted).items():
        hf, transpose = hf_name(name)
        # A copy either way: the arrays view read-only bytes, which torch tensors must not share.
        weights[hf] = torch.from_numpy(np.ascontiguousarray(array.T) if transpose else array.copy())
    if ignored:
        log.info("%s: ignored %d variables that are not BERT weights (%s ...)", prefix, len(ignored), ignored[0])
    return weights

"""Prepared pre-training data: tokenised once, stored as memory-mapped NumPy shards.

A data directory holds `index.json` (options, statistics, shard sizes), the vocabulary, and per
shard one `.npy` file per field. Training reads batches straight from the memory maps, so a
corpus larger than RAM trains in bounded memory; preparation streams the corpus in chunks of
documents (notNext segments are drawn from the same chunk).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bertforge.errors import ConfigError, InputError
from bertforge.io.atomic import atomic_directory, check_output_dir, write_json
from bertforge.io.readers import check_input_file
from bertforge.pretraining.corpus import read_documents, text_size
from bertforge.pretraining.instances import Instance, create_instances, tokenize_documents
from bertforge.pretraining.masking import IGNORE_INDEX, MaskingConfig, instance_rng, mask_batch, mask_sequence

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_FILE = "index.json"


@dataclass
class PrepareOptions:
    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    dupe_factor: int = 5
    masking: str = "dynamic"  # "static": masks drawn here, once; "dynamic": drawn per epoch while training
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    whole_word_mask: bool = False
    seed: int = 12345
    shard_size: int = 100_000  # instances per shard
    chunk_tokens: int = 5_000_000  # documents held in memory at once while making instances
    splitter: str = "rules"  # sentence splitter of JSON Lines documents: "rules" or "pysbd"

    def validate(self) -> None:
        checks = [
            (8 <= self.max_seq_length <= 512, "max_seq_length must be between 8 and 512"),
            (0.0 <= self.short_seq_prob <= 1.0, "short_seq_prob must be between 0 and 1"),
            (self.dupe_factor >= 1, "dupe_factor must be at least 1"),
            (self.masking in ("static", "dynamic"), "masking must be 'static' or 'dynamic'"),
            (0.0 < self.masked_lm_prob < 1.0, "masked_lm_prob must be between 0 and 1"),
            (self.max_predictions_per_seq >= 1, "max_predictions_per_seq must be at least 1"),
            (self.shard_size >= 1 and self.chunk_tokens >= 1, "shard_size and chunk_tokens must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def masking_config(self, tokenizer) -> MaskingConfig:
        return MaskingConfig.for_tokenizer(tokenizer, masked_lm_prob=self.masked_lm_prob,
                                           max_predictions_per_seq=self.max_predictions_per_seq,
                                           whole_word_mask=self.whole_word_mask)


def vocab_fingerprint(tokenizer) -> str:
    tokens = sorted(tokenizer.vocab, key=tokenizer.vocab.get)
    return hashlib.sha256("\n".join(tokens).encode()).hexdigest()[:16]


class _ShardWriter:
    def __init__(self, directory: Path, options: PrepareOptions, masking: MaskingConfig, vocab_size: int):
        self.directory, self.options, self.masking = directory, options, masking
        self.token_dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
        self.pending: list[Instance] = []
        self.shards: list[dict] = []
        self.written = 0

    def add(self, instances: list[Instance]) -> None:
        self.pending.extend(instances)
        while len(self.pending) >= self.options.shard_size:
            self._flush(self.pending[:self.options.shard_size])
            self.pending = self.pending[self.options.shard_size:]

    def close(self) -> None:
        if self.pending:
            self._flush(self.pending)
            self.pending = []

    def _flush(self, instances: list[Instance]) -> None:
        n, width = len(instances), self.options.max_seq_length
        fields = {
            "input_ids": np.zeros((n, width), dtype=self.token_dtype),
            "lengths": np.array([len(x.tokens) for x in instances], dtype=np.int16),
            "segment_b_starts": np.array([x.segment_b_start for x in instances], dtype=np.int16),
            "next_sentence_labels": np.array([x.next_sentence_label for x in instances], dtype=np.uint8),
        }
        if self.options.masking == "static":
            fields["mlm_positions"] = np.full((n, self.options.max_predictions_per_seq), -1, dtype=np.int16)
            fields["mlm_ids"] = np.zeros((n, self.options.max_predictions_per_seq), dtype=self.token_dtype)
        for row, instance in enumerate(instances):
            tokens = instance.tokens
            if self.options.masking == "static":
                rng = instance_rng(self.options.seed, 0, self.written + row)
                tokens, positions, originals = mask_sequence(tokens, self.masking, rng)
                fields["mlm_positions"][row, :len(positions)] = positions
                fields["mlm_ids"][row, :len(positions)] = originals
            fields["input_ids"][row, :len(tokens)] = tokens
        name = f"shard-{len(self.shards):05d}"
        for field, array in fields.items():
            np.save(self.directory / f"{name}.{field}.npy", array)
        self.shards.append({"name": name, "instances": n})
        self.written += n


def prepare(corpus_files: Iterable[str | Path], output_dir: str | Path, tokenizer, options: PrepareOptions,
            skip_documents: int = 0, max_documents: int | None = None, progress: bool = True,
            finish: Callable[[Path, dict], None] | None = None) -> dict:
    """Corpus files → instances → shards in `output_dir`; returns the index (with statistics).
    The data set is built in a directory beside `output_dir` and swapped in when complete, so a
    failure (a bad corpus, an interrupt) leaves a previous data set there intact and creates none.
    `finish(directory, index)` may add files (a run card) to the data set before the swap."""
    options.validate()
    files = [check_input_file(f) for f in corpus_files]
    if not files:
        raise InputError("no corpus file given")
    check_output_dir(output_dir)
    with atomic_directory(output_dir) as build:
        index = _prepare_into(build, files, tokenizer, options, skip_documents, max_documents, progress)
        if finish is not None:
            finish(build, index)
        return index


def _prepare_into(output_dir: Path, files: list[Path], tokenizer, options: PrepareOptions, skip_documents: int,
                  max_documents: int | None, progress: bool) -> dict:
    masking = options.masking_config(tokenizer)
    writer = _ShardWriter(output_dir, options, masking, tokenizer.vocab_size)
    stats = {"documents": 0, "sentences": 0, "tokens": 0, "truncated_sentences": 0, "is_next": 0}
    chunk, chunk_tokens, chunk_index = [], 0, 0

    def flush_chunk():
        nonlocal chunk, chunk_tokens, chunk_index
        tokenized = tokenize_documents(chunk, tokenizer, options.max_seq_length)
        for key in ("sentences", "tokens"):
            stats[key] += getattr(tokenized, key)
        stats["truncated_sentences"] += tokenized.truncated
        stats["documents"] += len(tokenized.documents)
        if tokenized.documents:
            rng = random.Random(f"{options.seed}-{chunk_index}")
            instances = create_instances(tokenized.documents, options.max_seq_length, options.short_seq_prob,
                                         options.dupe_factor, rng, tokenizer.cls_token_id, tokenizer.sep_token_id)
            stats["is_next"] += sum(x.next_sentence_label == 0 for x in instances)
            writer.add(instances)
        chunk, chunk_tokens, chunk_index = [], 0, chunk_index + 1

    sizes = [text_size(path) for path in files]
    total = None if None in sizes else sum(sizes)
    with tqdm(desc="preparing", unit="B", unit_scale=True, total=total, disable=not progress) as bar:
        for path in files:
            for document in read_documents(path, skip_documents, max_documents, options.splitter, bar.update):
                chunk.append(document)
                chunk_tokens += sum(len(s) for s in document) // 4  # ~4 characters a token
                bar.set_postfix(instances=writer.written + len(writer.pending))
                if chunk_tokens >= options.chunk_tokens:
                    flush_chunk()
        if chunk:
            flush_chunk()
        writer.close()
    if stats["truncated_sentences"]:
        logger.warning("%d sentences were longer than %d tokens and were truncated",
                       stats["truncated_sentences"], options.max_seq_length - 3)
    if writer.written == 0:
        raise InputError(f"no instances could be made from {', '.join(map(str, files))}")
    tokenizer.save_pretrained(output_dir)
    index = {"format_version": FORMAT_VERSION, "options": asdict(options), "vocab_size": tokenizer.vocab_size,
             "vocab_fingerprint": vocab_fingerprint(tokenizer), "corpus": [str(f) for f in files],
             "skip_documents": skip_documents, "max_documents": max_documents,
             "instances": writer.written, "shards": writer.shards,
             "stats": {**stats, "is_next_fraction": stats["is_next"] / writer.written}}
    write_json(output_dir / INDEX_FILE, index, indent=2)
    return index


class PretrainingData:
    """Random access to prepared instances through memory maps; `batch(indices, epoch)` gives
    padded tensors' worth of NumPy arrays, masked as the data was prepared."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        if not index_path.is_file():
            raise InputError(f"{self.directory} is not a prepared data directory (no {INDEX_FILE}); "
                             "make one with `bertforge pretrain prepare`")
        self.index = json.loads(index_path.read_text())
        if self.index.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{index_path}: format version {self.index.get('format_version')} is not "
                             f"{FORMAT_VERSION}; prepare the data again")
        self.options = PrepareOptions(**self.index["options"])
        self.fields = ["input_ids", "lengths", "segment_b_starts", "next_sentence_labels"]
        if self.options.masking == "static":
            self.fields += ["mlm_positions", "mlm_ids"]
        try:
            self.shards = [{field: np.load(self.directory / f"{shard['name']}.{field}.npy", mmap_mode="r")
                            for field in self.fields} for shard in self.index["shards"]]
        except (OSError, ValueError) as e:
            raise InputError(f"{self.directory}: a shard file is missing or damaged ({e})") from None
        self.shard_starts = np.cumsum([0] + [s["instances"] for s in self.index["shards"]])
        self._masking: MaskingConfig | None = None

    def __len__(self) -> int:
        return int(self.shard_starts[-1])

    @property
    def seed(self) -> int:
        return self.options.seed

    def tokenizer(self):
        from bertforge.tokenization import BertTokenizer

        return BertTokenizer.from_pretrained(self.directory)

    def _gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        shard_of = np.searchsorted(self.shard_starts, indices, side="right") - 1
        out = {}
        for field in self.fields:
            parts = np.empty((len(indices),) + self.shards[0][field].shape[1:], dtype=self.shards[0][field].dtype)
            for shard in np.unique(shard_of):
                rows = shard_of == shard
                parts[rows] = self.shards[shard][field][indices[rows] - self.shard_starts[shard]]
            out[field] = parts
        return out

    def batch(self, indices: np.ndarray, epoch: int, masking: MaskingConfig | None = None) -> dict[str, np.ndarray]:
        """input_ids, attention_mask, token_type_ids, labels (-100 where not predicted) and
        next_sentence_label, padded to the longest instance of the batch."""
        indices = np.asarray(indices, dtype=np.int64)
        raw = self._gather(indices)
        lengths = raw["lengths"].astype(np.int64)
        width = int(lengths.max())
        input_ids = raw["input_ids"][:, :width].astype(np.int64)
        positions = np.arange(width)
        attention_mask = positions[None, :] < lengths[:, None]
        token_type_ids = (positions[None, :] >= raw["segment_b_starts"][:, None]) & attention_mask
        if self.options.masking == "static":
            labels = np.full(input_ids.shape, IGNORE_INDEX, dtype=np.int64)
            rows, slots = np.nonzero(raw["mlm_positions"] >= 0)
            labels[rows, raw["mlm_positions"][rows, slots]] = raw["mlm_ids"][rows, slots]
        else:
            if masking is None:
                if self._masking is None:
                    self._masking = self.options.masking_config(self.tokenizer())
                masking = self._masking
            input_ids, labels = mask_batch(input_ids, lengths, indices, epoch, self.seed, masking)
        return {"input_ids": input_ids, "attention_mask": attention_mask.astype(np.int64),
                "token_type_ids": token_type_ids.astype(np.int64), "labels": labels,
                "next_sentence_label": raw["next_sentence_labels"].astype(np.int64)}

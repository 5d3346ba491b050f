"""Prepared pre-training data: tokenised once, stored as memory-mapped NumPy shards.

A data directory holds `index.json` (options, statistics, shard sizes), the vocabulary, and per
shard one `.npy` file per field. Training reads batches straight from the memory maps, so a
corpus larger than RAM trains in bounded memory; preparation streams the corpus in chunks of
documents (notNext segments are drawn from the same chunk; `chunks.py`), over several processes
if asked, or one part of the chunks per machine (`parts.py` reads the parts back as one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bertforge.errors import ConfigError, InputError
from bertforge.io.atomic import atomic_directory, check_output_dir, write_json
from bertforge.io.readers import check_input_files
from bertforge.paths import TOKENIZER_FILES
from bertforge.pretraining.chunks import STAT_KEYS, ChunkRows, make_chunks, read_chunks, select_part
from bertforge.pretraining.corpus import text_size
from bertforge.pretraining.masking import IGNORE_INDEX, MaskingConfig, mask_batch
from bertforge.pretraining.parts import FORMAT_VERSION, INDEX_FILE, load_index
from bertforge.progress import progress_bar
from bertforge.runcard import CARD_FILE, SUMMARY_FILE
from bertforge.tokenization.wordpiece import vocab_fingerprint

logger = logging.getLogger(__name__)
# What a prepared data directory holds: the shards, their index, the tokenizer's files and the run card. The
# directory is replaced whole, so one that holds anything else is refused rather than deleted with it.
DATA_FILES = (INDEX_FILE, "shard-*.npy", *TOKENIZER_FILES, CARD_FILE, SUMMARY_FILE)


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
            (self.shard_size >= 1, f"shard_size must be at least 1, got {self.shard_size}"),
            (self.chunk_tokens >= 1, f"chunk_tokens must be at least 1, got {self.chunk_tokens}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        wanted = round(self.max_seq_length * self.masked_lm_prob)
        if wanted > self.max_predictions_per_seq:  # allowed, as in Google's tool, but rarely meant
            logger.warning("--masked-lm-prob %g of --max-seq-length %d asks for %d predictions a sequence, more than "
                           "--max-predictions-per-seq %d: full sequences get %d (%.1f%%); give --max-predictions-per-seq "
                           "%d for the rate asked", self.masked_lm_prob, self.max_seq_length, wanted,
                           self.max_predictions_per_seq, self.max_predictions_per_seq,
                           100 * self.max_predictions_per_seq / self.max_seq_length, wanted)

    def masking_config(self, tokenizer) -> MaskingConfig:
        return MaskingConfig.for_tokenizer(tokenizer, masked_lm_prob=self.masked_lm_prob,
                                           max_predictions_per_seq=self.max_predictions_per_seq,
                                           whole_word_mask=self.whole_word_mask)


class _ShardWriter:
    """Chunks' rows, in order, into shards of `shard_size` rows."""

    def __init__(self, directory: Path, shard_size: int):
        self.directory, self.shard_size = directory, shard_size
        self.pending: list[dict[str, np.ndarray]] = []
        self.pending_rows = 0
        self.shards: list[dict] = []
        self.written = 0

    def add(self, rows: ChunkRows) -> None:
        if len(rows):
            self.pending.append(rows.fields)
            self.pending_rows += len(rows)
        if self.pending_rows >= self.shard_size:
            fields = self._take_pending()
            while len(fields["lengths"]) >= self.shard_size:
                self._write({k: v[:self.shard_size] for k, v in fields.items()})
                fields = {k: v[self.shard_size:] for k, v in fields.items()}
            if len(fields["lengths"]):
                self.pending, self.pending_rows = [fields], len(fields["lengths"])

    def close(self) -> None:
        if self.pending_rows:
            self._write(self._take_pending())

    def _take_pending(self) -> dict[str, np.ndarray]:
        fields = {k: np.concatenate([p[k] for p in self.pending]) for k in self.pending[0]}
        self.pending, self.pending_rows = [], 0
        return fields

    def _write(self, fields: dict[str, np.ndarray]) -> None:
        name = f"shard-{len(self.shards):05d}"
        for key, array in fields.items():
            np.save(self.directory / f"{name}.{key}.npy", array)
        n = len(fields["lengths"])
        self.shards.append({"name": name, "instances": n})
        self.written += n


def _check_workers_and_part(part: tuple[int, int] | None, workers: int) -> None:
    if part is not None and not (len(part) == 2 and 1 <= part[0] <= part[1]):
        raise ConfigError(f"--part {'/'.join(map(str, part))}: expected I/N with 1 <= I <= N")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")


def prepare(corpus_files: Iterable[str | Path], output_dir: str | Path, tokenizer, options: PrepareOptions,
            skip_documents: int = 0, max_documents: int | None = None, progress: bool = True,
            finish: Callable[[Path, dict], None] | None = None, workers: int = 1,
            part: tuple[int, int] | None = None) -> dict:
    """Corpus files → instances → shards in `output_dir`; returns the index (with statistics).
    `workers` processes share the work (the output is the same for any number; they are spawned, so
    a script calling this with workers > 1 needs the usual `if __name__ == "__main__":` guard);
    `part=(I, N)` prepares only part I of N of the chunks (`chunks.select_part`), for one of N machines.
    The data set is built in a directory beside `output_dir` and swapped in when complete, so a
    failure (a bad corpus, an interrupt) leaves a previous data set there intact and creates none.
    `finish(directory, index)` may add files (a run card) to the data set before the swap."""
    options.validate()
    _check_workers_and_part(part, workers)
    files = check_input_files(corpus_files, "CORPUS")
    if not files:
        raise InputError("no corpus file given")
    check_output_dir(output_dir, inputs=files, holds=INDEX_FILE, only=DATA_FILES)
    with atomic_directory(output_dir) as build:
        index = _prepare_into(build, files, tokenizer, options, skip_documents, max_documents, progress, workers,
                              part)
        if finish is not None:
            finish(build, index)
        return index


def _prepare_into(output_dir: Path, files: list[Path], tokenizer, options: PrepareOptions, skip_documents: int,
                  max_documents: int | None, progress: bool, workers: int, part: tuple[int, int] | None) -> dict:
    writer = _ShardWriter(output_dir, options.shard_size)
    stats = dict.fromkeys(STAT_KEYS, 0)
    chunk_count, lone_documents = 0, 0
    sizes = [text_size(path) for path in files]
    total = None if None in sizes else sum(sizes)
    with progress_bar(desc="preparing", unit="B", unit_scale=True, total=total, disable=not progress) as bar:
        def counted(chunks):  # every chunk read, this part's or not
            nonlocal chunk_count
            for chunk in chunks:
                chunk_count = chunk.index + 1
                yield chunk

        chunks = counted(read_chunks(files, skip_documents, max_documents, options.chunk_tokens))
        mine = select_part(chunks, part, lambda skipped: bar.update(skipped.bytes))
        for rows in make_chunks(mine, tokenizer, options, workers):
            writer.add(rows)
            for key in STAT_KEYS:
                stats[key] += rows.stats[key]
            lone_documents += rows.stats["documents"] == 1
            bar.update(rows.bytes)
            bar.set_postfix(instances=writer.written + writer.pending_rows, refresh=False)
        writer.close()
    if stats["truncated_sentences"]:
        logger.warning("%d sentences were longer than %d tokens and were truncated",
                       stats["truncated_sentences"], options.max_seq_length - 3)
    if lone_documents:  # a random next sentence is drawn from the other documents of the chunk, as in BERT's tool
        logger.warning("%d chunk(s) held a single document, so their notNext pairs take the second segment from "
                       "that same document; give more documents, or a larger --chunk-tokens", lone_documents)
    if writer.written == 0:
        if part is not None and chunk_count < part[1]:
            raise InputError(f"--part {part[0]}/{part[1]}: the corpus makes only {chunk_count} chunk(s) of about "
                             f"{options.chunk_tokens} tokens (--chunk-tokens), fewer than the {part[1]} parts; "
                             "use fewer parts or smaller chunks")
        raise InputError(f"no instances could be made from {', '.join(map(str, files))}")
    tokenizer.save_pretrained(output_dir)
    index = {"format_version": FORMAT_VERSION, "options": asdict(options), "vocab_size": len(tokenizer),
             "vocab_fingerprint": vocab_fingerprint(tokenizer), "corpus": [str(f) for f in files],
             "skip_documents": skip_documents, "max_documents": max_documents,
             "part": None if part is None else {"index": part[0], "count": part[1], "corpus_chunks": chunk_count},
             "instances": writer.written, "shards": writer.shards,
             "stats": {**stats, "is_next_fraction": stats["is_next"] / writer.written}}
    write_json(output_dir / INDEX_FILE, index, indent=2)
    return index


class PretrainingData:
    """Random access to prepared instances through memory maps; `batch(indices, epoch)` gives
    padded tensors' worth of NumPy arrays, masked as the data was prepared. `directory` is a
    prepared data directory, or a directory of the parts of one (`parts.py`), read in part order."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.index = load_index(self.directory)
        try:
            self.options = PrepareOptions(**self.index["options"])
        except TypeError as e:  # an option this version does not know
            index_path = self.directory / (self.index["parts"][0] if self.index.get("parts") else "") / INDEX_FILE
            raise InputError(f"{index_path}: 'options' are not those of `pretrain prepare` ({e}); prepare the data "
                             "again") from None
        self.fields = ["input_ids", "lengths", "segment_b_starts", "next_sentence_labels"]
        if self.options.masking == "static":
            self.fields += ["mlm_positions", "mlm_ids"]
        self.shards = [{field: self._open(shard, field) for field in self.fields} for shard in self.index["shards"]]
        self.shard_starts = np.cumsum([0] + [s["instances"] for s in self.index["shards"]])
        self._masking: MaskingConfig | None = None

    def _open(self, shard: dict, field: str) -> np.ndarray:
        """One field of a shard, memory-mapped; its rows must be the instances the index counts, or a batch
        would read past its end in the middle of training."""
        path = self.directory / f"{shard['name']}.{field}.npy"
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            problem = "missing" if isinstance(e, FileNotFoundError) else f"damaged ({getattr(e, 'strerror', None) or e})"
            raise InputError(f"{path}: a shard file is {problem}; prepare the data again") from None
        if array.shape[:1] != (shard["instances"],):
            raise InputError(f"{path}: holds {array.shape[0] if array.ndim else 'no'} instances where its {INDEX_FILE} "
                             f"counts {shard['instances']}; prepare the data again")
        return array

    def __len__(self) -> int:
        return int(self.shard_starts[-1])

    @property
    def seed(self) -> int:
        return self.options.seed

    def tokenizer(self):
        from bertforge.tokenization import BertTokenizer

        # Parts hold the same vocabulary (checked when they are merged): the first part's will do.
        parts = self.index.get("parts")
        folder = self.directory / parts[0] if parts else self.directory
        tokenizer = BertTokenizer.from_pretrained(folder)
        # its shards are ids of the vocabulary they were made with: another one (a vocab.txt replaced by hand) made
        # the model refuse the first batch, naming neither the file nor the data set
        if vocab_fingerprint(tokenizer) != self.index["vocab_fingerprint"]:
            raise InputError(f"{folder / BertTokenizer.vocab_file_name}: not the vocabulary {folder / INDEX_FILE} was "
                             f"prepared with (its vocab_fingerprint); put that one back, or prepare the data again")
        return tokenizer

    def check_model(self, model_dir: str | Path, option: str) -> None:
        """The model at `model_dir` (named by `option` in errors) must fit this data. It must read the ids the data
        holds: a row for each of its tokens (more rows are fine: a table padded by resize_token_embeddings), and the
        same vocabulary, not only as many tokens (a reordered vocab.txt would train or score every token as
        another). It must also have a position for each token of the longest instance the data was prepared to hold."""
        from bertforge.model.checkpoint import checkpoint_location
        from bertforge.model.config import BertConfig
        from bertforge.tokenization import BertTokenizer
        from bertforge.tokenization.tokenizer_json import FILE_NAME as TOKENIZER_JSON

        config = BertConfig.from_pretrained(model_dir)
        rows, tokens = config.vocab_size, len(self.tokenizer())
        if rows < tokens:
            raise ConfigError(f"{option} {model_dir}: its vocabulary has {rows} pieces, the prepared data "
                              f"{tokens}; prepare the data with its vocab.txt")
        positions, length = config.max_position_embeddings, self.options.max_seq_length
        if positions < length:  # caught later only by the model, in the middle of the work, naming neither folder
            raise ConfigError(f"{option} {model_dir}: it has {positions} positions (max_position_embeddings), "
                              f"fewer than the {length} tokens {self.directory} was prepared for; prepare the data "
                              f"with --max-seq-length {positions}, or use a model with more positions")
        folder = checkpoint_location(model_dir)[0]
        if not any((folder / name).is_file() for name in (BertTokenizer.vocab_file_name, TOKENIZER_JSON)):
            return  # weights alone (an encoder saved without its tokenizer): only their sizes can be checked
        if vocab_fingerprint(BertTokenizer.from_pretrained(folder)) != self.index["vocab_fingerprint"]:
            raise ConfigError(f"{option} {model_dir}: its vocabulary is not the one {self.directory} was prepared "
                              f"with; prepare the data with its vocab.txt")

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

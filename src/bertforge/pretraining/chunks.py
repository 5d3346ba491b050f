"""The unit of work of `pretrain prepare`: a chunk of consecutive documents, made into shard rows
in this process or spread over worker processes.

A chunk closes after the document that brings it to `chunk_tokens` tokens, estimated from the raw
text (`corpus.estimated_tokens`), so every chunk is known before anything is split or tokenised:
each `--part` of a run and each worker count sees the same chunks. What a chunk becomes depends on
nothing but its documents, its index and the options (the instance and mask generators are seeded
by them), and results are written in chunk order, so the shards are byte-identical for any number
of workers, and the parts of a split run together hold the chunks of the whole run.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import random
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertforge.pretraining.corpus import RawDocument, estimated_tokens, read_raw_documents, split_document
from bertforge.pretraining.instances import TokenizedDocuments, create_instances, tokenize_documents
from bertforge.pretraining.masking import mask_sequence, static_mask_rng
from bertforge.pretraining.sentences import make_splitter

STAT_KEYS = ("documents", "sentences", "tokens", "truncated_sentences", "is_next")
BATCH_TOKENS = 200_000  # a worker's unit of tokenising: a fraction of a second, so workers share a chunk evenly


@dataclass
class Chunk:
    index: int
    documents: list[RawDocument]
    bytes: int  # of the corpus files, for the progress bar
    last: bool = False  # the corpus's last chunk


@dataclass
class ChunkRows:
    """A chunk's instances as shard fields (one row each), and what was counted making them."""

    index: int
    bytes: int
    fields: dict[str, np.ndarray]
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.fields["lengths"])


def read_chunks(files: Iterable[Path], skip_documents: int, max_documents: int | None,
                chunk_tokens: int) -> Iterator[Chunk]:
    """The corpus files' documents in chunks; a chunk may span files, as a chunk is a size. A full
    chunk is held back until the next document is read, so that the last one is known as such."""
    documents: list[RawDocument] = []
    size = tokens = index = 0
    full: Chunk | None = None

    def count(n: int) -> None:
        nonlocal size
        size += n

    for path in files:
        for document in read_raw_documents(path, skip_documents, max_documents, count):
            if full is not None:
                yield full
                full = None
            documents.append(document)
            tokens += estimated_tokens(document)
            if tokens >= chunk_tokens:
                full = Chunk(index, documents, size)
                documents, size, tokens, index = [], 0, 0, index + 1
    if documents or size:
        if full is not None:
            yield full
        full = Chunk(index, documents, size)
    if full is not None:
        full.last = True
        yield full


@dataclass
class PackedDocuments:
    """Tokenised documents as three flat arrays: a worker's answer, cheap to send between processes
    (a chunk holds some hundred thousand sentences, each its own small array once unpacked)."""

    tokens: np.ndarray  # all sentences' ids, one after the other
    sentence_lengths: np.ndarray
    document_sentences: np.ndarray  # how many sentences each document has
    truncated: int

    @classmethod
    def pack(cls, tokenized: TokenizedDocuments) -> "PackedDocuments":
        sentences = [s for document in tokenized.documents for s in document]
        return cls(np.concatenate(sentences) if sentences else np.zeros(0, np.int32),
                   np.array([len(s) for s in sentences], dtype=np.int64),
                   np.array([len(d) for d in tokenized.documents], dtype=np.int64), tokenized.truncated)

    @staticmethod
    def unpack(batches: list["PackedDocuments"]) -> TokenizedDocuments:
        result = TokenizedDocuments([])
        for batch in batches:
            # Plain slices (views): np.split makes the same views at three times the cost, and a
            # chunk has some hundred thousand sentences.
            ends = np.cumsum(batch.sentence_lengths).tolist()
            tokens = batch.tokens
            sentences = [tokens[end - length:end] for end, length in zip(ends, batch.sentence_lengths.tolist())]
            starts = np.cumsum(batch.document_sentences) - batch.document_sentences
            result.documents += [sentences[start:start + n] for start, n in zip(starts, batch.document_sentences)]
            result.truncated += batch.truncated
            result.sentences += len(batch.sentence_lengths)
            result.tokens += len(batch.tokens)
        return result


class ChunkMaker:
    """Chunk → shard rows in two steps: its documents split and tokenised (in batches, which any
    process may do), then the chunk's instances cut, masked if masking is static, and laid out as
    shard fields."""

    def __init__(self, tokenizer, options):
        self.tokenizer, self.options = tokenizer, options
        self.splitter = make_splitter(options.splitter)
        self.masking = options.masking_config(tokenizer)
        self.token_dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32

    def __call__(self, chunk: Chunk) -> ChunkRows:
        return self.rows(chunk.index, chunk.bytes, self.tokenize(chunk.documents))

    def tokenize(self, documents: list[RawDocument]) -> TokenizedDocuments:
        split = (split_document(document, self.splitter) for document in documents)
        return tokenize_documents(split, self.tokenizer, self.options.max_seq_length)

    def rows(self, index: int, size: int, tokenized: TokenizedDocuments) -> ChunkRows:
        options, tokenizer = self.options, self.tokenizer
        instances = []
        if tokenized.documents:
            rng = random.Random(f"{options.seed}-{index}")
            instances = create_instances(tokenized.documents, options.max_seq_length, options.short_seq_prob,
                                         options.dupe_factor, rng, tokenizer.cls_token_id, tokenizer.sep_token_id)
        n, width = len(instances), options.max_seq_length
        fields = {
            "input_ids": np.zeros((n, width), dtype=self.token_dtype),
            "lengths": np.array([len(x.tokens) for x in instances], dtype=np.int16),
            "segment_b_starts": np.array([x.segment_b_start for x in instances], dtype=np.int16),
            "next_sentence_labels": np.array([x.next_sentence_label for x in instances], dtype=np.uint8),
        }
        if options.masking == "static":
            fields["mlm_positions"] = np.full((n, options.max_predictions_per_seq), -1, dtype=np.int16)
            fields["mlm_ids"] = np.zeros((n, options.max_predictions_per_seq), dtype=self.token_dtype)
        for row, instance in enumerate(instances):
            tokens = instance.tokens
            if options.masking == "static":
                rng = static_mask_rng(options.seed, index, row)
                tokens, positions, originals = mask_sequence(tokens, self.masking, rng)
                fields["mlm_positions"][row, :len(positions)] = positions
                fields["mlm_ids"][row, :len(positions)] = originals
            fields["input_ids"][row, :len(tokens)] = tokens
        stats = {"documents": len(tokenized.documents), "sentences": tokenized.sentences, "tokens": tokenized.tokens,
                 "truncated_sentences": tokenized.truncated, "is_next": int(np.sum(fields["next_sentence_labels"] == 0))}
        return ChunkRows(index, size, fields, stats)


_worker_maker: ChunkMaker | None = None  # each worker process's own, built once by `_start_worker`


def _start_worker(tokenizer, options) -> None:
    global _worker_maker
    _worker_maker = ChunkMaker(tokenizer, options)
    # When the pool shuts down, skip the interpreter's clean-up: freeing the tokenizer's cache, some
    # hundred thousand words, takes a tenth of a second that the command would wait for. Nothing is
    # lost: the pool's result queue has written every answer before the worker is told to stop.
    # Only in a worker: in the main process (a stand-in pool runs this there) it would end every run
    # with status 0, whatever happened.
    if multiprocessing.parent_process() is not None:
        atexit.register(_exit_now)


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _tokenize_in_worker(documents: list[RawDocument]) -> PackedDocuments:
    return PackedDocuments.pack(_worker_maker.tokenize(documents))


def _rows_in_worker(index: int, size: int, batches: list[PackedDocuments]) -> ChunkRows:
    return _worker_maker.rows(index, size, PackedDocuments.unpack(batches))


def document_batches(documents: list[RawDocument], batch_tokens: int) -> Iterator[list[RawDocument]]:
    """Consecutive documents of about `batch_tokens` tokens (at least one document)."""
    batch, tokens = [], 0
    for document in documents:
        batch.append(document)
        tokens += estimated_tokens(document)
        if tokens >= batch_tokens:
            yield batch
            batch, tokens = [], 0
    if batch:
        yield batch


# Chunks read and not yet handed back, when workers share the work: the next chunk is tokenised
# while the rows of the one before are cut, which keeps every worker busy as long as a chunk has
# more batches than there are workers (a 5 M-token chunk has some 25); what the main process holds
# is about this many chunks' worth, whatever the corpus size.
CHUNKS_IN_FLIGHT = 2


@dataclass
class _InFlight:
    chunk: Chunk
    # The batches not yet handed to a worker, with their place in the chunk; handed out largest
    # first. A batch is whole documents, a tenth of a second's tokenising or most of a second, and
    # with the small ones last the workers finish a chunk together.
    batches: list[tuple[int, list[RawDocument]]]
    tokenizing: dict[int, Future] = field(default_factory=dict)  # by the batch's place in the chunk
    rows: Future | None = None

    @classmethod
    def start(cls, chunk: Chunk) -> "_InFlight":
        batches = list(enumerate(document_batches(chunk.documents, BATCH_TOKENS)))
        batches.sort(key=lambda batch: sum(map(estimated_tokens, batch[1])))  # popped from the end
        return cls(chunk, batches)

    def tokenized(self) -> bool:
        return not self.batches and all(f.done() for f in self.tokenizing.values())


def make_chunks(chunks: Iterable[Chunk], tokenizer, options, workers: int) -> Iterator[ChunkRows]:
    """Each chunk's rows, in chunk order. With `workers` > 1, that many processes (spawned: the
    same on every platform, and safe beside threads) tokenise batches of about `BATCH_TOKENS`
    tokens, so that even a corpus of one chunk keeps them all busy, and then cut each chunk into
    rows as soon as its batches are in. At most `CHUNKS_IN_FLIGHT` chunks are read and not yet
    handed back, so memory is bounded whatever the corpus size."""
    if workers == 1:
        yield from map(ChunkMaker(tokenizer, options), chunks)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(tokenizer, options))
    unread = iter(chunks)
    in_flight: deque[_InFlight] = deque()
    # Tasks are handed to the pool one at a time, as workers free up (one queued beside those
    # running, so that no worker waits for this process), rather than all at once: the pool runs
    # its queue in order, and a chunk's rows, which the output waits for, would start only after
    # every batch submitted before them.
    outstanding: set[Future] = set()

    def submit(function, *args) -> Future:
        # Ctrl-C reaches the terminal's whole process group, and a worker interrupted while it starts can
        # leave the pool's shutdown waiting for it for ever. Workers start here (as the pool needs them),
        # from a thread with Ctrl-C blocked, and keep it blocked: only this process stops the pool. A Ctrl-C
        # that comes meanwhile is delivered here when the mask is restored.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return pool.submit(function, *args)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def next_rows() -> Future | None:
        for entry in in_flight:
            if entry.rows is None and entry.tokenized():
                tokenized = [entry.tokenizing[place].result() for place in range(len(entry.tokenizing))]
                entry.rows = submit(_rows_in_worker, entry.chunk.index, entry.chunk.bytes, tokenized)
                entry.chunk.documents, entry.tokenizing = [], {}  # what is sent need not be kept
                return entry.rows
        return None

    def next_batch() -> Future | None:
        for entry in in_flight:
            if entry.batches:
                place, documents = entry.batches.pop()
                entry.tokenizing[place] = submit(_tokenize_in_worker, documents)
                return entry.tokenizing[place]
        return None

    def next_task() -> Future | None:
        # Rows first, as the output waits for them; but once the corpus's last chunk is in, its
        # batches go first, so that the last two chunks' rows (single tasks of a third of a second)
        # are cut side by side at the end, not the last one alone while the other workers idle.
        if in_flight and in_flight[-1].chunk.last:
            return next_batch() or next_rows()
        return next_rows() or next_batch()

    def hand_out() -> None:
        while len(outstanding) <= workers and (task := next_task()) is not None:
            outstanding.add(task)

    finished = False
    try:
        while True:
            hand_out()
            while len(in_flight) < CHUNKS_IN_FLIGHT and (chunk := next(unread, None)) is not None:
                in_flight.append(_InFlight.start(chunk))
                hand_out()
            if not in_flight:
                finished = True
                return
            if in_flight[0].rows is not None and in_flight[0].rows.done():
                yield in_flight.popleft().rows.result()
                continue
            wait(outstanding, return_when=FIRST_COMPLETED)
            outstanding -= {f for f in outstanding if f.done()}
    finally:
        if not finished:
            # Failed or stopped (Ctrl-C, perhaps twice): the workers are stopped at once rather than told to
            # finish their tasks, since a graceful shutdown interrupted mid-way can wait for them for ever,
            # and the exit does not wait to send them the tasks still queued (a large one fills the pipe
            # that nobody reads any more). The pool has no public way to do either before Python 3.14.
            for process in list(pool._processes.values()):
                process.terminate()
            pool._call_queue.cancel_join_thread()
        pool.shutdown(wait=finished, cancel_futures=True)


def select_part(chunks: Iterable[Chunk], part: tuple[int, int] | None,
                on_skipped: Callable[[Chunk], object]) -> Iterator[Chunk]:
    """Part I of N takes chunks I-1, I-1+N, I-1+2N, ...: disjoint, covering, and decided while
    reading, without knowing how many chunks the corpus has. Chunks of other parts go to
    `on_skipped` (they still count as read)."""
    for chunk in chunks:
        if part is None or chunk.index % part[1] == part[0] - 1:
            yield chunk
        else:
            on_skipped(chunk)

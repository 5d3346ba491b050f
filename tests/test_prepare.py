"""`pretrain prepare --workers N` and `--part I/N` (issue 16): the same data from any number of worker
processes, in the order the workers are handed tasks, stopped cleanly by Ctrl-C; parts that hold one
run's instances and train as one data set, and parts that do not fit together refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertforge.errors import InputError
from bertforge.pretraining.corpus import read_raw_documents
from bertforge.pretraining.shards import PrepareOptions, PretrainingData, prepare


BOOKS = Path(__file__).parent / "fixtures" / "data" / "corpus" / "gutenberg_train.jsonl.gz"
# Small chunks and shards, so that the fixture makes several chunks and shards straddle chunks.
SPLIT_OPTIONS = dict(max_seq_length=64, dupe_factor=1, masking="static", seed=16, shard_size=250, chunk_tokens=6000)


@pytest.fixture(scope="module")
def chapters(tmp_path_factory) -> Path:
    """The fixture corpus's three books cut into documents of 25 paragraphs, as JSON Lines.gz:
    enough documents for chunks that hold several (notNext pairs from other documents)."""
    import gzip

    documents = []
    with gzip.open(BOOKS, "rt", encoding="utf-8") as f:
        for line in f:
            paragraphs = json.loads(line)["text"].split("\n\n")
            documents += ["\n\n".join(paragraphs[i:i + 25]) for i in range(0, len(paragraphs), 25)]
    path = tmp_path_factory.mktemp("chapters") / "chapters.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": text}) + "\n" for text in documents)
    return path


def prepare_split(corpus, directory, tokenizer, **overrides) -> dict:
    options = {**SPLIT_OPTIONS, **{k: v for k, v in overrides.items() if k in SPLIT_OPTIONS}}
    return prepare([corpus], directory, tokenizer, PrepareOptions(**options), progress=False,
                   **{k: v for k, v in overrides.items() if k not in SPLIT_OPTIONS})


@pytest.fixture(scope="module")
def whole(chapters, tokenizer, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("whole") / "data"
    prepare_split(chapters, directory, tokenizer)
    return directory


@pytest.fixture(scope="module")
def parts(chapters, tokenizer, tmp_path_factory) -> Path:
    """Parts 1/3, 2/3 and 3/3 of the same run, side by side in one directory."""
    directory = tmp_path_factory.mktemp("parts")
    for number in (1, 2, 3):
        prepare_split(chapters, directory / f"part-{number}", tokenizer, part=(number, 3))
    return directory


def files_of(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def rows(data) -> list[bytes]:
    """Every instance of a data set as the bytes of all its fields, in the data set's order."""
    batch = data._gather(np.arange(len(data)))
    return [b"".join(batch[field][i].tobytes() for field in data.fields) for i in range(len(data))]


def test_ctrl_c_stops_prepare_with_workers_and_leaves_nothing_behind(chapters, tmp_path):
    """Ctrl-C reaches the workers too (one process group); the command must still end, promptly, with no
    half-built directory left (once, a worker that died between tasks left the pool waiting for ever)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    output = tmp_path / "out" / "data"
    command = [sys.executable, "-m", "bertforge", "pretrain", "prepare", str(chapters), str(output), "--workers", "2",
               "--chunk-tokens", "6000", "--dupe-factor", "400", "--max-seq-length", "64", "--shard-size", "500"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # The first shard is being written, about 4 s before the end on an idle 2-core machine (small shards, many
        # copies of each document): workers at work. With one shard, written last, a busy machine once let prepare
        # end before the signal was sent.
        while not list(tmp_path.glob("out/.data.*.tmp/*")):
            assert process.poll() is None and time.monotonic() < deadline, "prepare ended before it could be stopped"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 1 and "Aborted!" in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_workers_write_byte_identical_data(chapters, whole, tokenizer, tmp_path):
    index = json.loads((whole / "index.json").read_text())
    assert index["instances"] > 2 * SPLIT_OPTIONS["shard_size"]  # several shards, several chunks
    prepare_split(chapters, tmp_path / "two", tokenizer, workers=2)
    assert files_of(tmp_path / "two") == files_of(whole)  # shards, index.json and vocabulary


def test_workers_share_one_chunk_in_batches_byte_identically(chapters, tokenizer, tmp_path, monkeypatch):
    from bertforge.pretraining import chunks

    # One chunk for the whole corpus, tokenised by the workers in batches of a few documents.
    monkeypatch.setattr(chunks, "BATCH_TOKENS", 3000)
    assert len(list(chunks.document_batches(list(read_raw_documents(chapters)), chunks.BATCH_TOKENS))) > 10
    for workers in (1, 2):
        index = prepare_split(chapters, tmp_path / str(workers), tokenizer, workers=workers, chunk_tokens=10**9)
    assert index["part"] is None and index["instances"] > 2 * SPLIT_OPTIONS["shard_size"]
    assert files_of(tmp_path / "1") == files_of(tmp_path / "2")


def test_dynamic_masking_with_workers_is_byte_identical_too(chapters, tokenizer, tmp_path):
    for workers in (1, 2):
        prepare_split(chapters, tmp_path / str(workers), tokenizer, workers=workers, masking="dynamic",
                      max_documents=40)
    assert files_of(tmp_path / "1") == files_of(tmp_path / "2")


def test_parts_hold_the_instances_of_one_run(whole, parts):
    expected = rows(PretrainingData(whole))
    assert len(set(expected)) == len(expected)  # no two instances alike, so equal multisets mean equal sets
    each = [rows(PretrainingData(parts / f"part-{number}")) for number in (1, 2, 3)]
    assert all(each)  # every part has some
    assert sorted(sum(each, [])) == sorted(expected)  # disjoint (no duplicates) and covering
    merged = PretrainingData(parts)
    assert rows(merged) == sum(each, [])  # read as one, in part order
    whole_stats = json.loads((whole / "index.json").read_text())["stats"]
    assert merged.index["stats"] == pytest.approx(whole_stats)


def test_a_batch_of_the_parts_directory_is_the_batch_of_its_part(parts):
    merged, second = PretrainingData(parts), PretrainingData(parts / "part-2")
    offset = len(PretrainingData(parts / "part-1"))
    picked = merged.batch(np.array([offset, offset + 3]), epoch=0)
    alone = second.batch(np.array([0, 3]), epoch=0)
    assert all(np.array_equal(picked[key], alone[key]) for key in alone)


def test_training_reads_a_parts_directory(parts, tmp_path):
    from click.testing import CliRunner

    from bertforge.cli.main import cli

    result = CliRunner().invoke(cli, ["pretrain", "train", str(parts), str(tmp_path / "run"), "--model-size", "tiny",
                                      "--max-steps", "2", "--batch-size", "4", "--log-every", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "training_config.json").read_text())["data_dir"] == str(parts)
    assert (tmp_path / "run" / "final" / "vocab.txt").read_bytes() == (parts / "part-1" / "vocab.txt").read_bytes()


def copy_part(source: Path, target: Path, **changes) -> None:
    """A part directory copied with fields of its index.json changed (a part of another run)."""
    import shutil

    shutil.copytree(source, target)
    index = json.loads((target / "index.json").read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            index[key] = {**index[key], **value}
        else:
            index[key] = value
    (target / "index.json").write_text(json.dumps(index))


def test_a_missing_part_is_named(parts, tmp_path):
    for number in (1, 3):
        copy_part(parts / f"part-{number}", tmp_path / f"part-{number}")
    with pytest.raises(InputError, match=r"part 2/3 missing"):
        PretrainingData(tmp_path)


def test_a_part_twice_is_named(parts, tmp_path):
    for number in (1, 2, 3):
        copy_part(parts / f"part-{number}", tmp_path / f"part-{number}")
    copy_part(parts / "part-1", tmp_path / "again")
    with pytest.raises(InputError, match=r"both part 1/3"):
        PretrainingData(tmp_path)


@pytest.mark.parametrize("changes, named", [
    ({"vocab_fingerprint": "0123456789abcdef"}, "vocabulary"),
    ({"options": {"masking": "dynamic"}}, "masking"),
    ({"part": {"count": 4}}, "number of parts"),
])
def test_parts_of_different_runs_are_refused(parts, tmp_path, changes, named):
    copy_part(parts / "part-1", tmp_path / "part-1")
    copy_part(parts / "part-2", tmp_path / "part-2", **changes)
    copy_part(parts / "part-3", tmp_path / "part-3")
    with pytest.raises(InputError, match=named):
        PretrainingData(tmp_path)


def test_a_part_of_another_max_length_is_refused(chapters, parts, tokenizer, tmp_path):
    import shutil

    for number in (1, 3):
        shutil.copytree(parts / f"part-{number}", tmp_path / f"part-{number}")
    prepare_split(chapters, tmp_path / "part-2", tokenizer, part=(2, 3), max_seq_length=128)
    with pytest.raises(InputError, match=r"max_seq_length 128 and 64"):
        PretrainingData(tmp_path)


def test_a_whole_data_set_among_parts_is_refused(parts, whole, tmp_path):
    import shutil

    shutil.copytree(parts / "part-1", tmp_path / "part-1")
    shutil.copytree(whole, tmp_path / "whole")
    with pytest.raises(InputError, match="not a part"):
        PretrainingData(tmp_path)


def test_more_parts_than_chunks_is_an_error_naming_the_option(chapters, tokenizer, tmp_path):
    with pytest.raises(InputError, match=r"--part 3/3: the corpus makes only 2 chunk"):
        prepare_split(chapters, tmp_path / "out", tokenizer, part=(3, 3), max_documents=3)


@pytest.mark.parametrize("arguments, named", [
    (["--part", "3/2"], "--part"), (["--part", "0/2"], "--part"), (["--part", "1/x"], "--part"),
    (["--part", "2"], "--part"), (["--workers", "0"], "--workers"),
])
def test_cli_refuses_bad_workers_and_parts(chapters, tmp_path, arguments, named):
    from click.testing import CliRunner

    from bertforge.cli.main import cli

    result = CliRunner().invoke(cli, ["pretrain", "prepare", str(chapters), str(tmp_path / "out"), *arguments])
    assert result.exit_code != 0 and named in result.output and not (tmp_path / "out").exists()


def test_cli_workers_and_part(chapters, tmp_path):
    from click.testing import CliRunner

    from bertforge.cli.main import cli

    result = CliRunner().invoke(cli, ["pretrain", "prepare", str(chapters), str(tmp_path / "data" / "part-1"),
                                      "--part", "1/2", "--workers", "2", "--chunk-tokens", "6000",
                                      "--max-documents", "30"])
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "data" / "part-1" / "index.json").read_text())
    assert index["part"] == {"index": 1, "count": 2, "corpus_chunks": index["part"]["corpus_chunks"]}
    assert index["part"]["corpus_chunks"] >= 2 and index["options"]["chunk_tokens"] == 6000


class _StepPool:
    """Stands in for the process pool, in this process, one task at a time: `wait` (patched to
    `step`) runs the oldest task handed out, as a pool's workers take tasks in order. It records
    the order tasks run in and how many were handed out and not yet done at each hand-out."""

    def __init__(self, workers, mp_context=None, initializer=None, initargs=()):
        initializer(*initargs)
        self.handed_out, self.ran, self.outstanding_at_submit = [], [], []
        _StepPool.last = self

    def submit(self, function, *args):
        from concurrent.futures import Future

        future = Future()
        self.handed_out.append((future, function, args))
        self.outstanding_at_submit.append(sum(not f.done() for f, _, _ in self.handed_out))
        return future

    def step(self, futures):
        future, function, args = next(task for task in self.handed_out if task[0] in futures and not task[0].done())
        result = function(*args)
        self.ran.append(("rows", args[0]) if function.__name__ == "_rows_in_worker" else ("tokenize", args[0][0]))
        future.set_result(result)

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def test_a_worker_start_in_the_main_process_leaves_its_exit_status_alone(tokenizer, monkeypatch):
    """Pool workers end with os._exit(0) to skip clean-up; registered in the main process (as the
    stand-in pool below starts a worker there), that would turn a failed test run into status 0."""
    from bertforge.pretraining import chunks

    registered = []
    monkeypatch.setattr(chunks.atexit, "register", registered.append)
    chunks._start_worker(tokenizer, PrepareOptions(**SPLIT_OPTIONS))
    assert registered == []


def test_workers_cut_rows_before_later_batches_with_two_chunks_in_memory(chapters, tokenizer, tmp_path, monkeypatch):
    """The order `make_chunks` hands tasks out in (issue 16): a chunk's rows, which the output waits
    for, go ahead of the next chunk's batches, except at the end, where the last chunk's batches go
    first and the last two chunks' rows come together; workers are never queued more than one task
    ahead; memory holds two chunks at most. And the data is still that of one process."""
    from bertforge.pretraining import chunks, shards

    monkeypatch.setattr(chunks, "BATCH_TOKENS", 1500)
    monkeypatch.setattr(chunks, "_worker_maker", None)  # undone after: `_StepPool` starts its worker here
    monkeypatch.setattr(chunks, "ProcessPoolExecutor", _StepPool)
    monkeypatch.setattr(chunks, "wait", lambda futures, return_when: _StepPool.last.step(futures))
    read_chunks, add, read, writes = shards.read_chunks, shards._ShardWriter.add, [], [0]

    def counted(*args):  # each chunk read: its index, its documents (kept, so their ids stay
        for chunk in read_chunks(*args):  # theirs) and how many chunks' rows `prepare` had received by then
            read.append((chunk.index, list(chunk.documents), writes[0], chunk.last))
            yield chunk

    def add_counted(self, rows):
        writes[0] += 1
        return add(self, rows)
    monkeypatch.setattr(shards, "read_chunks", counted)
    monkeypatch.setattr(shards._ShardWriter, "add", add_counted)

    prepare_split(chapters, tmp_path / "two", tokenizer, workers=2, chunk_tokens=12000)
    pool = _StepPool.last
    chunk_of = {id(document): index for index, documents, _, _ in read for document in documents}
    order = [("rows", key) if kind == "rows" else ("tokenize", chunk_of[id(key)]) for kind, key in pool.ran]
    batches = [order.count(("tokenize", index)) for index, _, _, _ in read]
    assert len(read) > 3 and min(batches[:-1]) > 3  # chunks of several batches each
    assert [last for _, _, _, last in read] == [False] * (len(read) - 1) + [True]
    assert max(pool.outstanding_at_submit) == 3  # the two workers' tasks and one queued

    def last_batch(index):
        return max(i for i, task in enumerate(order) if task == ("tokenize", index))

    *middle, penultimate, final = [index for index, _, _, _ in read]
    for index in middle:  # between a chunk's last batch and its rows, at most one task per worker
        assert order.index(("rows", index)) - last_batch(index) - 1 <= 2
    assert order.index(("rows", penultimate)) > last_batch(final)
    assert order[-2:] == [("rows", penultimate), ("rows", final)]
    assert all(index - received < 2 for index, _, received, _ in read)  # at most two chunks read and not written
    monkeypatch.undo()
    prepare_split(chapters, tmp_path / "one", tokenizer, workers=1, chunk_tokens=12000)
    assert files_of(tmp_path / "one") == files_of(tmp_path / "two")

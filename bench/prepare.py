"""`pretrain prepare` per stage — split, tokenize, instances, write — in MB of corpus text per second
and peak memory, against Google's approach (the corpus handed over pre-split, one sentence a line,
so that preparing it splits nothing) as the baseline (issue 19).

The first `--books` books of the Gutenberg corpus are written as JSON Lines (what `prepare` reads
and splits) and, split once beforehand, as one sentence a line with blank lines between books (the
baseline: the same sentences, so the later stages get the same work). Each setup runs in its own
process, stage after stage, with the stage functions `prepare` itself calls; "MB/s" divides the
JSON Lines text size by the stage's CPU seconds (the machine may be shared: CPU time is what one
process gets through), and "peak RSS" is the process's high-water mark once the stage is done. The
last rows run the whole command (`bertforge pretrain prepare ... --dupe-factor 1`) as a user would.

The first table times the whole command with `--workers 1` and `--workers 2` (issue 16): wall
clock, as workers are meant to cut it (run it on an otherwise idle machine), CPU seconds of all its
processes, peak RSS of the largest process and of all of them together, and a hash of the data,
which must be the same for every number of workers. `lscpu` says how many cores there are.
`--timeline N` runs the command in this process with N workers instead, and says where each
worker's time went (start-up, tokenising, rows, idle) from a log of its tasks' start and end,
and how many distinct chunks each process met (each is cut into word pieces once per process;
with `--timeline 1`, also what cutting that many costs).
`--two-copies` measures the most two workers could reach here (two independent copies at once).
`--new-words N [N ...]` measures whether memory stays bounded as the corpus grows (issue 16): for each N, a corpus
of N words in which no word repeats (made up, the worst case for the tokenizer's cache of distinct chunks, which
starts again empty at `chunk_encoder.CACHE_LIMIT` entries; real text repeats its words), prepared by the whole
command in one process; the peak RSS must stop growing once N passes the cache's limit. Apart from these memory
rows, every line gives the load average beside it, as the machine may be shared.

    .venv/bin/python bench/prepare.py [--books 20] [--splitters rules pysbd] [--workers 1 2] [--workers-only]
    .venv/bin/python bench/prepare.py --books 176 --workers 1 2 --workers-only   # the 80 MB corpus
    .venv/bin/python bench/prepare.py --books 40 --timeline 2   # per-worker busy and idle time
    .venv/bin/python bench/prepare.py --books 176 --two-copies  # the machine's ceiling for --workers 2
    .venv/bin/python bench/prepare.py --new-words 500000 1000000 2000000 4000000   # peak memory, corpus size
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from locations import REPO, corpus_books
from processes import largest_peak_memory_mb, own_peak_memory_mib, resident_mb
sys.path.insert(0, str(REPO / "src"))
# The commands this script starts run this checkout's bertforge too, not whichever an editable install points at.
COMMAND_ENV = dict(os.environ,
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))


def write_slice(books: int, directory: Path, split: bool = True) -> tuple[Path, Path, float]:
    """The first `books` books as JSON Lines and, if `split`, as pre-split text (splitting all 80 MB
    takes some 20 s, which the --workers table alone does not need); the text's size in MB."""
    from bertforge.pretraining.sentences import RuleSplitter

    jsonl, presplit = directory / "books.jsonl", directory / "books-presplit.txt"
    splitter, size = RuleSplitter(), 0
    with open(jsonl, "w", encoding="utf-8") as out, open(presplit, "w", encoding="utf-8") as lines:
        for number, text in enumerate(corpus_books()):
            if number >= books:
                break
            size += len(text.encode("utf-8"))
            out.write(json.dumps({"text": text}) + "\n")
            if split:
                lines.write("\n".join(splitter.split(text)) + "\n\n")
    return jsonl, presplit, size / 1e6


def peak_rss_mb() -> float:
    return own_peak_memory_mib() * 2**20 / 1e6


def run_stages(corpus: str, splitter: str, megabytes: float, output: str) -> None:
    """One setup's stages, in this process; prints one JSON line per stage."""
    from bertforge import BertTokenizer
    from bertforge.pretraining.chunks import ChunkMaker
    from bertforge.pretraining.corpus import read_documents
    from bertforge.pretraining.instances import tokenize_documents
    from bertforge.pretraining.shards import PrepareOptions, _ShardWriter

    options = PrepareOptions(dupe_factor=1, splitter=splitter)
    tokenizer = BertTokenizer.from_pretrained()
    state = {}

    def stage(name, work):
        start, wall = time.process_time(), time.perf_counter()
        state[name] = work()
        cpu = time.process_time() - start
        print(json.dumps({"stage": name, "cpu_s": round(cpu, 2), "wall_s": round(time.perf_counter() - wall, 2),
                          "mb_per_s": round(megabytes / cpu, 2), "peak_rss_mb": round(peak_rss_mb())}), flush=True)

    stage("split", lambda: list(read_documents(corpus, splitter=splitter)))
    stage("tokenize", lambda: tokenize_documents(state["split"], tokenizer, options.max_seq_length))
    # `prepare`'s first chunk of documents (all of them, below 5 M tokens): cut into instances and
    # laid out as shard rows.
    stage("instances", lambda: ChunkMaker(tokenizer, options).rows(0, 0, state["tokenize"]))

    def write():
        writer = _ShardWriter(Path(output), options.shard_size)
        writer.add(state["instances"])
        writer.close()
        return writer.written
    stage("write", write)
    rows = state["instances"]
    print(json.dumps({"stage": "counts", "documents": len(state["split"]), "sentences": state["tokenize"].sentences,
                      "instances": len(rows), "is_next": rows.stats["is_next"] / len(rows)}))


def run_command(corpus: Path, splitter: str, output: Path, workers: int = 1) -> dict:
    """The whole `bertforge pretrain prepare`, as a child process. CPU time is the command's and
    its workers' (wait4 counts the descendants a process waited for, not this script's other
    children); "peak RSS" is the largest single process's high-water mark (VmHWM: ru_maxrss would carry
    this script's own peak into the child), "peak tree RSS" the most the command and its workers held
    together, both sampled every 0.1 s."""
    wall = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "bertforge", "pretrain", "prepare", str(corpus), str(output),
                              "--dupe-factor", "1", "--splitter", splitter, "--workers", str(workers)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=COMMAND_ENV)
    tree_peak = largest = 0.0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        tree_peak = max(tree_peak, resident_mb(child.pid))
        largest = max(largest, largest_peak_memory_mb(child.pid))
        time.sleep(0.1)
    if status != 0:
        raise SystemExit(f"bertforge pretrain prepare failed on {corpus}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.perf_counter() - wall,
            "peak_rss_mb": largest, "tree_rss_mb": tree_peak}


def shards_digest(directory: Path, with_index: bool = True) -> str:
    """index.json names the corpus file: leave it out to compare data made from copies elsewhere."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("shard-*.npy")) + [directory / "index.json"] * with_index:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def two_copies(corpus: Path, directory: Path) -> None:
    """The most `--workers 2` can reach on this machine: the one-process command alone, then two
    copies of it at once, each pinned to a core of its own. The copies share nothing and need no
    coordinating, so 2 × (wall alone) / (wall of the two) bounds what two workers get; per-copy
    CPU seconds above those of the copy alone are the machine's (two busy cores run slower), not
    the code's."""
    cores = sorted(os.sched_getaffinity(0))[:2]

    def run(copies: list[int]) -> list[tuple[float, float]]:
        start = time.perf_counter()
        children = [subprocess.Popen([sys.executable, "-m", "bertforge", "pretrain", "prepare", str(corpus),
                                      str(directory / f"copy-{core}-{len(copies)}"), "--dupe-factor", "1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=COMMAND_ENV,
                                     preexec_fn=lambda core=core: os.sched_setaffinity(0, {core})) for core in copies]
        results = []
        for child in children:
            _, status, usage = os.wait4(child.pid, 0)
            if status != 0:
                raise SystemExit(f"bertforge pretrain prepare failed on {corpus}")
            results.append((time.perf_counter() - start, usage.ru_utime + usage.ru_stime))
        return results

    (alone, alone_cpu), = run(cores[1:])
    both = run(cores)
    wall, cpus = max(w for w, _ in both), " and ".join(f"{c:.2f}" for _, c in both)
    print(f"one copy alone on core {cores[1]}: wall {alone:.2f} s, CPU {alone_cpu:.2f} s; two at once on cores "
          f"{cores}: wall {wall:.2f} s, CPU {cpus} s; ceiling of --workers 2: {2 * alone / wall:.2f}x "
          f"(load average {os.getloadavg()[0]:.1f})")


TIMELINE_LOG = "BENCH_PREPARE_TIMELINE"  # environment variable: the file worker processes log tasks to


def _chunks_met(tokenizer) -> dict:
    """The distinct chunks (whitespace-separated pieces of text) the tokenizer has cut into word pieces: its
    cache, each entry a miss paid once per process."""
    return tokenizer._chunk_encoder._cache


def _log_task(kind: str, work, *args):
    """Runs one task of `chunks`' workers and logs pid, kind, start, end, CPU seconds and the distinct chunks
    the worker has met so far."""
    from bertforge.pretraining import chunks

    start, cpu = time.monotonic(), time.process_time()
    result = work(*args)
    with open(os.environ[TIMELINE_LOG], "a") as log:
        log.write(json.dumps([os.getpid(), kind, start, time.monotonic(), time.process_time() - cpu,
                              len(_chunks_met(chunks._worker_maker.tokenizer))]) + "\n")
    return result


# Stand-ins for `chunks`' worker functions; module-level so the spawned workers import them.
def _timed_start(tokenizer, options):
    from bertforge.pretraining import chunks

    # A worker's start-up CPU (the interpreter, imports, the tokenizer) is what it spent before this.
    with open(os.environ[TIMELINE_LOG], "a") as log:
        log.write(json.dumps([os.getpid(), "start-up", time.monotonic(), time.monotonic(), time.process_time()]) + "\n")
    chunks._start_worker(tokenizer, options)


def _timed_tokenize(documents):
    from bertforge.pretraining import chunks

    return _log_task("tokenize", chunks._tokenize_in_worker, documents)


def _timed_rows(index, size, batches):
    from bertforge.pretraining import chunks

    return _log_task("rows", chunks._rows_in_worker, index, size, batches)


def timeline(corpus: Path, workers: int, directory: Path) -> None:
    """`prepare` in this process with `workers` workers whose tasks are logged: per worker, when it
    was ready, its busy time (tasks) and the rest of the wall clock (idle: start-up, waiting)."""
    from bertforge import BertTokenizer
    from bertforge.pretraining import chunks
    from bertforge.pretraining.shards import PrepareOptions, prepare

    log = directory / "timeline.jsonl"
    os.environ[TIMELINE_LOG] = str(log)
    chunks._start_worker, chunks._tokenize_in_worker = _timed_start, _timed_tokenize
    chunks._rows_in_worker = _timed_rows
    tokenizer = BertTokenizer.from_pretrained()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    begin, cpu = time.monotonic(), time.process_time()
    prepare([corpus], directory / "timeline", tokenizer, PrepareOptions(dupe_factor=1), progress=False,
            workers=workers)
    wall, main_cpu = time.monotonic() - begin, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    print(f"--workers {workers}: wall {wall:.2f} s, CPU {main_cpu + worker_cpu:.2f} s (main process {main_cpu:.2f}, "
          f"workers {worker_cpu:.2f}), load average {os.getloadavg()[0]:.1f}, "
          f"shards `{shards_digest(directory / 'timeline', with_index=False)[:12]}`")
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    if workers == 1:  # the command ran in this process, with this tokenizer
        met_here = list(_chunks_met(tokenizer))
        fresh = BertTokenizer.from_pretrained()
        start = time.process_time()
        fresh._chunk_encoder.ids([" ".join(met_here)])
        seconds = time.process_time() - start
        print(f"  this process met {len(met_here):,} distinct chunks; cutting them afresh takes {seconds:.2f} s CPU "
              f"({seconds / len(met_here) * 1e6:.1f} µs a chunk)")
    met = {}
    for pid in sorted({r[0] for r in records}):
        mine = [r for r in records if r[0] == pid]
        met[pid] = max(r[5] for r in mine if r[1] == "tokenize")
        ready = min(r[2] for r in mine if r[1] == "start-up")
        busy = {kind: sum(r[3] - r[2] for r in mine if r[1] == kind) for kind in ("tokenize", "rows")}
        task_cpu = sum(r[4] for r in mine if r[1] != "start-up")
        startup_cpu = sum(r[4] for r in mine if r[1] == "start-up")
        idle, last = wall - sum(busy.values()), max(r[3] for r in mine)
        print(f"  worker {pid}: ready at {ready - begin:.2f} s (start-up CPU {startup_cpu:.2f} s), busy tokenising "
              f"{busy['tokenize']:.2f} s and cutting rows {busy['rows']:.2f} s (task CPU {task_cpu:.2f} s), "
              f"idle {idle:.2f} s = {idle / wall:.0%} of the wall clock: {ready - begin:.2f} s starting, "
              f"{last - ready - sum(busy.values()):.2f} s between tasks, {begin + wall - last:.2f} s after its last; "
              f"met {met[pid]:,} distinct chunks")
    if met:  # a chunk two workers both meet is cut twice: against --timeline 1's count for one process
        print(f"  the workers met {sum(met.values()):,} distinct chunks between them")


def compare_workers(corpus: Path, megabytes: float, counts: list[int], directory: Path) -> None:
    """The whole command with each number of workers on the same corpus: wall clock (the figure
    workers are for), speed-up over the first count, memory, and whether the data is the same."""
    print("\n| `--workers` | wall s | speed-up | MB/s (wall) | CPU s (all processes) | peak RSS MB (largest "
          "process) | peak tree RSS MB | data (sha256 of shards + index.json) | load average after |\n"
          "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    first = None
    for workers in counts:
        output = directory / f"workers-{workers}"
        result = run_command(corpus, "rules", output, workers)
        first = first or result
        print(f"| {workers} | {result['wall_s']:.2f} | {first['wall_s'] / result['wall_s']:.2f}x | "
              f"{megabytes / result['wall_s']:.2f} | {result['cpu_s']:.2f} | {result['peak_rss_mb']:.0f} | "
              f"{result['tree_rss_mb']:.0f} | `{shards_digest(output)[:12]}` | {os.getloadavg()[0]:.1f} |", flush=True)


def write_new_words(words: int, path: Path) -> float:
    """A plain-text corpus of `words` distinct made-up words (the base-26 letters of a counter), 12 a line,
    50 lines a document; its size in MB."""
    def word(number: int) -> str:
        letters = []
        while number:
            number, digit = divmod(number, 26)
            letters.append(chr(ord("a") + digit))
        return "".join(reversed(letters))

    first = 26 ** 4  # five letters and more: no one-letter words, which the vocabulary holds anyway
    with open(path, "w", encoding="utf-8") as out:
        for start in range(first, first + words, 12):
            out.write(" ".join(word(n) for n in range(start, min(start + 12, first + words))) + " .\n")
            if (start - first) // 12 % 50 == 49:
                out.write("\n")
    return path.stat().st_size / 1e6


def memory_by_corpus_size(counts: list[int], directory: Path) -> None:
    from bertforge.tokenization.chunk_encoder import CACHE_LIMIT

    print(f"\n| new words | MB of text | wall s | peak RSS MB | the tokenizer's cache limit: {CACHE_LIMIT:,} chunks |\n"
          "| ---: | ---: | ---: | ---: | --- |")
    for count in counts:
        corpus = directory / f"new-words-{count}.txt"
        megabytes = write_new_words(count, corpus)
        result = run_command(corpus, "rules", directory / f"new-words-{count}")
        corpus.unlink()
        print(f"| {count:,} | {megabytes:.1f} | {result['wall_s']:.1f} | {result['peak_rss_mb']:.0f} | "
              f"{'past the limit' if count > CACHE_LIMIT else ''} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--books", type=int, default=20, help="How many books of the corpus (176 = all 80 MB).")
    parser.add_argument("--splitters", nargs="+", default=["rules", "pysbd"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="Time the whole command with each of these --workers (issue 16); none: skip.")
    parser.add_argument("--workers-only", action="store_true", help="Only the --workers comparison.")
    parser.add_argument("--timeline", type=int, metavar="N",
                        help="Only a timeline of the workers' tasks with N workers.")
    parser.add_argument("--two-copies", action="store_true",
                        help="Only the ceiling of --workers 2: one process alone, then two copies on two cores.")
    parser.add_argument("--new-words", type=int, nargs="+", metavar="N",
                        help="Only the peak RSS of the whole command on corpora of N words that never repeat.")
    parser.add_argument("--stages", type=json.loads, default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.stages:
        run_stages(**args.stages)
        return
    if args.new_words:
        if min(args.new_words) < 1000:  # fewer words make too few sentences for an instance
            parser.error(f"--new-words takes counts of 1000 words or more, got {min(args.new_words)}")
        with tempfile.TemporaryDirectory() as tmp:
            memory_by_corpus_size(args.new_words, Path(tmp))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jsonl, presplit, megabytes = write_slice(args.books, tmp,
                                                 split=not (args.timeline or args.two_copies or args.workers_only))
        print(f"first {args.books} books: {megabytes:.2f} MB of text")
        if args.timeline:
            timeline(jsonl, args.timeline, tmp)
            return
        if args.two_copies:
            two_copies(jsonl, tmp)
            return
        if args.workers:
            compare_workers(jsonl, megabytes, args.workers, tmp)
        if args.workers_only:
            return
        setups = [(f"JSON Lines, --splitter {s}", jsonl, s) for s in args.splitters]
        setups.append(("pre-split, one sentence a line (Google's)", presplit, "rules"))
        print("| setup | stage | CPU s | MB/s | peak RSS MB |\n| --- | --- | --- | --- | --- |")
        for label, corpus, splitter in setups:
            output = tmp / f"out-{len(list(tmp.iterdir()))}"
            output.mkdir()
            spec = json.dumps({"corpus": str(corpus), "splitter": splitter, "megabytes": megabytes,
                               "output": str(output)})
            lines = subprocess.run([sys.executable, __file__, "--stages", spec], check=True, capture_output=True,
                                   text=True).stdout.splitlines()
            rows = [json.loads(line) for line in lines if line.startswith("{")]
            total = sum(r["cpu_s"] for r in rows if "cpu_s" in r)
            for r in rows:
                if "cpu_s" in r:
                    cells = [label, r["stage"], r["cpu_s"], r["mb_per_s"], r["peak_rss_mb"]]
                    print("| " + " | ".join(map(str, cells)) + " |")
                else:
                    print(f"| {label} | counts | {r['documents']} documents, {r['sentences']} sentences, "
                          f"{r['instances']} instances, isNext {r['is_next']:.3f} | | |")
            print(f"| {label} | **all four** | {total:.2f} | **{megabytes / total:.2f}** | |")
        for splitter in args.splitters:
            command = run_command(jsonl, splitter, tmp / f"command-{splitter}")
            print(f"| `bertforge pretrain prepare --splitter {splitter}` | whole command | {command['cpu_s']:.2f} | "
                  f"**{megabytes / command['cpu_s']:.2f}** | {command['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()

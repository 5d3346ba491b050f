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

    .venv/bin/python bench/prepare.py [--books 20] [--splitters rules pysbd] [--workers 1 2] [--workers-only]
    .venv/bin/python bench/prepare.py --books 176 --workers 1 2 --workers-only   # the 80 MB corpus
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
sys.path.insert(0, str(REPO / "src"))


def write_slice(books: int, directory: Path) -> tuple[Path, Path, float]:
    """The first `books` books as JSON Lines and as pre-split text; the text's size in MB."""
    from bertforge.pretraining.sentences import RuleSplitter

    jsonl, presplit = directory / "books.jsonl", directory / "books-presplit.txt"
    splitter, size = RuleSplitter(), 0
    with gzip.open(DATA / "corpus" / "gutenberg_train.jsonl.gz", "rt", encoding="utf-8") as f, \
            open(jsonl, "w", encoding="utf-8") as out, open(presplit, "w", encoding="utf-8") as lines:
        for number, line in enumerate(f):
            if number >= books:
                break
            text = json.loads(line)["text"]
            size += len(text.encode("utf-8"))
            out.write(json.dumps({"text": text}) + "\n")
            lines.write("\n".join(splitter.split(text)) + "\n\n")
    return jsonl, presplit, size / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (Linux /proc), in MB."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            stack += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except (OSError, ValueError):
            continue  # a worker that just ended
    return total / 1e6


def run_command(corpus: Path, splitter: str, output: Path, workers: int = 1) -> dict:
    """The whole `bertforge pretrain prepare`, as a child process. CPU time is the command's and
    its workers' (wait4 counts the descendants a process waited for, not this script's other
    children); "peak RSS" is the largest single process's high-water mark, "peak tree RSS" the
    most the command and its workers held together, sampled every 0.1 s."""
    wall = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "bertforge", "pretrain", "prepare", str(corpus), str(output),
                              "--dupe-factor", "1", "--splitter", splitter, "--workers", str(workers)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree_peak = 0.0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        tree_peak = max(tree_peak, tree_rss_mb(child.pid))
        time.sleep(0.1)
    if status != 0:
        raise SystemExit(f"bertforge pretrain prepare failed on {corpus}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.perf_counter() - wall,
            "peak_rss_mb": usage.ru_maxrss / 1024, "tree_rss_mb": tree_peak}


def shards_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.glob("shard-*.npy")) + [directory / "index.json"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def compare_workers(corpus: Path, megabytes: float, counts: list[int], directory: Path) -> None:
    """The whole command with each number of workers on the same corpus: wall clock (the figure
    workers are for), speed-up over the first count, memory, and whether the data is the same."""
    print("\n| `--workers` | wall s | speed-up | MB/s (wall) | CPU s (all processes) | peak RSS MB (largest "
          "process) | peak tree RSS MB | data (sha256 of shards + index.json) |\n"
          "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    first = None
    for workers in counts:
        output = directory / f"workers-{workers}"
        result = run_command(corpus, "rules", output, workers)
        first = first or result
        print(f"| {workers} | {result['wall_s']:.2f} | {first['wall_s'] / result['wall_s']:.2f}x | "
              f"{megabytes / result['wall_s']:.2f} | {result['cpu_s']:.2f} | {result['peak_rss_mb']:.0f} | "
              f"{result['tree_rss_mb']:.0f} | `{shards_digest(output)[:12]}` |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--books", type=int, default=20, help="How many books of the corpus (176 = all 80 MB).")
    parser.add_argument("--splitters", nargs="+", default=["rules", "pysbd"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="Time the whole command with each of these --workers (issue 16); none: skip.")
    parser.add_argument("--workers-only", action="store_true", help="Only the --workers comparison.")
    parser.add_argument("--stages", type=json.loads, default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.stages:
        run_stages(**args.stages)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jsonl, presplit, megabytes = write_slice(args.books, tmp)
        print(f"first {args.books} books: {megabytes:.2f} MB of text")
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

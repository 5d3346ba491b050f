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

    .venv/bin/python bench/prepare.py [--books 20] [--splitters rules pysbd]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
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
    from bertforge.pretraining.corpus import read_documents
    from bertforge.pretraining.instances import create_instances, tokenize_documents
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
    # The seed `prepare` gives its first chunk of documents (all of them, below 5 M tokens).
    stage("instances", lambda: create_instances(state["tokenize"].documents, options.max_seq_length,
                                                options.short_seq_prob, 1, random.Random(f"{options.seed}-0"),
                                                tokenizer.cls_token_id, tokenizer.sep_token_id))

    def write():
        writer = _ShardWriter(Path(output), options, options.masking_config(tokenizer), tokenizer.vocab_size)
        writer.add(state["instances"])
        writer.close()
        return writer.written
    stage("write", write)
    print(json.dumps({"stage": "counts", "documents": len(state["split"]), "sentences": state["tokenize"].sentences,
                      "instances": len(state["instances"]),
                      "is_next": sum(x.next_sentence_label == 0 for x in state["instances"]) / len(state["instances"])}))


def run_command(corpus: Path, splitter: str, output: Path) -> dict:
    """The whole `bertforge pretrain prepare`, as a child process: its own CPU time and peak RSS."""
    wall = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "bertforge", "pretrain", "prepare", str(corpus), str(output),
                              "--dupe-factor", "1", "--splitter", splitter],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # this child's usage alone, not all children's
    if status != 0:
        raise SystemExit(f"bertforge pretrain prepare failed on {corpus}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.perf_counter() - wall,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--books", type=int, default=20, help="How many books of the corpus (176 = all 80 MB).")
    parser.add_argument("--splitters", nargs="+", default=["rules", "pysbd"])
    parser.add_argument("--stages", type=json.loads, default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.stages:
        run_stages(**args.stages)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jsonl, presplit, megabytes = write_slice(args.books, tmp)
        print(f"first {args.books} books: {megabytes:.2f} MB of text")
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

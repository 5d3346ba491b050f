"""Tokenizer throughput on the Gutenberg corpus: bertforge (its full call, and `token_ids`, the
ids-only path of `pretrain prepare`) vs the Rust `tokenizers` library
(one thread and default threads), transformers' BertTokenizerFast, and the pure-Python original
(transformers' BertTokenizerLegacy).

Each tokenizer runs in its own process (so thread settings and caches do not leak between them),
all in this one run, on the same lines; the ids of every line are hashed and must agree.

    .venv/bin/python bench/tokenize_speed.py [--mb 10] [--legacy-mb 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
PEERS = ["bertforge", "bertforge-token-ids", "tokenizers-1-thread", "tokenizers-all-threads", "transformers-fast", "legacy-python"]


def corpus_lines(megabytes: float) -> list[str]:
    lines, size, budget = [], 0, megabytes * 1_000_000
    with gzip.open(DATA / "corpus" / "gutenberg_train.jsonl.gz", "rt", encoding="utf-8") as f:
        for record in f:
            for line in json.loads(record)["text"].splitlines():
                if line.strip():
                    lines.append(line)
                    size += len(line.encode("utf-8")) + 1
                    if size >= budget:
                        return lines
    return lines


def model_dir(tmp: Path) -> Path:
    """A tokenizer directory the reference loads correctly (vocab + lower-casing config)."""
    (tmp / "vocab.txt").write_bytes((DATA / "vocab" / "bert-base-uncased-vocab.txt").read_bytes())
    (tmp / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
    return tmp


def make_encoder(peer: str, directory: Path):
    """A function: list of lines → list of id lists."""
    if peer == "bertforge":
        sys.path.insert(0, str(REPO / "src"))
        from bertforge import BertTokenizer

        tokenizer = BertTokenizer.from_pretrained(directory)
        return lambda lines: tokenizer(lines)["input_ids"]
    if peer == "bertforge-token-ids":  # ids only, no offsets or word ids: what `pretrain prepare` uses
        sys.path.insert(0, str(REPO / "src"))
        from bertforge import BertTokenizer

        tokenizer = BertTokenizer.from_pretrained(directory)
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        return lambda lines: [[cls, *ids, sep] for ids in tokenizer.token_ids(lines)]
    if peer.startswith("tokenizers"):
        from tokenizers import BertWordPieceTokenizer

        tokenizer = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=True)
        return lambda lines: [e.ids for e in tokenizer.encode_batch(lines)]
    if peer == "transformers-fast":
        from transformers import BertTokenizerFast

        tokenizer = BertTokenizerFast.from_pretrained(str(directory))
        return lambda lines: tokenizer(lines)["input_ids"]
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    tokenizer = BertTokenizerLegacy.from_pretrained(str(directory))
    return lambda lines: [tokenizer(line)["input_ids"] for line in lines]


def worker(peer: str, directory: str, lines_file: str, repeats: int) -> None:
    lines = json.loads(Path(lines_file).read_text(encoding="utf-8"))
    encode = make_encoder(peer, Path(directory))
    assert encode(["I love Paris"])[0] == [101, 1045, 2293, 3000, 102], "reference sanity check failed"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ids = encode(lines)
        times.append(time.perf_counter() - start)
    digest = hashlib.sha1(json.dumps(ids).encode()).hexdigest()
    print(json.dumps({"seconds": min(times), "first_seconds": times[0], "tokens": sum(map(len, ids)), "sha1": digest}))


def run_peer(peer: str, directory: Path, lines: list[str], repeats: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(lines, f)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="true")
    if peer == "tokenizers-1-thread":
        env["RAYON_NUM_THREADS"] = "1"
    else:
        env.pop("RAYON_NUM_THREADS", None)
    output = subprocess.run([sys.executable, __file__, "--worker", peer, str(directory), f.name, str(repeats)],
                            env=env, capture_output=True, text=True, check=True).stdout
    os.remove(f.name)
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=10.0, help="megabytes of corpus text for the fast tokenizers")
    parser.add_argument("--legacy-mb", type=float, default=1.0, help="megabytes for the pure-Python original")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tokenizer; the fastest is reported "
                        "(the first run of bertforge fills its word cache)")
    args = parser.parse_args()
    lines = corpus_lines(args.mb)
    legacy_lines = corpus_lines(args.legacy_mb)
    megabytes = sum(len(line.encode("utf-8")) + 1 for line in lines) / 1e6
    legacy_megabytes = sum(len(line.encode("utf-8")) + 1 for line in legacy_lines) / 1e6
    print(f"machine: {platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} cores, "
          f"Python {platform.python_version()}, date {time.strftime('%Y-%m-%d')}")
    print(f"corpus: {len(lines):,} Gutenberg lines ({megabytes:.1f} MB); legacy on the first "
          f"{len(legacy_lines):,} lines ({legacy_megabytes:.1f} MB); best of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        directory = model_dir(Path(tmp))
        results = {}
        for peer in PEERS:
            if peer == "legacy-python":
                results[peer] = run_peer(peer, directory, legacy_lines, 1)
                results[peer]["mb"] = legacy_megabytes
                # the hash to compare the legacy run against: bertforge on the same lines
                results["bertforge-legacy-subset"] = run_peer("bertforge", directory, legacy_lines, 1)
            else:
                results[peer] = run_peer(peer, directory, lines, args.repeats)
                results[peer]["mb"] = megabytes
    ours = results["bertforge"]
    ours_rate = ours["mb"] / ours["seconds"]
    print(f"\n{'tokenizer':<24}{'MB/s':>8}{'tokens/s':>12}{'bertforge ÷ peer':>18}  ids")
    for peer in PEERS:
        r = results[peer]
        rate = r["mb"] / r["seconds"]
        reference = results["bertforge-legacy-subset"] if peer == "legacy-python" else ours
        same = "equal" if r["sha1"] == reference["sha1"] else "DIFFERENT"
        print(f"{peer:<24}{rate:>8.2f}{r['tokens'] / r['seconds']:>12,.0f}{ours_rate / rate:>17.2f}×  {same}")
    print(f"\nbertforge first (cold-cache) run: {ours['mb'] / ours['first_seconds']:.2f} MB/s")
    if any(results[p]["sha1"] != (results["bertforge-legacy-subset"] if p == "legacy-python" else ours)["sha1"]
           for p in PEERS):
        sys.exit("ids differ between tokenizers")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()

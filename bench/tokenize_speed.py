"""Tokenizer throughput on the Gutenberg corpus: bertforge vs the Rust `tokenizers` library (one
thread and default threads), transformers' BertTokenizerFast, and the pure-Python original
(transformers' BertTokenizerLegacy).

What each row computes in the timed call (`[CLS] … [SEP]`, no truncation, no padding):
- bertforge: `tokenizer(lines)`: input ids, token type ids and attention masks as Python lists;
  offsets, word ids, special-token masks and sequence ids are computed if read (here after the
  clock stops, to check the offsets).
- bertforge-offsets: `tokenizer(lines, return_offsets_mapping=True)`: the same plus offsets, and
  with them word ids, special-token masks and sequence ids: everything the Rust encodings hold
  but the token strings.
- bertforge-token-ids: `token_ids(lines)`, ids only (the `pretrain prepare` path).
- bertforge-num-proc: `tokenizer(lines, num_proc=<cores>)`: the bertforge row in that many worker
  processes (started by the first run, kept for the others).
- tokenizers-*: `encode_batch(lines)` then the ids of each encoding as Python lists; the Rust
  encodings always hold ids, type ids, token strings, offsets, word ids and masks (the offsets are
  read after the clock stops, to check them).
- transformers-fast: `tokenizer(lines)` (the Rust tokenizer behind transformers' API).
- legacy-python: one `tokenizer(line)` per line.

Each tokenizer runs in its own process (so thread settings and caches do not leak between them),
all in this one run, on the same lines; the ids of every line are hashed and must agree, and so
must the offsets where a row has them. Ratios are each row's MB/s over the Rust rows' MB/s of the
same run.

    .venv/bin/python bench/tokenize_speed.py [--mb 10] [--legacy-mb 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
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

from locations import DATA, REPO, corpus_books
PEERS = ["bertforge", "bertforge-offsets", "bertforge-token-ids", "bertforge-num-proc", "tokenizers-1-thread",
         "tokenizers-all-threads", "transformers-fast", "legacy-python"]


def corpus_lines(megabytes: float) -> list[str]:
    lines, size, budget = [], 0, megabytes * 1_000_000
    for book in corpus_books():
        for line in book.splitlines():
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
    """Two functions: `encode(lines)`, the timed call, returning the ids (a list of lists) and what
    else it returns; and `offsets(returned)`, read untimed, or None where a row has no offsets."""
    if peer.startswith("bertforge"):
        sys.path.insert(0, str(REPO / "src"))
        from bertforge import BertTokenizer

        tokenizer = BertTokenizer.from_pretrained(directory)
        if peer == "bertforge-token-ids":
            cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
            return lambda lines: ([[cls, *ids, sep] for ids in tokenizer.token_ids(lines)], None), None
        options = {"bertforge-offsets": {"return_offsets_mapping": True},
                   "bertforge-num-proc": {"num_proc": os.cpu_count()}}.get(peer, {})

        def encode(lines):
            batch = tokenizer(lines, **options)
            return batch["input_ids"], batch
        return encode, lambda returned: [row.offsets for row in returned[1].encodings]
    if peer.startswith("tokenizers"):
        from tokenizers import BertWordPieceTokenizer

        tokenizer = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=True)

        def encode(lines):
            encodings = tokenizer.encode_batch(lines)
            return [e.ids for e in encodings], encodings
        return encode, lambda returned: [e.offsets for e in returned[1]]
    if peer == "transformers-fast":
        from transformers import BertTokenizerFast

        tokenizer = BertTokenizerFast.from_pretrained(str(directory))

        def encode(lines):
            batch = tokenizer(lines)
            return batch["input_ids"], batch
        return encode, lambda returned: [e.offsets for e in returned[1].encodings]
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    tokenizer = BertTokenizerLegacy.from_pretrained(str(directory))
    return lambda lines: ([tokenizer(line)["input_ids"] for line in lines], None), None


def digest(value) -> str:
    return hashlib.sha1(json.dumps(value).encode()).hexdigest()


def worker(peer: str, directory: str, lines_file: str, repeats: int) -> None:
    lines = json.loads(Path(lines_file).read_text(encoding="utf-8"))
    encode, offsets = make_encoder(peer, Path(directory))
    assert encode(["I love Paris"])[0][0] == [101, 1045, 2293, 3000, 102], "reference sanity check failed"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        returned = encode(lines)
        times.append(time.perf_counter() - start)
    ids = returned[0]
    print(json.dumps({"seconds": min(times), "first_seconds": times[0], "tokens": sum(map(len, ids)),
                      "sha1": digest(ids), "offsets_sha1": offsets and digest(offsets(returned))}))


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
                        "(the first run of bertforge fills its caches and starts its worker processes)")
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
    rust_one, rust_all = (results[p]["mb"] / results[p]["seconds"]
                          for p in ("tokenizers-1-thread", "tokenizers-all-threads"))
    print(f"\n{'tokenizer':<24}{'MB/s':>8}{'tokens/s':>12}{'÷ Rust 1 thread':>17}{'÷ Rust default':>16}"
          "  ids    offsets")
    ids_ok = offsets_ok = True
    for peer in PEERS:
        r = results[peer]
        rate = r["mb"] / r["seconds"]
        reference = results["bertforge-legacy-subset" if peer == "legacy-python" else "tokenizers-1-thread"]
        same_ids = r["sha1"] == reference["sha1"]
        same_offsets = r["offsets_sha1"] is None or r["offsets_sha1"] == reference["offsets_sha1"]
        ids_ok, offsets_ok = ids_ok and same_ids, offsets_ok and same_offsets
        offsets = "—" if r["offsets_sha1"] is None else "equal" if same_offsets else "DIFFERENT"
        print(f"{peer:<24}{rate:>8.2f}{r['tokens'] / r['seconds']:>12,.0f}{rate / rust_one:>16.2f}×"
              f"{rate / rust_all:>15.2f}×  {'equal' if same_ids else 'DIFFERENT':<7}{offsets}")
    for peer in ("bertforge", "bertforge-num-proc"):
        print(f"{peer} first run (cold caches{', worker start-up' if 'proc' in peer else ''}): "
              f"{results[peer]['mb'] / results[peer]['first_seconds']:.2f} MB/s")
    if not (ids_ok and offsets_ok):
        sys.exit("ids or offsets differ between tokenizers")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()

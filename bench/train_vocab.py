"""Vocabulary training on the Gutenberg corpus: bertforge's trainers vs the Rust `tokenizers`
trainers with the same settings, in one run.

For each algorithm (wordpiece, bpe, byte-bpe) each trainer runs in its own process, so that its
peak memory is its own: bertforge, `tokenizers` with its default threads, and `tokenizers` on
one thread. Each process reads the corpus (not timed), trains (timed: word counting and
merges), saves the files, then encodes held-out text to measure compression: pieces per
whitespace-separated word. For bertforge it also loads the saved files into `tokenizers` and
checks that the ids of every held-out line are the same.

The held-out text is the last 5% of the books (they are never trained on); training uses the
other books, or a prefix of them with --limit-mb.

    .venv/bin/python bench/train_vocab.py [--limit-mb 20] [--vocab-size 30000] [--min-frequency 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from locations import REPO, corpus_books
from processes import own_peak_memory_mib
ALGORITHMS = ("wordpiece", "bpe", "byte-bpe")
PEERS = ("bertforge", "tokenizers", "tokenizers-1-thread")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HELDOUT_FRACTION = 0.05


def load_books(limit_mb: float | None) -> tuple[list[str], list[str]]:
    """(training books, held-out lines)."""
    books = list(corpus_books())
    cut = len(books) - math.ceil(len(books) * HELDOUT_FRACTION)
    train, heldout = books[:cut], books[cut:]
    if limit_mb is not None:
        prefix, size = [], 0
        for book in train:
            if size >= limit_mb * 1e6:
                break
            prefix.append(book)
            size += len(book.encode("utf-8"))
        train = prefix
    lines = [line for book in heldout for line in book.splitlines() if line.strip()]
    return train, lines


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def train_bertforge(algorithm: str, books: list[str], args):
    sys.path.insert(0, str(REPO / "src"))
    from bertforge.tokenization.trainers import train_vocab

    return train_vocab(algorithm, books, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                       special_tokens=SPECIAL_TOKENS)


def train_tokenizers(algorithm: str, books: list[str], args):
    from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, normalizers, pre_tokenizers, trainers

    options = dict(vocab_size=args.vocab_size, min_frequency=args.min_frequency, special_tokens=SPECIAL_TOKENS,
                   show_progress=False)
    if algorithm == "byte-bpe":
        tokenizer = ByteLevelBPETokenizer()  # add_prefix_space=False, no lower-casing: as ours
        tokenizer.train_from_iterator(books, **options)
        return tokenizer
    if algorithm == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(**options)
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(**options, continuing_subword_prefix="##")
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)  # strip_accents follows lowercase
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(books, trainer)
    return tokenizer


def bertforge_ids(algorithm: str, tokenizer, lines: list[str]) -> list[list[int]]:
    if algorithm == "wordpiece":
        return tokenizer(lines, add_special_tokens=False)["input_ids"]
    return [tokenizer.encode(line) for line in lines]


def reload_in_tokenizers(algorithm: str, directory: Path):
    """Our saved files, loaded by `tokenizers` the way the module docstrings describe."""
    from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer, Tokenizer, models, normalizers, pre_tokenizers

    if algorithm == "wordpiece":
        return BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=True)
    if algorithm == "byte-bpe":
        tokenizer = ByteLevelBPETokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    else:
        tokenizer = Tokenizer(models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt"),
                                                   unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return tokenizer


def worker(algorithm: str, peer: str, args) -> dict:
    if peer == "tokenizers-1-thread":
        os.environ["RAYON_NUM_THREADS"] = "1"
    books, heldout = load_books(args.limit_mb)
    rss_loaded = rss_mb()
    start = time.perf_counter()
    if peer == "bertforge":
        tokenizer = train_bertforge(algorithm, books, args)
    else:
        tokenizer = train_tokenizers(algorithm, books, args)
    seconds = time.perf_counter() - start
    peak = own_peak_memory_mib()
    words = sum(len(line.split()) for line in heldout)
    result = {"algorithm": algorithm, "peer": peer, "seconds": seconds, "peak_rss_mb": peak,
              "rss_after_loading_mb": rss_loaded, "train_mb": sum(len(b.encode("utf-8")) for b in books) / 1e6,
              "heldout_lines": len(heldout), "heldout_words": words}
    if peer == "bertforge":
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            ids = bertforge_ids(algorithm, tokenizer, heldout)
            reference = reload_in_tokenizers(algorithm, Path(tmp))
            reloaded = [e.ids for e in reference.encode_batch(heldout, add_special_tokens=False)]
        result["vocab_size"] = len(tokenizer.vocab)
        result["reload_ids_equal"] = ids == reloaded
    else:
        ids = [e.ids for e in tokenizer.encode_batch(heldout, add_special_tokens=False)]
        result["vocab_size"] = tokenizer.get_vocab_size()
    result["pieces_per_word"] = sum(map(len, ids)) / words
    return result


def run_worker(algorithm: str, peer: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", algorithm, peer, "--vocab-size", str(args.vocab_size),
               "--min-frequency", str(args.min_frequency)]
    if args.limit_mb is not None:
        command += ["--limit-mb", str(args.limit_mb)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit-mb", type=float, default=None, help="train on this many MB of books (default: all)")
    parser.add_argument("--vocab-size", type=int, default=30_000)
    parser.add_argument("--min-frequency", type=int, default=2)
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs=2, metavar=("ALGORITHM", "PEER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    results = []
    for algorithm in args.algorithms:
        for peer in PEERS:
            result = run_worker(algorithm, peer, args)
            results.append(result)
            print(f"  {algorithm:9} {peer:20} {result['seconds']:7.1f} s", file=sys.stderr, flush=True)
    first = results[0]
    print(f"trained on {first['train_mb']:.1f} MB; held-out: {first['heldout_lines']:,} lines, "
          f"{first['heldout_words']:,} words; vocab_size {args.vocab_size}, min_frequency {args.min_frequency}\n")
    print("| algorithm | trainer | seconds | × tokenizers | × tokenizers 1 thread | peak RSS MB | "
          "RSS after loading MB | vocab | pieces/word (held-out) | files reload in tokenizers, same ids |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for result in results:
        peers = {r["peer"]: r for r in results if r["algorithm"] == result["algorithm"]}
        ratio = result["seconds"] / peers["tokenizers"]["seconds"]
        ratio_1 = result["seconds"] / peers["tokenizers-1-thread"]["seconds"]
        same = {True: "yes", False: "NO"}.get(result.get("reload_ids_equal"), "—")
        print(f"| {result['algorithm']} | {result['peer']} | {result['seconds']:.1f} | {ratio:.2f} | {ratio_1:.2f} | "
              f"{result['peak_rss_mb']:.0f} | {result['rss_after_loading_mb']:.0f} | {result['vocab_size']:,} | "
              f"{result['pieces_per_word']:.3f} | {same} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

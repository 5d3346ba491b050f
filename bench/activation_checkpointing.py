"""Memory and time of a training step with and without activation checkpointing (`--gradient-checkpointing`,
`model.gradient_checkpointing_enable()`): bertforge against transformers' BertForSequenceClassification, the same
configuration with random weights, the same random batch. Each of the four runs is a process of its own, so
that its peak resident memory (VmHWM) is its own; the first step is a warm-up, the median of the others
counts.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/activation_checkpointing.py [--size base] [--batch-size 8]
        [--seq-length 512] [--steps 3] [--threads 2]

Prints one JSON line per run, then the ratios: each library's peak memory with checkpointing over without, and
bertforge's step time over transformers' in each mode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from locations import REPO
from processes import own_peak_memory_mib
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(REPO / "src"))

PEERS = ("bertforge", "transformers")


def one_run(peer: str, checkpointing: bool, args) -> dict:
    from bertforge.model import BertConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = BertConfig.from_size(args.size)
    if peer == "bertforge":
        from bertforge.model import BertForSequenceClassification

        model = BertForSequenceClassification(config)
    else:
        import transformers

        model = transformers.BertForSequenceClassification(transformers.BertConfig(**config.to_dict()))
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(1000, config.vocab_size, (args.batch_size, args.seq_length),
                        generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(args.batch_size, dtype=torch.long)
    before = own_peak_memory_mib()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        model(input_ids=ids, labels=labels).loss.backward()
        times.append(time.perf_counter() - started)
    return {"peer": peer, "checkpointing": checkpointing, "size": args.size,
            "batch": [args.batch_size, args.seq_length], "threads": args.threads,
            "peak_rss_mib": round(own_peak_memory_mib()), "rss_before_steps_mib": round(before),
            "seconds_per_step": round(statistics.median(times[1:]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="base", help="a bertforge model size: tiny, mini, ..., base, L<n>-H<n>")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="steps per run, the first a warm-up (at least 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run", nargs=2, metavar=("PEER", "ON"), help=argparse.SUPPRESS)  # one child run
    args = parser.parse_args()
    if args.steps < 2:
        parser.error(f"--steps must be at least 2 (the first is a warm-up), got {args.steps}")
    if min(args.batch_size, args.seq_length, args.threads) < 1 or args.seq_length > 512:
        parser.error("--batch-size and --threads must be at least 1, --seq-length 1 to 512")
    from bertforge.model import BertConfig
    from bertforge.errors import ConfigError
    try:
        BertConfig.from_size(args.size)
    except ConfigError as error:
        parser.error(str(error))
    if args.run:
        print(json.dumps(one_run(args.run[0], args.run[1] == "on", args)))
        return
    results = {}
    for peer in PEERS:
        for on in ("off", "on"):
            child = subprocess.run([sys.executable, __file__, "--run", peer, on, *sys.argv[1:]],
                                   capture_output=True, text=True, check=True)
            record = json.loads(child.stdout.strip().splitlines()[-1])
            print(json.dumps(record), flush=True)
            results[peer, on] = record
    ratio = lambda a, b, field: round(results[a][field] / results[b][field], 2)  # noqa: E731
    print(json.dumps({
        **{f"{peer}_memory_on_over_off": ratio((peer, "on"), (peer, "off"), "peak_rss_mib") for peer in PEERS},
        **{f"{peer}_time_on_over_off": ratio((peer, "on"), (peer, "off"), "seconds_per_step") for peer in PEERS},
        **{f"bertforge_over_transformers_time_{on}": ratio(("bertforge", on), ("transformers", on), "seconds_per_step")
           for on in ("off", "on")},
    }))

if __name__ == "__main__":
    main()

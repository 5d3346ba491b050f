"""Pre-training throughput and progress: bertforge vs transformers' BertForPreTraining.

Both models get the same configuration, the same initial weights, the same optimiser (AdamW,
weight decay off for biases and LayerNorm), the same batches (batch 32, sequences of up to 128
tokens from the Gutenberg corpus, dynamic masks) and the same thread count, in this one run.
The two train in alternating blocks of steps so that load from other processes on a shared
machine falls on both alike.

1. tokens/s over `--steps` timed training steps (after `--warmup` untimed ones);
2. the held-out MLM loss each reaches after `--budget` seconds of training time.

    .venv/bin/python bench/pretrain.py [--sizes tiny mini] [--steps 12] [--budget 90] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
CORPUS = DATA / "corpus" / "gutenberg_train.jsonl.gz"
VOCAB = DATA / "vocab" / "bert-base-uncased-vocab.txt"

from bertforge.model.heads import IGNORE_INDEX  # noqa: E402
from bertforge.pretraining.shards import PrepareOptions, PretrainingData, prepare  # noqa: E402
from bertforge.pretraining.config import TrainingConfig  # noqa: E402
from bertforge.pretraining.trainer import BatchOrder, build_model  # noqa: E402
from bertforge.tokenization import BertTokenizer  # noqa: E402
from bertforge.training import build_optimizer  # noqa: E402

BLOCK = 2  # steps each model takes before the other one's turn


def prepared(directory: Path, **selection) -> PretrainingData:
    if not (directory / "index.json").exists():
        prepare([CORPUS], directory, BertTokenizer.from_pretrained(VOCAB), PrepareOptions(dupe_factor=1), **selection)
    return PretrainingData(directory)


def models(size: str, vocab_size: int, workdir: Path):
    """bertforge's model and transformers' model with the same weights."""
    from transformers import BertForPreTraining as ReferenceModel

    torch.manual_seed(0)
    ours = build_model(TrainingConfig(data_dir="", output_dir="", model_size=size), vocab_size, 128).train()
    ours.save_pretrained(workdir / size)
    reference = ReferenceModel.from_pretrained(workdir / size).train()
    return {"bertforge": ours, "transformers": reference}


def step(name: str, model, optimizer, batch: dict[str, torch.Tensor]) -> float:
    """One training step; returns the number of (non-padding) tokens it processed."""
    output = model(**batch)
    output.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(batch["attention_mask"].sum())


def batch_for(data: PretrainingData, order: BatchOrder, index: int) -> dict[str, torch.Tensor]:
    epoch, indices = order.global_batch(index)
    return {k: torch.from_numpy(v) for k, v in data.batch(indices, epoch).items()}


@torch.no_grad()
def held_out_mlm_loss(name: str, model, batches: list[dict[str, torch.Tensor]]) -> float:
    """Mean cross-entropy over all masked tokens of the held-out batches, computed the same way for both."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        if name == "bertforge":
            output = model(**inputs, labels=batch["labels"])
            logits, targets = output.prediction_logits, output.mlm_labels
        else:
            selected = batch["labels"] != IGNORE_INDEX
            logits, targets = model(**inputs).prediction_logits[selected], batch["labels"][selected]
        total += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
        count += targets.numel()
    model.train()
    return total / count


def run_size(size: str, data: PretrainingData, held_out: list, args, workdir: Path) -> dict:
    peers = models(size, data.index["vocab_size"], workdir)
    optimizers = {name: build_optimizer(model, args.lr) for name, model in peers.items()}
    order = BatchOrder(len(data), 32, seed=1)
    seconds = dict.fromkeys(peers, 0.0)
    tokens = dict.fromkeys(peers, 0.0)
    steps = dict.fromkeys(peers, 0)

    def advance(name, count, timed):
        for _ in range(count):
            batch = batch_for(data, order, steps[name])
            start = time.perf_counter()
            processed = step(name, peers[name], optimizers[name], batch)
            if timed:
                seconds[name] += time.perf_counter() - start
                tokens[name] += processed
            steps[name] += 1

    for name in peers:
        advance(name, args.warmup, timed=False)
    for _ in range(0, args.steps, BLOCK):
        for name in peers:
            advance(name, BLOCK, timed=True)
    throughput = {name: tokens[name] / seconds[name] for name in peers}

    # Keep training each model, alternating, until each has `budget` seconds of training time.
    while min(seconds.values()) < args.budget:
        for name in peers:
            if seconds[name] < args.budget:
                advance(name, 1, timed=True)
    losses = {name: held_out_mlm_loss(name, model, held_out) for name, model in peers.items()}
    return {"size": size, "tokens_per_second": throughput, "speedup": throughput["bertforge"] / throughput["transformers"],
            "budget_seconds": args.budget, "steps_in_budget": steps, "tokens_in_budget": tokens,
            "held_out_mlm_loss": losses}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mini"])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per model for tokens/s")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget", type=float, default=90.0, help="training seconds per model for the loss race")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bertforge-bench-pretrain")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)

    data = prepared(args.workdir / "train", max_documents=5)
    held_out_data = prepared(args.workdir / "held_out", skip_documents=175)  # the corpus's last book
    held_out = [{k: torch.from_numpy(v) for k, v in held_out_data.batch(np.arange(i, i + 32), 0).items()}
                for i in range(0, 32 * args.eval_batches, 32)]
    import transformers

    print(f"# torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}, python {sys.version.split()[0]}")
    print(f"# train instances {len(data)}, held-out {len(held_out) * 32} instances, batch 32, seq ≤ 128")
    results = []
    print("| size | bertforge tokens/s | transformers tokens/s | ratio | budget s | bertforge steps | "
          "transformers steps | bertforge held-out MLM loss | transformers held-out MLM loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        r = run_size(size, data, held_out, args, args.workdir)
        results.append(r)
        t, s, loss = r["tokens_per_second"], r["steps_in_budget"], r["held_out_mlm_loss"]
        print(f"| {size} | {t['bertforge']:.0f} | {t['transformers']:.0f} | {r['speedup']:.2f}× | {args.budget:.0f} | "
              f"{s['bertforge']} | {s['transformers']} | {loss['bertforge']:.3f} | {loss['transformers']:.3f} |",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

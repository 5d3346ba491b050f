"""Pre-training throughput and progress: bertforge vs transformers' BertForPreTraining.

Both models get the same configuration, the same initial weights, the same optimiser settings
(AdamW, weight decay off for biases and LayerNorm), the same batches (batch 32, sequences of up to
128 tokens from the Gutenberg corpus, dynamic masks) and the same thread count, in this one run.
bertforge's step is the training engine's own (`optimizer_step`, with `pretrain train`'s objective and its
statistics). Each model trains in a process of its own, started as its library starts: bertforge's with the
environment the `bertforge` command sets (`bertforge.cli.environment`: huge pages for PyTorch's large blocks),
transformers' with this script's environment as it is. PyTorch reads that setting once per process, so two
libraries in one process would share it. `--rounds` runs every model that many times, the order reversed each
round, so that load from other processes on a shared machine falls on all alike; the figures are over all rounds.

bertforge runs once per `--variants` entry, a `+`-joined set of levers (issue 16):
- `fp32`: none, float32 and torch's default AdamW (on CPU a loop over the tensors);
- `fused`: the fused AdamW kernel (`build_optimizer`'s default);
- `bf16`: bfloat16 autocast. transformers then also runs under the same autocast, so the table
  gives both "÷ transformers fp32" and the like-for-like "÷ transformers bf16". Only meaningful
  on a CPU with native BF16 (amx_bf16 / avx512_bf16), which the header says.
transformers' reference uses the fused AdamW, the default of its Trainer since torch 2.8.
`--dropout P` sets both models' hidden and attention dropout (default 0.1, BERT's); 0 is the Cramming
recipe's pre-training, and lets attention run on SDPA's fused kernel in both libraries.
Unpadded training (MosaicBERT) is not a lever here: the header gives the batches' padding share,
the most it could save.

1. tokens/s over `--steps` timed training steps (after `--warmup` untimed ones);
2. the held-out MLM loss each reaches after `--budget` seconds of training time (measured in
   float32 for all, so that it compares what the weights learned).
`--profile STEPS` also prints where bertforge's step spends its time, op by op (those steps are not timed).

    .venv/bin/python bench/pretrain.py [--sizes tiny mini] [--variants fp32 fused bf16+fused]
        [--steps 12] [--budget 90] [--threads 1] [--dropout 0.1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F

from locations import CORPUS, DATA

VOCAB = DATA / "vocab" / "bert-base-uncased-vocab.txt"

from bertforge.cli.environment import with_defaults  # noqa: E402
from bertforge.model import BertForPreTraining  # noqa: E402
from bertforge.model.heads import IGNORE_INDEX  # noqa: E402
from bertforge.pipelines.loading import cpu_has_native_bf16  # noqa: E402
from bertforge.pretraining.shards import PrepareOptions, PretrainingData, prepare  # noqa: E402
from bertforge.pretraining.config import TrainingConfig  # noqa: E402
from bertforge.pretraining.trainer import BatchOrder, PretrainingObjective, build_model  # noqa: E402
from bertforge.runcard import cpu_description  # noqa: E402
from bertforge.tokenization import BertTokenizer  # noqa: E402
from bertforge.training import build_optimizer  # noqa: E402
from bertforge.training.distributed import Processes  # noqa: E402
from bertforge.training.engine import optimizer_step  # noqa: E402

OBJECTIVE, ONE_CPU_PROCESS = PretrainingObjective(), Processes(torch.device("cpu"))  # pretrain train's, built once
LEVERS = ("fp32", "fused", "bf16")  # fp32 alone: no lever
REFERENCE = "transformers"


@dataclass
class Peer:
    """One model in the comparison, with its optimiser and what it has done so far."""

    library: str  # "bertforge" or "transformers"
    bf16: bool
    fused: bool
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    seconds: float = 0.0
    tokens: float = 0.0
    steps: int = 0

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"


def parse_variant(text: str) -> tuple[bool, bool]:
    """`fused+bf16` → (bf16, fused)."""
    levers = set(text.split("+"))
    unknown = levers - set(LEVERS)
    if unknown or not levers or ("fp32" in levers and levers & {"bf16"}):
        raise SystemExit(f"--variants {text!r}: a +-joined set of {', '.join(LEVERS)} (fp32 excludes bf16)")
    return "bf16" in levers, "fused" in levers


def prepared(directory: Path, **selection) -> PretrainingData:
    if not (directory / "index.json").exists():
        prepare([CORPUS], directory, BertTokenizer.from_pretrained(VOCAB), PrepareOptions(dupe_factor=1), **selection)
    return PretrainingData(directory)


def save_initial_weights(size: str, vocab_size: int, dropout: float, workdir: Path) -> None:
    """The weights every model of `size` starts from."""
    torch.manual_seed(0)
    build_model(TrainingConfig(data_dir="", output_dir="", model_size=size, dropout=dropout), vocab_size,
                128).save_pretrained(workdir / size)


def peer_names(variants: dict[str, tuple[bool, bool]]) -> list[str]:
    """transformers in float32 (and in bf16 when a variant uses it), then one bertforge model per variant."""
    return ([f"{REFERENCE} {'bf16' if bf16 else 'fp32'}" for bf16 in sorted({False} | {b for b, _ in variants.values()})]
            + [f"bertforge {name}" for name in variants])


def load_peer(name: str, size: str, variants: dict[str, tuple[bool, bool]], lr: float, workdir: Path) -> Peer:
    if name.startswith(REFERENCE):
        from transformers import BertForPreTraining as ReferenceModel

        model = ReferenceModel.from_pretrained(workdir / size).train()
        return Peer(REFERENCE, name.endswith("bf16"), True, model, build_optimizer(model, lr))
    bf16, fused = variants[name.removeprefix("bertforge ")]
    model = BertForPreTraining.from_pretrained(workdir / size).train()
    return Peer("bertforge", bf16, fused, model, build_optimizer(model, lr, fused=fused))


def step(peer: Peer, batch: dict[str, torch.Tensor]) -> float:
    """One training step; returns the number of (non-padding) tokens it processed."""
    if peer.library == "bertforge":  # the step `pretrain train` takes: the engine's, with the trainer's objective
        optimizer_step(peer.model, peer.optimizer, [batch], OBJECTIVE, ONE_CPU_PROCESS, peer.bf16, max_grad_norm=1.0)
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=peer.bf16):
            output = peer.model(**batch)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.model.parameters(), 1.0)
        peer.optimizer.step()
        peer.optimizer.zero_grad(set_to_none=True)
    return float(batch["attention_mask"].sum())


def batch_for(data: PretrainingData, order: BatchOrder, index: int) -> dict[str, torch.Tensor]:
    epoch, indices = order.global_batch(index)
    return {k: torch.from_numpy(v) for k, v in data.batch(indices, epoch).items()}


def padding_share(data: PretrainingData, order: BatchOrder, batches: int) -> float:
    """Share of the padded batch positions that are padding: the most unpadded training could save."""
    masks = [batch_for(data, order, i)["attention_mask"] for i in range(batches)]
    return 1.0 - sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks)


@torch.no_grad()
def held_out_mlm_loss(peer: Peer, batches: list[dict[str, torch.Tensor]]) -> float:
    """Mean cross-entropy over all masked tokens of the held-out batches, computed the same way for all."""
    model = peer.model.eval()
    total, count = 0.0, 0
    for batch in batches:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        if peer.library == "bertforge":
            output = model(**inputs, labels=batch["labels"], labelled_logits_only=True)
            logits, targets = output.prediction_logits, output.mlm_labels
        else:
            selected = batch["labels"] != IGNORE_INDEX
            logits, targets = model(**inputs).prediction_logits[selected], batch["labels"][selected]
        total += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
        count += targets.numel()
    model.train()
    return total / count


def profile_steps(name: str, run) -> None:
    """The ops that take the most of `run`'s time, on stderr (the table is stdout)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        run()
    events = sorted(profiler.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"# profile of {name}: " + ", ".join(f"{e.key} {e.self_cpu_time_total / total:.0%}" for e in events[:12]),
          file=sys.stderr)


def train_peer(name: str, size: str, data: PretrainingData, held_out: list, args) -> dict:
    """In a worker process: `name`'s warm-up, timed steps and the training budget, then its held-out loss."""
    peer = load_peer(name, size, args.variants, args.lr, args.workdir)
    order = BatchOrder(len(data), 32, seed=1)

    def advance(count: int, timed: bool):
        for _ in range(count):
            batch = batch_for(data, order, peer.steps)
            start = time.perf_counter()
            processed = step(peer, batch)
            if timed:
                peer.seconds += time.perf_counter() - start
                peer.tokens += processed
            peer.steps += 1

    advance(args.warmup, timed=False)
    if args.profile:  # every model takes the profiled steps, so that all train as many
        steps = partial(advance, args.profile, timed=False)
        profile_steps(name, steps) if peer.library == "bertforge" else steps()
    advance(args.steps, timed=True)
    timed = {"tokens": peer.tokens, "seconds": peer.seconds}
    while peer.seconds < args.budget:
        advance(1, timed=True)
    return {"library": peer.library, "precision": peer.precision, "adamw": "fused" if peer.fused else "loop", **timed,
            "steps_in_budget": peer.steps, "tokens_in_budget": peer.tokens,
            "held_out_mlm_loss": held_out_mlm_loss(peer, held_out)}


def run_worker(name: str, size: str, argv: list[str]) -> dict:
    """`name` trained in a process of its own, with its library's environment; its result."""
    environment = with_defaults(dict(os.environ)) if name.startswith("bertforge") else dict(os.environ)
    done = subprocess.run([sys.executable, __file__, *argv, "--worker", name, "--worker-size", size],
                          env=environment, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"the worker for {name} ({size}) failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_size(size: str, vocab_size: int, args, argv: list[str]) -> dict:
    save_initial_weights(size, vocab_size, args.dropout, args.workdir)
    names = peer_names(args.variants)
    runs = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            runs[name].append(run_worker(name, size, argv))
    throughput = {name: sum(r["tokens"] for r in rs) / sum(r["seconds"] for r in rs) for name, rs in runs.items()}
    rows = []
    for name, results in runs.items():
        precision = results[0]["precision"]
        rows.append({"size": size, "model": name, "library": results[0]["library"], "precision": precision,
                     "adamw": results[0]["adamw"], "tokens_per_second": throughput[name],
                     "vs_transformers_fp32": throughput[name] / throughput[f"{REFERENCE} fp32"],
                     "vs_transformers_same_precision": throughput[name] / throughput[f"{REFERENCE} {precision}"],
                     "budget_seconds": args.budget,
                     "steps_in_budget": sum(r["steps_in_budget"] for r in results) / len(results),
                     "tokens_in_budget": sum(r["tokens_in_budget"] for r in results) / len(results),
                     "held_out_mlm_loss": sum(r["held_out_mlm_loss"] for r in results) / len(results),
                     "runs": results})
    return {"size": size, "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mini"])
    parser.add_argument("--variants", nargs="+", default=["fp32", "fused", "bf16+fused"],
                        help=f"bertforge runs, each a +-joined set of {', '.join(LEVERS)}")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per model for tokens/s")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget", type=float, default=90.0, help="training seconds per model for the loss race")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout of both models")
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bertforge-bench-pretrain")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="also profile this many of each bertforge model's steps (torch.profiler): where its time goes")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each model, in a process of its own")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-size", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.variants = {variant: parse_variant(variant) for variant in args.variants}
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)

    data = prepared(args.workdir / "train", max_documents=5)
    held_out_data = prepared(args.workdir / "held_out", skip_documents=175)  # the corpus's last book
    held_out = [{k: torch.from_numpy(v) for k, v in held_out_data.batch(np.arange(i, i + 32), 0).items()}
                for i in range(0, 32 * args.eval_batches, 32)]
    import transformers

    transformers.logging.disable_progress_bar()
    if args.worker:
        print(json.dumps(train_peer(args.worker, args.worker_size, data, held_out, args)))
        return
    print(f"# torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}, python {sys.version.split()[0]}")
    print(f"# train instances {len(data)}, held-out {len(held_out) * 32} instances, batch 32, seq ≤ 128, "
          f"dropout {args.dropout}, {args.rounds} round(s) of each model in a process of its own")
    ours, given = with_defaults(dict(os.environ)), {k: os.environ.get(k, "unset") for k in with_defaults({})}
    print("# environment: bertforge's " + ", ".join(f"{k}={ours[k]}" for k in given) + "; transformers' as given: "
          + ", ".join(f"{k}={v}" for k, v in given.items()))
    padding = padding_share(data, BatchOrder(len(data), 32, seed=1), args.warmup + args.steps)
    print(f"# padding: {padding:.2%} of the batch positions; unpadded training could save at most that share"
          f"{' (under 10%: worth little, not measured)' if padding < 0.1 else ''}")
    if any(bf16 for bf16, _ in args.variants.values()):
        flags = [f for f in cpu_description()["flags"] if f in ("amx_bf16", "avx512_bf16")]
        print(f"# bf16 autocast: this CPU has native BF16 ({', '.join(flags)})" if cpu_has_native_bf16() else
              "# bf16 autocast: this CPU has NO native BF16 (no amx_bf16/avx512_bf16): bf16 rows are emulated, ignore them")
    print("| size | model | AdamW | tokens/s | ÷ transformers fp32 | ÷ transformers same precision | budget s | "
          "steps in budget | held-out MLM loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for size in args.sizes:
        r = run_size(size, data.index["vocab_size"], args, sys.argv[1:])
        results.append(r)
        for row in r["rows"]:
            print(f"| {size} | {row['model']} | {row['adamw']} | {row['tokens_per_second']:.0f} | "
                  f"{row['vs_transformers_fp32']:.2f}× | {row['vs_transformers_same_precision']:.2f}× | "
                  f"{args.budget:.0f} | {row['steps_in_budget']:g} | {row['held_out_mlm_loss']:.3f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

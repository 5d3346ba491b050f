"""Fine-tuning throughput on SST-2 (training examples per second): bertforge's trainer vs a plain
transformers training loop, same model (the bundled all-MiniLM-L6-v2 with a 2-label head), same
batch size, same max length, same optimiser (AdamW, linear warm-up/decay, grad clipping), in this
one run. The peers alternate over `--repeats` rounds and the median round counts, because the
2-core machine is shared and its speed drifts.

Peers:
  bertforge               `bertforge.tasks.finetune`: length-bucketed batches, padding to the longest in the batch
  transformers-max-length transformers' BertForSequenceClassification, batches padded to --max-length
                          (run_glue's default, `pad_to_max_length=True`)
  transformers-dynamic    the same, padded to the longest in each random batch (DataCollatorWithPadding)

    HF_HUB_OFFLINE=1 .venv/bin/python bench/finetune.py [--steps 20] [--batch-size 32] [--max-length 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time

import torch

from locations import DATA, REPO
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def sst2(limit: int, seed: int) -> tuple[list[str], list[int]]:
    from bertforge.io.datasets import read_text_examples

    rows = read_text_examples(DATA / "sst2" / "train.tsv", "sentence", label_column="label")
    random.Random(seed).shuffle(rows)
    return [row.text for row in rows[:limit]], [int(row.label) for row in rows[:limit]]


def bertforge_round(texts, labels, args) -> float:
    from bertforge.model import BertForSequenceClassification
    from bertforge.tasks.classification import ClassificationTask
    from bertforge.io.datasets import TextExample
    from bertforge.tasks.trainer import FinetuneArgs, finetune
    from bertforge.tokenization import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(None)
    task = ClassificationTask(["0", "1"])
    examples = [TextExample(t, None, str(y), "bench") for t, y in zip(texts, labels)]
    features = task.train_features(examples, tokenizer, args.max_length)
    with tempfile.TemporaryDirectory() as out:
        history = finetune(lambda: BertForSequenceClassification.from_pretrained(None, id2label={0: "0", 1: "1"}),
                           task, features, None, FinetuneArgs(
            output_dir=out, epochs=1, max_steps=args.steps, batch_size=args.batch_size, learning_rate=3e-5,
            layer_lr_decay=1.0, seed=args.seed, progress=False))  # one rate for all layers, as transformers
    return history["examples_per_second"]


def transformers_round(texts, labels, args, pad_to_max_length: bool) -> float:
    from transformers import BertForSequenceClassification, BertTokenizerFast, get_linear_schedule_with_warmup

    from bertforge.model import default_model_path

    directory = default_model_path()
    tokenizer = BertTokenizerFast.from_pretrained(str(directory))
    model = BertForSequenceClassification.from_pretrained(str(directory), num_labels=2).train()
    no_decay = [p for p in model.parameters() if p.ndim == 1]
    decay = [p for p in model.parameters() if p.ndim > 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=3e-5)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * args.steps), args.steps)
    rng = random.Random(args.seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    # Tokenized before the clock starts, as bertforge's features are (and as datasets.map does for the
    # Trainer); each batch is padded in the loop, as DataCollatorWithPadding pads it.
    columns = tokenizer(texts, truncation=True, max_length=args.max_length)
    encoded = [{key: values[i] for key, values in columns.items()} for i in range(len(texts))]
    started = time.perf_counter()
    for step in range(args.steps):
        index = order[step * args.batch_size:(step + 1) * args.batch_size]
        batch = tokenizer.pad([encoded[i] for i in index], padding="max_length" if pad_to_max_length else "longest",
                              max_length=args.max_length, return_tensors="pt")
        loss = model(**batch, labels=torch.tensor([labels[i] for i in index])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return args.steps * args.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts, labels = sst2(args.steps * args.batch_size * 4, args.seed)
    peers = {"bertforge": lambda: bertforge_round(texts, labels, args),
             "transformers-max-length": lambda: transformers_round(texts, labels, args, True),
             "transformers-dynamic": lambda: transformers_round(texts, labels, args, False)}
    results = {name: [] for name in peers}
    for _ in range(args.repeats):
        for name, run in peers.items():
            results[name].append(run())
            print(f"  {name}: {results[name][-1]:.1f} examples/s", flush=True)
    print(f"\nSST-2 fine-tuning, MiniLM-L6 (all-MiniLM-L6-v2), batch {args.batch_size}, max length {args.max_length}, "
          f"{args.steps} steps, {args.threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"| peer | examples/s (median of {args.repeats}) | bertforge ÷ peer |\n| --- | --- | --- |")
    for name, value in median.items():
        print(f"| {name} | {value:.1f} | {median['bertforge'] / value:.2f}× |")


if __name__ == "__main__":
    main()

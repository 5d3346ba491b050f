"""Does bertforge's own pre-training help fine-tuning? (issue 17) A from-scratch pre-training run
against the same network from the same random weights (the control), both fine-tuned on SST-2 the
same way, over several fine-tuning seeds.

The control is rebuilt exactly as the pre-training run built its model before step 1: the run's
training_config.json (size, seed) through the trainer's own `build_model`, after the same seeding.
A run that continued another run's final model (`--init-from`, to read more text than one session
allows) is compared with the random weights its chain of runs started from, and shares that run's
control fine-tunings (in its `value` folder). Dropout is 0.1 in both
fine-tunings whatever the pre-training used (Cramming pre-trains without dropout and fine-tunes with it);
`--dropout P` fine-tunes both with another.

The fine-tuning is the one-epoch budget run of bench/defaults_sweep.py (the first 20,000 rows of
sst2/train.tsv, its last 2,000 rows held out for selection, the default learning rate), scored by
`bertforge evaluate` on sst2/validation.tsv and on its rows of 15 words or more, which no run trained on.

`--held-apart sentences` scores unseen sentences instead: 1,000 whole review sentences that no training
row is a phrase of (bench/unseen_sentences.py makes the split), where sst2/validation.tsv shares sentences
with the training rows and rewards remembering phrases, which pre-training does not help with. The budget run
takes the split's training file's first 20,000 and last 2,000 rows as before. A run pre-trained on SST-2's own
text (`runs/self/...`) has read the held-apart sentences' text, unlabelled.

`--selection sentences` (with `--held-apart sentences`) selects on 1,000 more unseen sentences, drawn
the same way from the rest and taken out of training with every phrase of them, instead of on the
training file's last 2,000 rows. Those rows share sentences with the training rows, so the selection
split rewards remembering phrases, which the scored sentences do not; a selection split of unseen
sentences measures what the score measures. The scored sentences are the same 1,000; the training
file loses the new sentences' phrases too, so its first 20,000 rows differ from the other setting's.

With `--held-apart sentences` the report ends with the gain's 95% interval over resampled sentences
(a bootstrap of the per-sentence difference between the arms' seed-averaged correctness, from each
run's `bertforge predict` lines): the seeds' spread says how much another fine-tuning seed would move
the figure, this says how much another draw of 1,000 sentences would. With `--selection sentences`
it gives the same for the selection sentences, which the runs were chosen on, and for both sets together.

`--labelled-rows N` fine-tunes on the first N rows instead, for as many epochs as keep the budget run's
625 optimiser steps (a few more where batches round up), keeping the best epoch on the selection split:
the arms then differ only in how many labels they saw. Learning from few labels is what pre-training
is for.

`--learning-rate LR` fine-tunes both starts at that peak rate instead of finetune's default at batch 32 (2e-4, chosen
for the 6-layer MiniLM); run it for several rates and compare each start at the rate that does best on
its selection split.

`--budgets B` fine-tunes both starts for B times the budget run's steps (B epochs of the 20,000 rows);
each epoch is evaluated on the selection split, which keeps the best.

`--layer-lr-decay GAMMA` fine-tunes both starts with ELECTRA's layer-wise learning-rate decay (`bertforge
finetune --layer-lr-decay`): the heads at the peak rate, each encoder layer below at GAMMA times the rate
of the one above, so that the pre-trained layers move less than the new head. For bertforge-mini it
lowered both starts on the selection split (docs/results.md, fifteenth session).

`--fresh-pooler` fine-tunes both starts with the pooler (the dense layer on [CLS] that the classifier
reads) drawn afresh from the fine-tuning seed, as the classifier is: pre-training trained it for
next-sentence prediction, which may suit sentiment less than a new one (Zhang et al., 2021, "Revisiting
few-sample BERT fine-tuning", re-initialise it). Whether it helps is read on the selection split.
`--fresh-layers N` also re-initialises the top N encoder layers of both starts (BERT's initialisation,
drawn once with a fixed seed), as Zhang et al. do: the top layers of a pre-trained encoder are the most
specialised to the pre-training task.

`--classifier-pooling mean` fine-tunes both starts with the classifier on the mean of the last layer's
token vectors instead of the pooler on [CLS] (`bertforge finetune --classifier-pooling`): masked-word
pre-training trains every token's vector, while only next-sentence prediction trains [CLS] and the pooler.

`RUN` may also be a saved model (a folder with config.json, such as `src/bertforge/pretrained/bertforge-mini`)
when `--runs-dir` already holds its control in `start-random`.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/pretraining_value.py runs/pt-mini2 --seeds 1 2 3
    HF_HUB_OFFLINE=1 .venv/bin/python bench/pretraining_value.py runs/pt-mini2 --labelled-rows 2000
    HF_HUB_OFFLINE=1 .venv/bin/python bench/pretraining_value.py runs/gut/pt64 --held-apart sentences
    HF_HUB_OFFLINE=1 .venv/bin/python bench/pretraining_value.py runs/gut/pt64 --held-apart sentences --lr 4e-4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from defaults_sweep import BERTFORGE, LONG_WORDS, SST2_BUDGET_ROWS, one_epoch_run
from locations import DATA, REPO
from unseen_sentences import UNSEEN_SENTENCES, unseen_sentences_split

from bertforge.model import BertForPreTraining
from bertforge.model.config import CLASSIFIER_POOLINGS
from bertforge.pretraining.config import TrainingConfig
from bertforge.pretraining.export import export_model
from bertforge.pretraining.shards import PretrainingData
from bertforge.pretraining.trainer import build_model
from bertforge.tasks import read_task_data
from bertforge.tasks.trainer import reinitialise_top_layers
from bertforge.tokenization import BertTokenizer
from bertforge.training.distributed import seed_everything

FINETUNE_DROPOUT = 0.1
FRESH_LAYERS_SEED = 0
BOOTSTRAP_DRAWS, BOOTSTRAP_SEED = 5000, 0


def from_scratch_run(run: Path) -> Path:
    """`run` if it started from random weights, or the run that its chain of `--init-from` (other runs'
    final models) started with: that run's seed made the random weights the control starts from."""
    if not (run / "training_config.json").exists():
        sys.exit(f"{run} is no `bertforge pretrain train` run (no training_config.json): give --runs-dir, with the "
                 "control in its start-random folder")
    config = TrainingConfig(**json.loads((run / "training_config.json").read_text()))
    if config.init_from is None:
        return run
    earlier = Path(config.init_from).parent
    if not (earlier / "training_config.json").exists():
        sys.exit(f"{run} continued {config.init_from}, which no bertforge run made: only a run that started "
                 "from random weights has a random-weights control (or give --runs-dir with one in start-random)")
    return from_scratch_run(earlier)


def starting_points(run: Path, runs_dir: Path, control_dir: Path) -> dict[str, Path]:
    """The pre-trained model and its control, both saved with fine-tuning's dropout. A control already
    in `control_dir` is used as it is (a chain whose first run's folder is gone: rebuild it by hand and
    check its SHA-256 against the one recorded)."""
    starts = {"pre-trained": runs_dir / "start-pretrained", "random weights": control_dir / "start-random"}
    model = run / "final" if (run / "final").exists() else run
    tokenizer = BertTokenizer.from_pretrained(model)
    if not (starts["pre-trained"] / "config.json").exists():
        export_model(model, starts["pre-trained"], "float32", dropout=FINETUNE_DROPOUT)
    if not (starts["random weights"] / "config.json").exists():
        config = TrainingConfig(**json.loads((from_scratch_run(run) / "training_config.json").read_text()))
        seed_everything(config.seed)  # as the engine does right before building the model
        data = PretrainingData(config.data_dir)
        # the size `pretrain train` builds from: every token of the data's tokenizer, added ones included
        build_model(dataclasses.replace(config, dropout=FINETUNE_DROPOUT), len(data.tokenizer()),
                    data.options.max_seq_length).save_pretrained(starts["random weights"], tokenizer)
    return starts


def with_dropout(start: Path, dropout: float) -> Path:
    """A copy of `start` that fine-tunes with this hidden and attention dropout."""
    copy = start.parent / f"{start.name}-dropout{dropout:g}"
    if not (copy / "model.safetensors").exists():
        export_model(start, copy, "float32", dropout=dropout)
    return copy


def with_fresh_top(start: Path, layers: int) -> Path:
    """A copy of `start` whose checkpoint lacks the pooler, so fine-tuning draws a new one, and whose
    top `layers` encoder layers are drawn afresh with BERT's own initialisation (`finetune --reinit-layers`'s; one
    fixed seed, so both starts get the same new layers)."""
    copy = start.parent / (f"{start.name}-fresh-pooler" + (f"-layers{layers}" if layers else ""))
    if not (copy / "model.safetensors").exists():
        model = BertForPreTraining.from_pretrained(start)
        depth = len(model.base_model.encoder.layers)
        if layers > depth:
            sys.exit(f"--fresh-layers {layers}: {start} has only {depth} encoder layers")
        torch.manual_seed(FRESH_LAYERS_SEED)
        reinitialise_top_layers(model, layers)
        shutil.copytree(start, copy, dirs_exist_ok=True)  # the tokenizer's files; the weights are replaced
        model.save_pretrained(copy)
        weights = load_file(copy / "model.safetensors")
        save_file({k: v for k, v in weights.items() if ".pooler." not in k}, copy / "model.safetensors")
    return copy


def finetune(start: Path, seed: int, rows: int, output: Path, threads: int,
             split: tuple[Path, Path, Path | None] | None, learning_rate: str | None, layer_lr_decay: float,
             budgets: float, classifier_pooling: str | None) -> dict:
    # These come after the budget run's own --train, --train-limit and --epochs 1: the last one given wins.
    data = ["--train", str(split[0])] if split else []
    data += ["--train-limit", str(rows)] if rows != SST2_BUDGET_ROWS else []
    if (budgets, rows) != (1, SST2_BUDGET_ROWS):  # as many steps as `budgets` budget runs
        data += ["--epochs", f"{budgets * SST2_BUDGET_ROWS / rows:g}"]
    # Batch 32 and no decay unless asked: finetune's defaults when these runs were first made.
    rates = ["--learning-rate", learning_rate] if learning_rate else []
    rates += ["--batch-size", "32", "--layer-lr-decay", str(layer_lr_decay)]
    rates += ["--classifier-pooling", classifier_pooling] if classifier_pooling else []
    return one_epoch_run("sst2", ["--model", str(start), "--seed", str(seed), *data, *rates], output,
                         threads, split[1] if split else None, split[2] if split else None)


def correct_per_sentence(output: Path, sentences: Path, threads: int) -> np.ndarray:
    """1 where the fine-tuned model in `output` labels a sentence of `sentences` right, else 0 (its
    `bertforge predict` lines are kept beside the run, so a finished run is read, not repeated)."""
    predictions = output.parent / f"{output.name}.{sentences.stem}.predictions.jsonl"
    if not predictions.exists():
        subprocess.run([BERTFORGE, "predict", "--task", "classification", "--model", str(output), "--input",
                        str(sentences), "--threads", str(threads), "--output", str(predictions)], check=True)
    gold = [example.label for example in read_task_data("classification", sentences)]
    labels = [json.loads(line)["label"] for line in predictions.read_text(encoding="utf-8").splitlines()]
    return np.array([label == g for label, g in zip(labels, gold, strict=True)], dtype=float)


def gain_interval(pre_trained: np.ndarray, control: np.ndarray) -> tuple[float, float]:
    """95% interval of the seeds' mean gain over resamples of the sentences (rows: seeds, columns:
    sentences): the spread that another draw of sentences would give, which the seeds' spread leaves out."""
    per_sentence = pre_trained.mean(0) - control.mean(0)
    draws = np.random.default_rng(BOOTSTRAP_SEED).integers(0, per_sentence.size, (BOOTSTRAP_DRAWS, per_sentence.size))
    low, high = np.percentile(per_sentence[draws].mean(1), [2.5, 97.5])
    return float(low), float(high)


def positive_number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `bertforge pretrain train` output directory: a from-scratch run, "
                        "or one that continued such a run's final model (--init-from)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--runs-dir", type=Path, help="where both arms' fine-tunings go (default: RUN/value for the "
                        "pre-trained start, and the value folder of the run its chain started with for the control)")
    parser.add_argument("--labelled-rows", type=int, default=SST2_BUDGET_ROWS,
                        help=f"fine-tune on the first N rows of the training file (at most {SST2_BUDGET_ROWS:,})")
    parser.add_argument("--held-apart", choices=["rows", "sentences"], default="rows",
                        help="score on sst2/validation.tsv (rows) or on 1,000 unseen sentences (see above)")
    parser.add_argument("--selection", choices=["rows", "sentences"], default="rows",
                        help="with --held-apart sentences: select on held-out train rows, or on 1,000 more unseen "
                        "sentences (see above)")
    parser.add_argument("--learning-rate", "--lr", help="fine-tuning's peak learning rate (default: finetune's at batch 32, 2e-4 "
                        "for this width), the same for both starts")
    parser.add_argument("--budgets", type=float, default=1.0, metavar="B",
                        help="fine-tune for B times the budget run's steps (B epochs of the 20,000 rows), both starts")
    parser.add_argument("--layer-lr-decay", type=float, default=1.0, metavar="GAMMA",
                        help="fine-tuning's layer-wise learning-rate decay (see above), the same for both starts")
    parser.add_argument("--dropout", type=float, default=FINETUNE_DROPOUT,
                        help="fine-tuning's hidden and attention dropout, the same for both starts (see above)")
    parser.add_argument("--fresh-pooler", action="store_true", help="a new pooler for both starts (see above)")
    parser.add_argument("--fresh-layers", type=int, default=0, metavar="N",
                        help="with --fresh-pooler: the top N encoder layers re-initialised too (see above)")
    parser.add_argument("--classifier-pooling", choices=CLASSIFIER_POOLINGS,
                        help="what both starts' classifier reads (see above; default: the checkpoint's config, [CLS])")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not 1 <= args.labelled_rows <= SST2_BUDGET_ROWS:
        parser.error(f"--labelled-rows must be between 1 and {SST2_BUDGET_ROWS:,}")
    if args.fresh_layers < 0:
        parser.error(f"--fresh-layers must be 0 or more, got {args.fresh_layers}")
    if args.fresh_layers and not args.fresh_pooler:
        parser.error("--fresh-layers re-initialises layers below the pooler: give --fresh-pooler too")
    if args.fresh_pooler and args.classifier_pooling == "mean":
        parser.error("--classifier-pooling mean reads no pooler: --fresh-pooler would change nothing")
    if args.selection == "sentences" and args.held_apart != "sentences":
        parser.error("--selection sentences holds sentences apart as --held-apart sentences does: give that too")
    if not 0 < args.layer_lr_decay <= 1:
        parser.error(f"--layer-lr-decay must be in (0, 1], got {args.layer_lr_decay}")
    if args.budgets <= 0:
        parser.error(f"--budgets must be positive, got {args.budgets}")
    if not 0 <= args.dropout < 1:
        parser.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.learning_rate is not None and not positive_number(args.learning_rate):
        parser.error(f"--learning-rate must be a positive number, got {args.learning_rate!r}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs_dir = args.runs_dir or args.run / "value"
    # Every run of one chain has the same control: its fine-tunings live with the run that started the
    # chain, so a run that continues it reuses them instead of fine-tuning the same weights again.
    control_dir = args.runs_dir or from_scratch_run(args.run) / "value"
    if not DATA.exists():
        sys.exit(f"{DATA} not found: the fine-tuning runs on the shared SST-2 files")
    sentence_selection = args.selection == "sentences"
    split = unseen_sentences_split(sentence_selection) if args.held_apart == "sentences" else None
    suffix = "" if args.labelled_rows == SST2_BUDGET_ROWS else f"-rows{args.labelled_rows}"
    suffix += "-unseen" if split else ""
    suffix += "-select-sentences" if sentence_selection else ""
    suffix += f"-lr{args.learning_rate}" if args.learning_rate else ""
    suffix += f"-budgets{args.budgets:g}" if args.budgets != 1 else ""
    suffix += f"-llrd{args.layer_lr_decay:g}" if args.layer_lr_decay != 1 else ""
    suffix += f"-dropout{args.dropout:g}" if args.dropout != FINETUNE_DROPOUT else ""
    suffix += "-fresh-pooler" if args.fresh_pooler else ""
    suffix += f"-layers{args.fresh_layers}" if args.fresh_layers else ""
    suffix += f"-pool-{args.classifier_pooling}" if args.classifier_pooling else ""
    starts = starting_points(args.run, runs_dir, control_dir)
    if args.dropout != FINETUNE_DROPOUT:
        starts = {name: with_dropout(start, args.dropout) for name, start in starts.items()}
    if args.fresh_pooler:
        starts = {name: with_fresh_top(start, args.fresh_layers) for name, start in starts.items()}
    outputs = {name: [start.parent / f"{name.replace(' ', '-')}{suffix}-seed{seed}" for seed in args.seeds]
               for name, start in starts.items()}
    results = {name: [finetune(starts[name], seed, args.labelled_rows, output, args.threads, split,
                               args.learning_rate, args.layer_lr_decay, args.budgets, args.classifier_pooling)
                      for seed, output in zip(args.seeds, runs)]
               for name, runs in outputs.items()}

    held_apart = f"{UNSEEN_SENTENCES:,} unseen sentences" if split else "sst2/validation.tsv"
    train = split[0].relative_to(REPO) if split else "sst2/train.tsv"
    print(f"# {args.run}: SST-2 budget run (about 625 steps) on the first {args.labelled_rows:,} rows of {train}, "
          f"fine-tuning seeds {args.seeds}; accuracy %, mean ± sd")
    selection = f"{UNSEEN_SENTENCES:,} selection sentences" if sentence_selection else "held-out train rows"
    print(f"| start | selection ({selection}) | {held_apart} |"
          + ("" if split else f" its rows of ≥ {LONG_WORDS} words |") + " per seed |")
    print("| --- | ---: | ---: |" + ("" if split else " ---: |") + " --- |")

    def cell(rows: list[dict], key: str) -> str:
        values = [100 * r[key] for r in rows]
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0:.2f}"

    for name, rows in results.items():
        per_seed = ", ".join(f"{100 * r['held_apart']:.2f}" for r in rows)
        print(f"| {name} | {cell(rows, 'selection')} | {cell(rows, 'held_apart')} |"
              + ("" if split else f" {cell(rows, 'long')} |") + f" {per_seed} |")
    keys = ("held_apart",) if split else ("held_apart", "long")
    gain = {key: statistics.mean(r[key] for r in results["pre-trained"])
            - statistics.mean(r[key] for r in results["random weights"]) for key in keys}
    print(f"\npre-trained − random weights: {100 * gain['held_apart']:+.2f} points on {held_apart}"
          + ("" if split else f", {100 * gain['long']:+.2f} on its long rows") + " (goal: ≥ +2)")
    if split:
        # {set: {arm: correctness, rows seeds, columns sentences}}
        sets = {what: {name: np.stack([correct_per_sentence(run, sentences, args.threads) for run in runs])
                       for name, runs in outputs.items()}
                for what, sentences in (("the unseen sentences", split[1]),
                                        ("the selection sentences (chosen on)", split[2])) if sentences is not None}
        if len(sets) == 2:
            sets["both together"] = {name: np.concatenate([arms[name] for arms in sets.values()], axis=1)
                                     for name in outputs}
        for what, correct in sets.items():
            mean = 100 * (correct["pre-trained"].mean() - correct["random weights"].mean())
            low, high = gain_interval(correct["pre-trained"], correct["random weights"])
            print(f"on {what}: {mean:+.2f}, 95% interval over resampled sentences "
                  f"{100 * low:+.2f} to {100 * high:+.2f}")


if __name__ == "__main__":
    main()

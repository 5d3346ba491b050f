"""Does the teacher help a fresh student? (issue 15) `bertforge distill --student-size S` against its
control, the same network, data, schedule and seed on the gold labels alone (`--alpha 0`), over several
seeds, on SST-2. With `--student DIR` both arms start from that pre-trained model instead (a fresh head); with
`--prune`, from the teacher cut down to the student's size (`distill --prune`, its layers chosen as `--prune-depth`
says); with `--student-layers N`, from N of the teacher's layers, evenly spaced from the first, with its embeddings
and head (`distill --student-layers`, DistilBERT's start; the bundled sst2-distilled is such a student of 3 layers).

Each seed trains both arms from the same fresh weights in the same batch order (the seed draws both),
so the arms differ only in the teacher's soft targets. Both train on the first `--train-limit` rows
of sst2/train.tsv and are scored on sst2/validation.tsv after every epoch, keeping the best, as
`distill` does (with one epoch, nothing is selected on it). A single run of each arm cannot tell a
gain of a few tenths from the seeds' noise; several can. The report gives each arm's mean ± sd, the
gain with its standard error over seeds, and the gain's 95% interval over resampled validation rows
(`pretraining_value.py`'s bootstrap, from each run's `bertforge predict` lines).

With `--augment K` the distilled arm also learns the teacher's outputs on K perturbed copies of each
row (`distill --augment`), within the control's optimiser steps, learning-rate schedule and evaluation
points: the teacher labels more inputs, the student takes no more steps.

`--augment-epochs E` lets the distilled arm take E passes over the rows and their copies instead: more steps
than the control, so the gain is no longer like for like; it asks how good a student the copies can make.

`--alpha A` sets the distilled arm's weight on the soft targets (0.5 by default; 1 learns from the teacher
alone, the gold labels unused).

`--unlabelled-sentences N` gives the distilled arm N sentences of the Gutenberg books as well
(`distill --unlabelled`), labelled by the teacher alone: text from outside the reviews, which costs
nothing to collect. They are spread evenly over the corpus's sentences of 5 to 40 words and written
once to RUNS_DIR/gutenberg-sentences-N.tsv.

`--joined-rows N` gives the distilled arm N texts instead, each two of the training rows joined end to end
(`distill --unlabelled`), labelled by the teacher alone: text from the reviews, as long as their whole
sentences (the training rows average 9.6 words, the unseen sentences 20.8), where the teacher must weigh
two phrases' sentiments against each other. The pairs are drawn once (seed 0) from the first --train-limit
rows and written to RUNS_DIR/joined-rows-N-of-LIMIT.tsv.

`--hidden-weight B` adds the last-hidden-state cosine loss to the distilled arm (`distill --hidden-weight`;
with `--prune`, on the teacher's channels the student kept). The control stays the labels alone.
`--attention-weight G` likewise adds the attention-distribution KL (`distill --attention-weight`: each of the
student's heads against the teacher head it came from; the teacher runs beside the student on every batch).

`--layer-lr-decay G` trains both arms with layer-wise learning-rate decay G (`distill --layer-lr-decay`; the
heads at the full rate, each layer below at G times the one above), which fine-tuning's budget run prefers (0.8).

`--held-apart sentences` scores 1,000 unseen sentences instead and selects each run's best epoch on 1,000
more (bench/unseen_sentences.py: the split and the files that `pretraining_value.py --held-apart sentences
--selection sentences` uses). sst2/validation.tsv is the last 2,000 rows of GLUE's train set, phrases that share review
sentences with the training rows, so it rewards a student that remembers the phrases it was trained
on; unseen sentences, like GLUE's dev set, measure what it learnt. The training file is the split's,
which holds no phrase of either sentence set, and the teacher must be fine-tuned on that file too
(the script refuses a teacher whose run card names another training file).

The teacher is a model fine-tuned for SST-2 (docs/results.md, "Distillation (SST-2)", says how the
bundled students' teacher was made). Finished runs are read, not repeated, so two processes with
different seeds can share the cores and a last call with every seed writes the report:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/distill_value.py runs/sst2-teacher --lr 4e-4 --seeds 1 2 3 4 5 6 7 8 9 10
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from defaults_sweep import BERTFORGE, SST2_BUDGET_ROWS, train_once
from distill_texts import joined_rows, unlabelled_sentences
from locations import CORPUS, DATA, REPO
from pretraining_value import correct_per_sentence, gain_interval, positive_number
from unseen_sentences import UNSEEN_SENTENCES, unseen_sentences_split

from bertforge.model.config import CLASSIFIER_POOLINGS

VALIDATION = DATA / "sst2" / "validation.tsv"
ARMS = ("distilled", "labels alone")


class Split(NamedTuple):
    train: Path
    selection: Path  # each run's best epoch is kept on it
    scored: Path


def held_apart_split(held_apart: str) -> Split:
    if held_apart == "rows":
        return Split(DATA / "sst2" / "train.tsv", VALIDATION, VALIDATION)
    train, sentences, selection = unseen_sentences_split(selection=True)
    return Split(train, selection, sentences)


def fine_tuned_on(teacher: Path) -> Path | None:
    """The training file named in the teacher's run card, if it has one."""
    card = teacher / "run_card.json"
    if not card.is_file():
        return None
    train = json.loads(card.read_text(encoding="utf-8")).get("options", {}).get("train_path")
    return Path(train) if train else None


def distill(teacher: Path, alpha: str, seed: int, output: Path, args: argparse.Namespace, split: Split,
            student: tuple[str, ...], epochs: float | None = None, extra: tuple[str, ...] = ()) -> None:
    """Train one arm into `output` (kept, not repeated, once finished)."""
    decay = ("--layer-lr-decay", f"{args.layer_lr_decay:g}") if args.layer_lr_decay != 1 else ()
    pooling = ("--classifier-pooling", args.classifier_pooling) if args.classifier_pooling else ()
    train_once([BERTFORGE, "distill", "--task", "classification", "--teacher", str(teacher),
                "--train", str(split.train), "--train-limit", str(args.train_limit),
                "--validation", str(split.selection), *student, "--alpha", alpha,
                "--temperature", str(args.temperature), "--epochs", f"{epochs or args.epochs:g}",
                "--learning-rate", args.learning_rate, "--batch-size", str(args.batch_size), "--max-length", "64",
                "--seed", str(seed), "--threads", str(args.threads), *decay, *pooling, *extra], output)


def augmented_arm(copies: int, control: Path, epochs: float) -> tuple[float, tuple[str, ...]]:
    """The distilled arm's epochs and options with `copies` perturbed copies of each row: the control's
    optimiser steps, learning-rate schedule and evaluation points, so the extra inputs buy no extra steps."""
    total_steps = json.loads((control / "metrics.json").read_text(encoding="utf-8"))["total_steps"]
    per_epoch = round(total_steps / epochs)
    # Enough epochs over the larger set to reach --max-steps; the schedule then spans the control's steps.
    return epochs * (1 + copies), ("--augment", str(copies), "--max-steps", str(total_steps),
                                   "--eval-every", str(per_epoch))


def arm_folders(args: argparse.Namespace, runs_dir: Path) -> dict[str, list[Path]]:
    """Each arm's run folder per seed. The distilled arm's name adds what it changes to the default arm (none:
    "distilled-SETTING-seedS"); the control learns from the labels alone, so no temperature names it and one
    control serves every --temperature."""
    setting = f"rows{args.train_limit}-lr{args.learning_rate}" + (
        f"-batch{args.batch_size}" if args.batch_size != 32 else "") + (
        f"-decay{args.layer_lr_decay:g}" if args.layer_lr_decay != 1 else "") + (
        f"-pool{args.classifier_pooling}" if args.classifier_pooling else "")
    unseen = "-unseen" if args.held_apart == "sentences" else ""
    schedule = (f"-epochs{args.epochs:g}" if args.epochs != 1 else "") + unseen
    passes = f"-passes{args.augment_epochs:g}" if args.augment_epochs else ""
    augment = f"-augment{args.augment}{passes}" if args.augment else ""
    hidden = f"-hidden{args.hidden_weight:g}" if args.hidden_weight else ""
    attention = f"-attention{args.attention_weight:g}" if args.attention_weight else ""
    alpha = f"-alpha{args.alpha:g}" if args.alpha != 0.5 else ""
    books = f"-gutenberg{args.unlabelled_sentences}" if args.unlabelled_sentences else ""
    joined = f"-joined{args.joined_rows}" if args.joined_rows else ""
    distilled = f"distilled{alpha}{augment}{books}{joined}{hidden}{attention}-{setting}-T{args.temperature:g}{schedule}"
    return {"distilled": [runs_dir / f"{distilled}-seed{seed}" for seed in args.seeds],
            "labels alone": [runs_dir / f"labels-alone-{setting}{schedule}-seed{seed}" for seed in args.seeds]}


def train_arms(args: argparse.Namespace, split: Split, outputs: dict[str, list[Path]],
               student: tuple[str, ...]) -> None:
    # With --augment and without --augment-epochs the distilled arm takes its step count from the control, so the
    # control comes first; otherwise the distilled arm, whose figures a shortened session wants first.
    steps_from_control = bool(args.augment) and not args.augment_epochs
    if not steps_from_control:
        train_distilled(args, split, outputs, student)
    for seed, output in zip(args.seeds, outputs["labels alone"]):
        distill(args.teacher, "0", seed, output, args, split, student)
    if steps_from_control:
        train_distilled(args, split, outputs, student)


def train_distilled(args: argparse.Namespace, split: Split, outputs: dict[str, list[Path]],
                    student: tuple[str, ...]) -> None:
    runs_dir = outputs["distilled"][0].parent
    unlabelled = unlabelled_sentences(args.unlabelled_sentences, runs_dir) if args.unlabelled_sentences else \
        joined_rows(args.joined_rows, split.train, args.train_limit, runs_dir) if args.joined_rows else None
    unlabelled_option = ("--unlabelled", str(unlabelled)) if unlabelled else ()
    for seed, output, control in zip(args.seeds, outputs["distilled"], outputs["labels alone"]):
        if args.augment_epochs:
            epochs, extra = args.augment_epochs, ("--augment", str(args.augment))
        elif args.augment:
            epochs, extra = augmented_arm(args.augment, control, args.epochs)
        else:
            epochs, extra = None, ()
        for option, weight in (("--hidden-weight", args.hidden_weight), ("--attention-weight", args.attention_weight)):
            if weight:
                extra += (option, f"{weight:g}")
        extra += unlabelled_option
        distill(args.teacher, f"{args.alpha:g}", seed, output, args, split, student, epochs, extra)


def paired_gain(distilled: list[float], control: list[float]) -> tuple[float, float, int]:
    """(mean of the per-seed differences, its standard error over seeds, seeds the distilled arm won)."""
    differences = [d - c for d, c in zip(distilled, control, strict=True)]
    error = statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else 0.0
    return statistics.mean(differences), error, sum(d > 0 for d in differences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", type=Path, help="a model fine-tuned for SST-2")
    parser.add_argument("--student-size", default="L4-H256")
    parser.add_argument("--student-layers", type=int, metavar="N",
                        help="both arms start from N of the teacher's layers (`distill --student-layers`), not a "
                        "fresh --student-size network")
    parser.add_argument("--student", type=Path, metavar="DIR",
                        help="both arms start from this pre-trained model (`distill --student`), not fresh weights")
    parser.add_argument("--prune", action="store_true",
                        help="both arms start from the teacher cut down to --student-size (`distill --prune`), not "
                        "fresh weights")
    parser.add_argument("--prune-depth", choices=["spaced", "importance"],
                        help="with --prune: which teacher layers the cut keeps (`distill --prune-depth`) [default: "
                        "spaced]")
    parser.add_argument("--fresh-runs", type=Path, metavar="DIR",
                        help="with --student: also train (or read) the fresh --student-size arms in DIR, as the same "
                        "command without --student does, and report what the pre-trained start adds to each arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--train-limit", type=int, default=SST2_BUDGET_ROWS,
                        help="train on the first N rows of sst2/train.tsv")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", "--lr", default="4e-4",
                        help="peak learning rate of both arms (4e-4: the one-epoch sweep's best for BERT-mini, "
                        "L4-H256, from random weights; docs/results.md)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="B",
                        help="examples per optimiser step of both arms [default: 32, distill's]")
    parser.add_argument("--layer-lr-decay", type=float, default=1.0, metavar="G",
                        help="layer-wise learning-rate decay of both arms (`distill --layer-lr-decay`) [default: 1, "
                        "none]")
    parser.add_argument("--classifier-pooling", choices=CLASSIFIER_POOLINGS,
                        help="both arms' student classifier pooling (`distill --classifier-pooling`; default: the teacher's)")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="the distilled arm's weight on the soft targets (`distill --alpha`; the control has 0)")
    parser.add_argument("--augment", type=int, default=0, metavar="K",
                        help="the distilled arm also learns the teacher's outputs on K perturbed copies of each row "
                        "(`distill --augment`), within the control's number of steps")
    parser.add_argument("--augment-epochs", type=float, metavar="E",
                        help="with --augment: the distilled arm takes E passes over the rows and their copies "
                        "(more steps than the control) instead of the control's steps")
    parser.add_argument("--hidden-weight", type=float, default=0.0, metavar="B",
                        help="the distilled arm also learns the teacher's last hidden state with this weight "
                        "(`distill --hidden-weight`; needs --prune with --student-size)")
    parser.add_argument("--attention-weight", type=float, default=0.0, metavar="G",
                        help="the distilled arm also learns the attention distributions of the teacher heads its "
                        "heads came from, with this weight (`distill --attention-weight`; needs --prune or "
                        "--student-layers)")
    parser.add_argument("--unlabelled-sentences", type=int, default=0, metavar="N",
                        help="the distilled arm also learns the teacher's outputs on N Gutenberg sentences "
                        "(`distill --unlabelled`)")
    parser.add_argument("--joined-rows", type=int, default=0, metavar="N",
                        help="the distilled arm also learns the teacher's outputs on N texts of two training rows "
                        "joined (`distill --unlabelled`)")
    parser.add_argument("--held-apart", choices=["rows", "sentences"], default="rows",
                        help="score on sst2/validation.tsv (rows) or on 1,000 unseen sentences (see above)")
    parser.add_argument("--runs-dir", type=Path,
                        help="where the runs go (default: runs/distill-value-SIZE, -SIZE-pruned with --prune, "
                        "-layersN with --student-layers, or the --student's name)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.epochs <= 0:
        parser.error(f"--epochs must be positive, got {args.epochs:g}")
    if args.augment < 0:
        parser.error(f"--augment must be 0 or more, got {args.augment}")
    if args.augment_epochs is not None and (not args.augment or args.augment_epochs <= 0):
        parser.error(f"--augment-epochs {args.augment_epochs:g} needs --augment K and a positive number of passes")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be 1 or more, got {args.batch_size}")
    if not 0 < args.layer_lr_decay <= 1:
        parser.error(f"--layer-lr-decay {args.layer_lr_decay:g}: each layer's share of the rate above it, in (0, 1]")
    if not 0 < args.alpha <= 1:
        parser.error(f"--alpha {args.alpha:g}: the distilled arm's soft-target weight must be in (0, 1]")
    if args.unlabelled_sentences < 0:
        parser.error(f"--unlabelled-sentences must be 0 or more, got {args.unlabelled_sentences}")
    if args.joined_rows < 0 or (args.joined_rows and args.unlabelled_sentences):
        parser.error(f"--joined-rows {args.joined_rows}: 0 or more, and not with --unlabelled-sentences (the distilled "
                     f"arm reads one --unlabelled file)")
    if args.joined_rows and args.train_limit < 2:
        parser.error(f"--joined-rows joins two different training rows: --train-limit {args.train_limit} is too few")
    if args.unlabelled_sentences and not CORPUS.is_file():
        parser.error(f"--unlabelled-sentences: {CORPUS} not found (the Gutenberg corpus of the shared data)")
    if args.train_limit < 1:
        parser.error(f"--train-limit must be 1 or more, got {args.train_limit}")
    if not positive_number(args.learning_rate):
        parser.error(f"--learning-rate must be a positive number, got {args.learning_rate!r}")
    if not (args.teacher / "config.json").is_file():
        parser.error(f"{args.teacher}: no config.json (the teacher is a model directory)")
    if args.student and not (args.student / "config.json").is_file():
        parser.error(f"--student {args.student}: no config.json (a pre-trained model directory)")
    if args.prune and args.student:
        parser.error("--prune cuts the students from the teacher; --student starts them from another model: give one")
    if args.student_layers is not None and (args.prune or args.student):
        parser.error(f"--student-layers {args.student_layers} starts the students from the teacher's layers; "
                     f"--prune and --student start them elsewhere: give one")
    if args.student_layers is not None and args.student_layers < 1:
        parser.error(f"--student-layers must be 1 or more, got {args.student_layers}")
    for option, weight, kept in (("--hidden-weight", args.hidden_weight, "channels"),
                                 ("--attention-weight", args.attention_weight, "heads")):
        if weight < 0 or (weight and not (args.prune or args.student_layers)):
            parser.error(f"{option} {weight:g}: 0 or more, and with --prune or --student-layers (the student's {kept} "
                         f"must be the teacher's)")
    if args.prune_depth and not args.prune:
        parser.error(f"--prune-depth {args.prune_depth} chooses the layers --prune keeps: give --prune too")
    if args.fresh_runs and not args.student:
        parser.error("--fresh-runs compares a pre-trained --student with fresh students: give --student too")
    if not VALIDATION.exists():
        sys.exit(f"{VALIDATION} not found: the runs train and score on the shared SST-2 files")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    split = held_apart_split(args.held_apart)
    teacher_train = fine_tuned_on(args.teacher)
    unseen = args.held_apart == "sentences"
    if unseen and (teacher_train is None or teacher_train.resolve() != split.train.resolve()):
        sys.exit(f"{args.teacher} was fine-tuned on {teacher_train or 'a file its run card does not name'}, which may "
                 f"hold the scored sentences: fine-tune the teacher on {split.train} for --held-apart sentences")
    pruned = ("-pruned" + ("-importance" if args.prune_depth == "importance" else "")) if args.prune else ""
    student_name = args.student.name if args.student else \
        f"layers{args.student_layers}" if args.student_layers else args.student_size + pruned
    runs_dir = args.runs_dir or REPO / "runs" / f"distill-value-{student_name}"
    outputs = arm_folders(args, runs_dir)
    fresh = ("--student-size", args.student_size)
    cut = ("--prune",) + (("--prune-depth", args.prune_depth) if args.prune_depth else ()) if args.prune else ()
    student = ("--student", str(args.student)) if args.student else \
        ("--student-layers", str(args.student_layers)) if args.student_layers else fresh + cut
    train_arms(args, split, outputs, student)
    # rows: seeds × scored rows, 1 where the run's kept student labels the row right
    correct = {arm: np.stack([correct_per_sentence(run, split.scored, args.threads) for run in runs])
               for arm, runs in outputs.items()}
    accuracy = {arm: list(rows.mean(1)) for arm, rows in correct.items()}
    scored = f"{UNSEEN_SENTENCES:,} unseen sentences" if unseen else "sst2/validation.tsv"
    train = split.train.relative_to(REPO) if unseen else "sst2/train.tsv"

    print(f"# {student_name} students of {args.teacher}: {args.epochs:g} epoch(s) on the first "
          f"{args.train_limit:,} rows of {train}, lr {args.learning_rate}, T {args.temperature:g}, seeds {args.seeds}; "
          f"accuracy % on {scored}")
    if args.augment:
        steps = (f"in {args.augment_epochs:g} passes over rows and copies (more steps than the control)"
                 if args.augment_epochs else "in the control's number of steps")
        print(f"# the distilled arm also on {args.augment} perturbed cop{'y' if args.augment == 1 else 'ies'} of "
              f"each row, labelled by the teacher, {steps}")
    if args.unlabelled_sentences:
        print(f"# the distilled arm also on {args.unlabelled_sentences:,} Gutenberg sentences, labelled by the teacher")
    if args.joined_rows:
        print(f"# the distilled arm also on {args.joined_rows:,} texts of two training rows joined, labelled by the "
              f"teacher")
    if args.layer_lr_decay != 1:
        print(f"# both arms with layer-wise learning-rate decay {args.layer_lr_decay:g}")
    if args.hidden_weight:
        print(f"# the distilled arm also learns the teacher's last hidden state (--hidden-weight {args.hidden_weight:g})")
    if args.attention_weight:
        print(f"# the distilled arm also learns the teacher heads' attention (--attention-weight "
              f"{args.attention_weight:g})")
    print("| arm | mean ± sd | per seed |\n| --- | ---: | --- |")
    for arm, alpha in zip(ARMS, (args.alpha, 0)):
        values = [100 * v for v in accuracy[arm]]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {arm} (--alpha {alpha:g}) | {statistics.mean(values):.2f} ± {spread:.2f} | "
              f"{', '.join(f'{v:.2f}' for v in values)} |")
    gain, error, wins = paired_gain(accuracy["distilled"], accuracy["labels alone"])
    low, high = gain_interval(correct["distilled"], correct["labels alone"])
    print(f"\ndistilled − labels alone: {100 * gain:+.2f} points (standard error over seeds {100 * error:.2f}; "
          f"the distilled student wins {wins} of {len(args.seeds)} seeds); "
          f"95% interval over resampled {'sentences' if unseen else 'validation rows'} {100 * low:+.2f} to "
          f"{100 * high:+.2f}")
    if args.fresh_runs:
        fresh_outputs = {arm: [args.fresh_runs / run.name for run in runs] for arm, runs in outputs.items()}
        train_arms(args, split, fresh_outputs, fresh)
        report_start(args, split, outputs, fresh_outputs)


def report_start(args: argparse.Namespace, split: Split, pretrained: dict[str, list[Path]],
                 fresh: dict[str, list[Path]]) -> None:
    """What starting from the pre-trained --student adds to each arm, on the scored sentences, on the selection
    ones (a second draw of the same kind; each run kept its best epoch on those, which flatters every run a
    little, the fresh ones as much) and on both."""
    sets = {"scored": [split.scored]} if split.scored == split.selection else \
        {"scored sentences": [split.scored], "selection sentences": [split.selection],
         "both": [split.scored, split.selection]}
    print(f"\n# what the start {args.student} adds over a fresh {args.student_size} ({args.fresh_runs}), same seeds")
    print("| arm | " + " | ".join(f"{name}: pre-trained / fresh | gain (interval)" for name in sets) + " |")
    print("| --- |" + " ---: | --- |" * len(sets))
    for arm in ARMS:
        cells = []
        for files in sets.values():
            # seeds × sentences of every file, 1 where the run's kept student labels the sentence right
            started, scratch = (np.stack([np.concatenate([correct_per_sentence(run, sentences, args.threads)
                                                          for sentences in files]) for run in runs[arm]])
                                for runs in (pretrained, fresh))
            gain, error, wins = paired_gain(list(started.mean(1)), list(scratch.mean(1)))
            low, high = gain_interval(started, scratch)
            cells += [f"{100 * started.mean():.2f} / {100 * scratch.mean():.2f}",
                      f"{100 * gain:+.2f} (SE {100 * error:.2f}, {wins} of {len(args.seeds)}; {100 * low:+.2f} to "
                      f"{100 * high:+.2f})"]
        print(f"| {arm} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

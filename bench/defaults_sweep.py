"""The sweep behind `bertforge finetune`'s default learning rate (issue 17): one-epoch budget runs
from the bundled all-MiniLM-L6-v2 at several learning rates, everything else at its default.

Each run picks nothing by looking at the figures it reports. It trains with `--hold-out N`, so the
last N training examples are its selection split (the learning rate is chosen on these), and is then
scored by `bertforge evaluate` on data held apart from all training and selection:

  sst2   the first 20,000 rows of sst2/train.tsv (--hold-out 2000: rows 63,350-65,349 select);
         held apart: sst2/validation.tsv (2,000 rows, mostly phrases), and its 430 rows of 15 words or
         more apart (closer to the full sentences of GLUE's dev set)
  conll  conll2003/train.txt less its last 1,000 sentences (--hold-out 1000 select), one epoch;
         held apart: conll2003/valid.txt (3,250 sentences; the official test set is held out by the lead)

`--held-apart sentences` (sst2) scores 1,000 whole review sentences instead, with none of their phrases in
training, and selects on 1,000 more (bench/unseen_sentences.py: the split and the files that
`pretraining_value.py --held-apart sentences --selection sentences` uses); the budget run takes the first
20,000 rows of that split's training file.
sst2/validation.tsv shares review sentences with the training rows, so it flatters a model that remembers the
phrases it saw; unseen sentences are what the issue's "sentences held apart from all training data" means.

Runs already finished in --runs-dir are read, not repeated, so the table can be rebuilt at any time.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/defaults_sweep.py --task sst2 --learning-rates 3e-5 5e-5 1e-4 2e-4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from locations import DATA, REPO
from unseen_sentences import unseen_sentences_split
BERTFORGE = str(REPO / ".venv" / "bin" / "bertforge")

SST2_BUDGET_ROWS = 20_000  # the SST-2 budget run trains on this many rows of sst2/train.tsv

SETUPS = {
    "sst2": {"finetune": ["--task", "classification", "--train", str(DATA / "sst2" / "train.tsv"),
                          "--hold-out", "2000", "--train-limit", str(SST2_BUDGET_ROWS)],
             "evaluate": ["--task", "classification", "--validation", str(DATA / "sst2" / "validation.tsv")],
             "metric": "accuracy"},
    "conll": {"finetune": ["--task", "ner", "--train", str(DATA / "conll2003" / "train.txt"), "--hold-out", "1000"],
              "evaluate": ["--task", "ner", "--validation", str(DATA / "conll2003" / "valid.txt")],
              "metric": "f1"},
}


def train_once(command: list[str], output: Path) -> None:
    """Run a `bertforge finetune|distill` command into `output` unless it finished there before; an
    interrupted run resumes from its checkpoint. The run card is written last, atomically: metrics.json
    is rewritten at every evaluation, so alone it may be an interrupted run's."""
    if (output / "run_card.json").is_file():
        return
    restart = ["--resume", str(output)] if (output / "checkpoint").is_dir() else ["--overwrite"]
    subprocess.run([*command, *restart, "--output", str(output)], check=True)


LONG_WORDS = 15


def long_rows(runs_dir: Path) -> Path:
    """sst2/validation.tsv's rows of at least LONG_WORDS words, as a file `evaluate` reads."""
    path = runs_dir / f"sst2-validation-{LONG_WORDS}-words.tsv"
    if not path.exists():
        header, *rows = (DATA / "sst2" / "validation.tsv").read_text(encoding="utf-8").splitlines()
        path.write_text("\n".join([header, *(r for r in rows if len(r.split("\t")[0].split()) >= LONG_WORDS)]) + "\n",
                        encoding="utf-8")
    return path


def evaluate(setup: dict, model: Path, threads: int, output: Path, validation: Path | None = None) -> float:
    if not output.exists():
        command = [BERTFORGE, "evaluate", *setup["evaluate"], "--model", str(model), "--threads", str(threads),
                   "--output", str(output)]
        if validation is not None:
            command[command.index("--validation") + 1] = str(validation)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(output.read_text())[setup["metric"]]


def one_epoch_run(task: str, options: list[str], output: Path, threads: int, held_apart: Path | None = None,
                  selection: Path | None = None) -> dict:
    """The task's one-epoch budget run with more finetune `options` into `output` (read, not repeated,
    once finished), and its scores: selection split, held apart, and (SST-2) held-apart long rows.
    With `held_apart`, that file is the held-apart data instead (and there is no long-rows score); with
    `selection`, that file is the selection split instead of the training file's last rows."""
    setup, runs_dir = SETUPS[task], output.parent
    split = setup["finetune"]
    if selection is not None:
        at = split.index("--hold-out")
        split = [*split[:at], "--validation", str(selection), *split[at + 2:]]
    train_once([BERTFORGE, "finetune", *split, "--epochs", "1", *options, "--threads", str(threads)], output)
    score = evaluate(setup, output, threads, runs_dir / f"{output.name}.heldapart.json", held_apart)
    long = evaluate(setup, output, threads, runs_dir / f"{output.name}.heldapart-long.json", long_rows(runs_dir)) \
        if task == "sst2" and held_apart is None else None
    metrics = json.loads((output / "metrics.json").read_text())
    return {"steps": metrics["total_steps"], "train_seconds": metrics["train_seconds"],
            "selection": metrics["best"][setup["metric"]], "held_apart": score, "long": long}


def run(task: str, learning_rate: str, extra: list[str], runs_dir: Path, threads: int,
        split: tuple[Path, Path, Path] | None = None) -> dict:
    """One budget run at `learning_rate`; with `split` (training file, held-apart and selection sentences), on
    the unseen-sentences split."""
    # A path among the options (`--model runs/x`) would make the run's folder a nest of folders.
    options = "".join(extra).replace("--", "-").replace("/", "-")
    name = f"{task}-lr{learning_rate}{options}" + ("-unseen" if split else "")
    data = ["--train", str(split[0])] if split else []  # after the setup's own --train: the last one given wins
    rate = [] if learning_rate == "default" else ["--learning-rate", learning_rate]
    return {"name": name, "learning_rate": learning_rate, "extra": " ".join(extra),
            **one_epoch_run(task, [*rate, *extra, *data], runs_dir / name, threads, *(split[1:] if split else ()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(SETUPS), required=True)
    parser.add_argument("--learning-rates", nargs="+", default=["3e-5", "5e-5", "1e-4", "2e-4"],
                        help="peak rates to run; 'default' runs finetune's own (no --learning-rate)")
    parser.add_argument("--extra", default="", help="more finetune options for every run, e.g. '--batch-size 16'")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "sweep")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--held-apart", choices=["rows", "sentences"], default="rows",
                        help="rows: the task's held-apart file (above); sentences (sst2): 1,000 unseen review "
                             "sentences, selecting on 1,000 more")
    args = parser.parse_args()
    if args.held_apart == "sentences" and args.task != "sst2":
        parser.error(f"--held-apart sentences is SST-2's split; --task {args.task} scores its own held-apart file")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not DATA.exists():
        sys.exit(f"{DATA} not found: the sweep trains on the shared data sets")
    split = None
    if args.held_apart == "sentences":
        split = unseen_sentences_split(selection=True)
    rows = [run(args.task, lr, args.extra.split(), args.runs_dir, args.threads, split) for lr in args.learning_rates]
    metric = SETUPS[args.task]["metric"]
    held_apart = "1,000 unseen sentences" if split else "held-apart"
    long = f" held-apart, rows of ≥ {LONG_WORDS} words |" if args.task == "sst2" and not split else ""
    selection = "1,000 selection sentences" if split else "selection"
    print(f"| learning rate | options | steps | training s (--threads {args.threads}) | {selection} {metric} | "
          f"{held_apart} {metric} |{long}")
    print("| --- | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if long else ""))
    best = max(rows, key=lambda r: r["selection"])
    for r in rows:
        mark = " (chosen)" if r is best else ""
        print(f"| {r['learning_rate']}{mark} | {r['extra'] or 'defaults'} | {r['steps']} | {r['train_seconds']:.0f} | "
              f"{100 * r['selection']:.2f} | {100 * r['held_apart']:.2f} |"
              + (f" {100 * r['long']:.2f} |" if r["long"] is not None else ""))


if __name__ == "__main__":
    main()

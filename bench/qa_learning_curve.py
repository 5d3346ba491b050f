"""SQuAD F1 on the held-out articles against the number of training questions (issue 17): what more
data would give the bundled question-answering model.

Every run is the bundled model's recipe (`minilm-squad/README.md`: one epoch, batch 16, max length
256, doc stride 128, lr 1.5e-4) on the first N questions of the training articles of
`squad-v1.1-dev-part-train.json.gz` (`--train-limit N`), scored on the same 958 questions of the last 5
articles (`--hold-out 5`), never trained on. Runs already finished in --runs-dir are read, not repeated.
Writes a table and docs/squad_f1_vs_questions.png.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/qa_learning_curve.py [--limits 1900 3800 7637] [--threads 1]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

from defaults_sweep import BERTFORGE, train_once
from locations import DATA, REPO

SQUAD = DATA / "squad" / "squad-v1.1-dev-part-train.json.gz"
HELD_OUT_ARTICLES = 5


def articles_covered(limit: int) -> float:
    """How many training articles the first `limit` questions span (the last one in part)."""
    articles = json.loads(gzip.decompress(SQUAD.read_bytes()))["data"][:-HELD_OUT_ARTICLES]
    seen = 0
    for index, article in enumerate(articles):
        count = sum(len(paragraph["qas"]) for paragraph in article["paragraphs"])
        if seen + count >= limit:
            return index + (limit - seen) / count
        seen += count
    return float(len(articles))


def run(limit: int, runs_dir: Path, threads: int) -> dict:
    output = runs_dir / f"qa-curve-{limit}"
    train_once([BERTFORGE, "finetune", "--task", "qa", "--train", str(SQUAD), "--hold-out", str(HELD_OUT_ARTICLES),
                "--train-limit", str(limit), "--max-length", "256", "--epochs", "1", "--batch-size", "16",
                "--learning-rate", "1.5e-4", "--threads", str(threads)], output)
    metrics = json.loads((output / "metrics.json").read_text())
    return {"questions": limit, "articles": articles_covered(limit), "windows": metrics["train_examples"],
            "steps": metrics["total_steps"], "exact_match": metrics["best"]["exact_match"], "f1": metrics["best"]["f1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limits", type=int, nargs="+", default=[1900, 3800, 7637])
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "squad_f1_vs_questions.png")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not SQUAD.exists():
        sys.exit(f"{SQUAD} not found: the curve trains on the shared SQuAD part")
    rows = [run(limit, args.runs_dir, args.threads) for limit in args.limits]
    print("| training questions | articles | windows | steps | held-out exact match | held-out F1 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['questions']:,} | {r['articles']:.1f} | {r['windows']:,} | {r['steps']} | {r['exact_match']:.1f} | "
              f"{r['f1']:.1f} |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([r["questions"] for r in rows], [r["f1"] for r in rows], "o-", label="F1")
    axis.plot([r["questions"] for r in rows], [r["exact_match"] for r in rows], "s--", label="exact match")
    axis.axhline(70, color="grey", linewidth=0.8, linestyle=":", label="goal: F1 70")
    axis.set_xlabel("training questions (first N of 34 articles)")
    axis.set_ylabel(f"held-out score ({HELD_OUT_ARTICLES} unseen articles, 958 questions)")
    axis.set_title("minilm-squad recipe: one epoch, lr 1.5e-4")
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.plot, dpi=120)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()

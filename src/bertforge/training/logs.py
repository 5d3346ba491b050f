"""The training and evaluation logs (CSV, one row per logged step) and their curves (PNG)."""

from __future__ import annotations

import csv
from pathlib import Path

from bertforge.io.atomic import atomic_path

TRAIN_LOG, EVAL_LOG = "train_log.csv", "eval_log.csv"


def read_log(path: Path) -> list[dict[str, float]]:
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return [{key: float(value) for key, value in row.items() if value not in ("", None)}
                for row in csv.DictReader(f)]


class CsvLog:
    """A CSV file of numeric rows keyed by `step`; its columns are the first row's keys."""

    def __init__(self, path: Path, keep_through_step: int | None):
        """Start afresh, or (resuming) keep only the rows up to the checkpoint's step: rows the
        interrupted run wrote after it are dropped so that the log matches the weights."""
        self.path, self.columns = Path(path), None
        rows = []
        if keep_through_step is not None and self.path.exists():
            with open(self.path, newline="") as f:  # as written: a count stays "200", not "200.0"
                rows = [row for row in csv.DictReader(f) if float(row["step"]) <= keep_through_step]
        self.path.unlink(missing_ok=True)
        for row in rows:
            self.write(row)

    def write(self, row: dict) -> None:
        new = self.columns is None
        if new:
            self.columns = list(row)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def rows(self) -> list[dict[str, float]]:
        return read_log(self.path)


def plot_curves(output_dir: Path, panels: list[tuple[str, str]], path: Path) -> Path:
    """One panel per (column, title): the column from the training log and from the evaluation log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, held_out = read_log(Path(output_dir) / TRAIN_LOG), read_log(Path(output_dir) / EVAL_LOG)
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, (key, title) in zip(axes[0], panels):
        for rows, style, label in ((train, "-", "train"), (held_out, "o-", "held-out")):
            points = [(row["step"], row[key]) for row in rows if key in row]
            if points:
                axis.plot(*zip(*points), style, label=label, alpha=0.8)
        axis.set(title=title, xlabel="step")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return Path(path)

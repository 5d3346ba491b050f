"""Students against their teacher in the text-classification pipeline, same run: sentences per second
on SST-2 validation sentences (and accuracy when the models are fine-tuned with SST-2's labels).
The models alternate over `--repeats` rounds and the median round counts, because the 2-core
machine is shared and its speed drifts. Where other jobs hold the cores, wall-clock figures with 2
threads mostly measure waiting (each operator's threads wait for a free core); `--threads 1 --clock
cpu` counts the process's own CPU seconds instead, which such load disturbs far less.

Speed does not depend on the weights, so without --teacher the bench measures the shapes the issue
asks about: the bundled all-MiniLM-L6-v2 with a fresh 2-label head as the teacher, and students made
from it by `bertforge distill`'s own construction (`--student-layers 3`: teacher layers 0, 2, 4;
`--student-size L4-H256`). Accuracy is then meaningless and not printed. With trained models:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/distill.py [--teacher sst2-model --student sst2-student ...] \
        [--sentences 872] [--repeats 3] [--batch-size 32] [--threads 2] [--clock wall|cpu] [--dtypes float32,int8,auto]

`--dtypes` runs every model at each precision (`pipeline(..., dtype=)`): "× teacher" is against the float32
teacher, what a user replacing the teacher gets; "× teacher, same dtype" compares like with like.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from locations import DATA, REPO
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def sst2_validation(limit: int) -> tuple[list[str], list[str]]:
    """SST-2 validation sentences and labels: the full file beside the repo, else the bundled sample."""
    path = DATA / "sst2" / "validation.tsv"
    if not path.exists():
        path = REPO / "src" / "bertforge" / "data" / "sst2_sample" / "validation.tsv"
    from bertforge.io.datasets import read_text_examples

    rows = read_text_examples(path, "sentence", label_column="label")[:limit]
    return [row.text for row in rows], [row.label for row in rows]


def shape_models(directory: Path) -> dict[str, Path]:
    """The untrained teacher and students of the issue's shapes, saved under `directory`."""
    from bertforge.distillation import copy_teacher_weights, student_config, teacher_layer_indices
    from bertforge.model import BertForSequenceClassification, default_model_path
    from bertforge.tokenization import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(default_model_path())
    teacher = BertForSequenceClassification.from_pretrained(default_model_path(), id2label={0: "0", 1: "1"})
    layers = teacher.config.num_hidden_layers // 2
    three = BertForSequenceClassification(student_config(teacher.config, layers=layers))
    copy_teacher_weights(teacher, three, teacher_layer_indices(teacher.config.num_hidden_layers, layers))
    small = BertForSequenceClassification(student_config(teacher.config, size="L4-H256"))
    models = {"teacher (MiniLM-L6-H384)": teacher, f"student, {layers} teacher layers": three,
              "student, L4-H256": small}
    paths = {}
    for i, (name, model) in enumerate(models.items()):
        model.save_pretrained(directory / str(i), tokenizer)
        paths[name] = directory / str(i)
    return paths


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # process_time: CPU seconds of all threads


def one_round(pipe, texts: list[str], clock) -> tuple[float, list[str]]:
    started = clock()
    results = pipe(texts)
    return len(texts) / (clock() - started), [best["label"] for best in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=None, help="A fine-tuned teacher (default: MiniLM shapes, untrained).")
    parser.add_argument("--student", action="append", default=[], help="A student of --teacher (repeatable).")
    parser.add_argument("--sentences", type=int, default=872, help="SST-2 validation sentences, the first N of the file's.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: the process's CPU time (a busy machine, with --threads 1)")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32, bfloat16, int8, auto")
    args = parser.parse_args()
    if bool(args.teacher) != bool(args.student):
        parser.error("give --teacher and at least one --student, or neither (the untrained shapes)")
    torch.set_num_threads(args.threads)

    import bertforge

    texts, labels = sst2_validation(args.sentences)
    with tempfile.TemporaryDirectory() as scratch:
        if args.teacher:
            paths = {f"teacher {args.teacher}": Path(args.teacher), **{f"student {s}": Path(s) for s in args.student}}
        else:
            paths = shape_models(Path(scratch))
        dtypes = args.dtypes.split(",")
        if "float32" not in dtypes:
            dtypes.insert(0, "float32")  # the teacher's float32 speed is every ratio's denominator
        pipes = {(name, dtype): bertforge.pipeline("text-classification", model=path, batch_size=args.batch_size,
                                                   dtype=dtype)
                 for dtype in dtypes for name, path in paths.items()}
        for pipe in pipes.values():
            pipe(texts[:args.batch_size])  # warm-up: first-call allocations are not the model's speed
        speeds, predictions = {name: [] for name in pipes}, {}
        for _ in range(args.repeats):
            for name, pipe in pipes.items():
                speed, predictions[name] = one_round(pipe, texts, CLOCKS[args.clock])
                speeds[name].append(speed)
                print(f"  {name[0]} ({name[1]}): {speed:.1f} sentences per {args.clock} second", flush=True)

    print(f"\nSST-2 validation, {len(texts)} sentences, text-classification pipeline, batch {args.batch_size}, "
          f"{args.threads} threads, {args.clock} clock, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    median = {name: statistics.median(values) for name, values in speeds.items()}
    teacher_name = next(iter(paths))
    unit = "sentences/s" if args.clock == "wall" else "sentences per CPU-s"
    header = f"| model | dtype | layers × hidden | {unit} (median of {args.repeats}) | × teacher | × teacher, same dtype |"
    header += " accuracy |" if args.teacher else ""
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for (name, dtype), value in median.items():
        config = pipes[name, dtype].config
        row = (f"| {name} | {dtype} | {config.num_hidden_layers} × {config.hidden_size} | {value:.1f} | "
               f"{value / median[teacher_name, 'float32']:.2f}× | {value / median[teacher_name, dtype]:.2f}× |")
        if args.teacher:
            row += f" {sum(p == g for p, g in zip(predictions[name, dtype], labels)) / len(labels):.2%} |"
        print(row)


if __name__ == "__main__":
    main()

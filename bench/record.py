"""Run a benchmark and keep its results in a folder with a run card (issue: every output folder
says how it was made).

    python bench/record.py --output results/embed -- bench/embed.py --threads 2

writes `results/embed/output.txt` (everything the benchmark printed), `results.json` (the lines it
printed that are JSON objects: every bench script prints its figures that way) and the run card
(`run_card.json`, `RUN_CARD.md`: the command, the script's SHA-256, the machine and its CPU flags,
versions, git commit, wall time). Times cannot be reproduced bit for bit; the card says what ran
where, so a figure in docs/benchmarks.md can be traced and measured again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bertforge.errors import InputError
from bertforge.io.atomic import atomic_directory, write_json, write_text
from bertforge.runcard import RunCard, file_fingerprint


def json_lines(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="Folder for the results and the run card.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS...]: a bench/ script and its options.")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not Path(command[0]).is_file():
        raise SystemExit(f"error: give the benchmark after --, e.g. -- bench/embed.py (got {command!r})")
    card = RunCard(command=["python", *command], options={"output": str(args.output)}, seed=None,
                   inputs=[file_fingerprint(command[0])], output=str(args.output))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True)
    sys.stderr.write(done.stderr)
    sys.stdout.write(done.stdout)
    if done.returncode:
        raise SystemExit(f"error: {command[0]} exited with {done.returncode}; nothing recorded")
    try:
        with atomic_directory(args.output) as folder:
            write_text(folder / "output.txt", done.stdout)
            results = json_lines(done.stdout)
            write_json(folder / "results.json", results, indent=2)
            card.finish(folder, {"records": len(results), "seconds": round(time.perf_counter() - started, 1)})
    except InputError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()

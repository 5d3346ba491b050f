"""Run cards: every output folder says how it was made.

A card (`run_card.json`, with a readable `RUN_CARD.md` beside it) records the exact command line,
every resolved option (defaults included), the seed, each input file with its size and SHA-256,
the versions of bertforge, torch and Python, the git commit of the source tree, the CPU model and
flags, the thread count, the device, the wall time and the final figures. It is written last,
atomically, so a folder with a card is a finished output. `bertforge rerun CARD` runs the same
command again (into another output folder if asked), and on the same machine with the same
thread count the result is bit-identical (see docs/reproducing.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from bertforge.errors import InputError
from bertforge.io.atomic import write_json, write_text
from bertforge.io.settings_files import read_json_object
from bertforge.io.readers import input_error

CARD_FILE = "run_card.json"
SUMMARY_FILE = "RUN_CARD.md"
# CPU features that change which kernels run, so whether results are bit-identical across machines.
RELEVANT_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def file_fingerprint(path: str | Path) -> dict:
    """Size and SHA-256 of a file, or of every file below a directory (sorted by path)."""
    path = Path(path)
    if not path.exists():  # cards are started first: this is where a command meets a mistyped input
        raise input_error(path, "no such file or directory")
    digest, size = hashlib.sha256(), 0
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode("utf-8") + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    return {"path": str(path), "bytes": size, "sha256": digest.hexdigest()}


def cpu_description() -> dict:
    """The CPU model and the flags that decide which kernels run (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"model": model, "flags": [f for f in RELEVANT_CPU_FLAGS if f in flags]}


def git_commit() -> str | None:
    """The commit of the bertforge source tree (with `-dirty` when it has uncommitted changes), or None
    for an installed wheel."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


@dataclass
class RunCard:
    command: list[str]  # the words after `bertforge`, as typed
    options: dict  # every option as the command resolved it, defaults included
    seed: int | None
    inputs: list[dict]  # file_fingerprint of every input file or folder
    output: str
    versions: dict = field(default_factory=lambda: {
        "bertforge": _version("bertforge"), "torch": _version("torch"), "python": platform.python_version()})
    git_commit: str | None = field(default_factory=git_commit)
    cpu: dict = field(default_factory=cpu_description)
    threads: int | None = None
    device: str | None = None
    started: float = field(default_factory=time.time)
    wall_seconds: float | None = None
    figures: dict = field(default_factory=dict)
    cwd: str = field(default_factory=os.getcwd)  # where the command's relative paths start

    @classmethod
    def start(cls, options: dict, inputs, output: str | Path, seed: int | None = None) -> "RunCard":
        """A card for the command now running, fingerprinting `inputs` before any work. The command
        line is the one the `bertforge` CLI parsed (`sys.argv` outside it)."""
        import click

        context = click.get_current_context(silent=True)
        command = context.find_root().meta.get("bertforge.argv") if context else None
        return cls(command=command if command is not None else sys.argv[1:], options=_jsonable(options), seed=seed,
                   inputs=[file_fingerprint(p) for p in inputs if p is not None], output=str(output))

    def finish(self, directory: str | Path, figures: dict | None = None, threads: int | None = None,
               device: str | None = None) -> Path:
        """Write the card into the output `directory` (last, atomically) and return its path."""
        self.wall_seconds = round(time.time() - self.started, 3)
        self.figures = _jsonable(figures or {})
        self.threads, self.device = threads, device
        directory = Path(directory)
        write_json(directory / CARD_FILE, asdict(self), indent=2)
        write_text(directory / SUMMARY_FILE, self.summary())
        return directory / CARD_FILE

    def summary(self) -> str:
        lines = ["# How this folder was made", "", "```bash", "bertforge " + " ".join(_quote(w) for w in self.command),
                 "```", "", f"- seed: {self.seed}", f"- wall time: {self.wall_seconds} s",
                 f"- machine: {self.cpu['model']} (flags: {', '.join(self.cpu['flags']) or 'none of note'})"
                 + (f", {self.threads} threads" if self.threads else "") + (f", device {self.device}" if self.device else ""),
                 "- versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()),
                 f"- source: git {self.git_commit or 'unknown'}", "", "Inputs:", ""]
        lines += [f"- `{i['path']}`: {i['bytes']} bytes, sha256 {i['sha256']}" for i in self.inputs]
        if self.figures:
            lines += ["", "Figures:", ""] + [f"- {k}: {v}" for k, v in self.figures.items()]
        lines += ["", f"Rerun: `bertforge rerun {_quote(self.output)} --output NEW_FOLDER` (same machine and thread "
                      f"count: identical output)."]
        return "\n".join(lines) + "\n"


def _quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


def read_card(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILE
    card = read_json_object(path, what="a run card")
    if not isinstance(card.get("command"), list) or "output" not in card:
        raise InputError(f"{path}: not a run card (no 'command' list and 'output')")
    # hand-edited values of the wrong type: named here, not a TypeError once the rerun is under way
    for key, kind, what in (("output", str, "a folder name"), ("cwd", str, "a folder name"),
                            ("options", dict, "an object of options")):
        value = card.get(key)
        if not isinstance(value, kind) and (value is not None or key == "output"):  # older cards lack cwd, options
            raise InputError(f"{path}: the run card's {key!r} is {json.dumps(value)[:40]}, not {what}")
    inputs = card.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(i, dict) and {"path", "sha256"} <= i.keys() for i in inputs):
        raise InputError(f"{path}: not a run card ('inputs' is not a list of files with their 'path' and 'sha256')")
    return card


def check_inputs(card: dict) -> None:
    """Refuse to rerun a card whose input files are gone or changed: the run would not be reproduced."""
    for recorded in card.get("inputs") or []:
        path = Path(recorded["path"])
        if not path.exists():
            problem = "is gone"
        elif file_fingerprint(path)["sha256"] != recorded["sha256"]:
            problem = "has changed since the run (its SHA-256 is not the card's)"
        else:
            continue
        raise InputError(f"{path}: this input of the run {problem}, so a rerun would not reproduce the run")


# Defaults that changed after cards were written (finetune's batch 32 → 16 and layer-wise decay 1 → 0.8
# for classification, 2026-12-05; the classifier's pooling from all-MiniLM-L6-v2, [CLS] → mean, 2026-12-06):
# the card records the values its run took, and its rerun keeps them.
PINNED_OPTIONS = {"batch_size": "--batch-size", "layer_lr_decay": "--layer-lr-decay",
                  "classifier_pooling": "--classifier-pooling"}
PINNING_COMMANDS = ("finetune", "distill")


def _recorded(card: dict, name: str):
    options = card.get("options") or {}
    if name == "classifier_pooling" and name not in options and command_name(card) == "finetune" \
            and options.get("task") == "classification":
        return "cls"  # a card from before the option: its classifier read [CLS], whatever it started from
    return options.get(name)


def command_name(card: dict) -> str | None:
    """The bertforge command the card ran: the first word that is not an option of `bertforge` itself (-v)."""
    return next((str(word) for word in card["command"] if not str(word).startswith("-")), None)


def rerun_command(card: dict, output: str | Path | None = None) -> list[str]:
    """The card's command line, with its output folder replaced by `output` when given, and the
    PINNED_OPTIONS it left to their defaults given as the card recorded them. A `--resume` is left
    out: the rerun repeats the whole run, which ends as the resumed one did."""
    command = _without_resume([str(word) for word in card["command"]])
    if command_name(card) in PINNING_COMMANDS:
        for name, flag in PINNED_OPTIONS.items():
            typed = any(word == flag or word.startswith(flag + "=") for word in command)
            value = _recorded(card, name)
            if value is not None and not typed:
                command += [flag, str(value)]
    if output is None:
        return command
    written = card["output"]
    if not any(word == written or word.endswith("=" + written) for word in command):  # --output X or --output=X
        raise InputError(f"the run card's output {written!r} is not in its command line; rerun it by hand")
    return [str(output) if word == written else word.removesuffix(written) + str(output)
            if word.endswith("=" + written) else word for word in command]


def _without_resume(command: list[str]) -> list[str]:
    kept, words = [], iter(command)
    for word in words:
        if word == "--resume":
            next(words, None)  # its folder
        elif not word.startswith("--resume="):
            kept.append(word)
    return kept

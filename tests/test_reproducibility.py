"""Same inputs, same seed, same machine and thread count → the same output files, byte for byte,
for every command that trains or samples; and each output folder carries a run card that reruns it."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.runcard import CARD_FILE, read_card

SST2_SAMPLE = Path(__file__).resolve().parents[1] / "src" / "bertforge" / "data" / "sst2_sample"


def run(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def same_files(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> None:
    """Every file of folder `a` equals its namesake in `b`, byte for byte (the run card aside)."""
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name not in ignore)
    assert names == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name not in ignore)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def sst2_text(tmp_path: Path, rows: int) -> Path:
    lines = (SST2_SAMPLE / "train.tsv").read_text(encoding="utf-8").splitlines()[1:rows + 1]
    path = tmp_path / "sst2.txt"
    path.write_text("\n".join(line.split("\t")[0] for line in lines) + "\n", encoding="utf-8")
    return path


def test_train_vocab_twice_and_from_its_card(tmp_path):
    corpus = sst2_text(tmp_path, 1000)
    for algorithm in ("wordpiece", "byte-bpe"):
        first, second, again = (tmp_path / f"{algorithm}-{n}" for n in ("a", "b", "again"))
        for output in (first, second):
            run("train-vocab", "--algorithm", algorithm, "--vocab-size", "600", "--input", str(corpus),
                "--output", str(output), "--no-progress")
        card_names = (CARD_FILE, "RUN_CARD.md")
        same_files(first, second, ignore=card_names)
        card = read_card(first)
        assert card["options"]["vocab_size"] == 600 and card["options"]["algorithm"] == algorithm
        assert card["inputs"][0]["bytes"] == corpus.stat().st_size
        run("rerun", str(first / CARD_FILE), "--output", str(again))
        same_files(first, again, ignore=card_names)
        assert read_card(again)["command"][-3:] == ["--output", str(again), "--no-progress"]


def test_probe_twice(tmp_path):
    outputs = []
    for name in ("a.json", "b.json"):
        run("probe", "--train", str(SST2_SAMPLE / "train.tsv"), "--limit", "200", "--seed", "3", "--threads", "2",
            "--output", str(tmp_path / name))
        result = json.loads((tmp_path / name).read_text())
        result.pop("wall_seconds")
        outputs.append(result)
    assert outputs[0] == outputs[1] and 0.5 < outputs[0]["test_accuracy"] <= 1.0


def test_pretrain_prepare_twice_and_its_card(tmp_path):
    lines = (SST2_SAMPLE / "train.tsv").read_text(encoding="utf-8").splitlines()[1:401]
    documents = [" ".join(line.split("\t")[0].strip().capitalize() + "." for line in lines[i:i + 20])
                 for i in range(0, len(lines), 20)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents), encoding="utf-8")
    for name in ("a", "b"):
        run("pretrain", "prepare", str(corpus), str(tmp_path / name), "--dupe-factor", "2", "--max-seq-length", "64")
    same_files(tmp_path / "a", tmp_path / "b", ignore=(CARD_FILE, "RUN_CARD.md"))
    card = read_card(tmp_path / "a")
    assert card["seed"] == 12345 and card["figures"]["instances"] > 0
    assert [i["path"] for i in card["inputs"]][0] == str(corpus) and card["inputs"][1]["path"].endswith("vocab.txt")

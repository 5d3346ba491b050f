"""Shared fixtures: the real data beside the repo, the default checkpoint, reference tokenizers
and a small randomly initialised transformers checkpoint with pre-training heads."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
FIXTURES = REPO / "tests" / "fixtures"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require_data(*parts: str) -> Path:
    """A file under ../shared/data, or skip (with the reason) where that directory is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    return path


def gutenberg_lines(limit: int) -> list[str]:
    """The first `limit` non-empty lines of the Gutenberg pre-training corpus."""
    lines = []
    with gzip.open(require_data("corpus", "gutenberg_train.jsonl.gz"), "rt", encoding="utf-8") as f:
        for record in f:
            for line in json.loads(record)["text"].splitlines():
                if line.strip():
                    lines.append(line)
                    if len(lines) == limit:
                        return lines
    return lines


def sst2_sentences(limit: int | None = None, split: str = "train") -> list[str]:
    rows = require_data("sst2", f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [row.split("\t")[0] for row in rows[:limit]]


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from bertforge.model import default_model_path

    return default_model_path()


def _reference_tokenizer_dir(tmp_path_factory, lowercase: bool) -> Path:
    directory = tmp_path_factory.mktemp("uncased" if lowercase else "cased")
    vocab = require_data("vocab", "bert-base-uncased-vocab.txt")
    (directory / "vocab.txt").write_bytes(vocab.read_bytes())
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": lowercase, "tokenizer_class": "BertTokenizer", "model_max_length": 512}))
    return directory


@pytest.fixture(scope="session")
def uncased_dir(tmp_path_factory) -> Path:
    return _reference_tokenizer_dir(tmp_path_factory, lowercase=True)


@pytest.fixture(scope="session")
def cased_dir(tmp_path_factory) -> Path:
    return _reference_tokenizer_dir(tmp_path_factory, lowercase=False)


def reference_tokenizer(directory: Path):
    """transformers' fast tokenizer, built with from_pretrained (transformers 5 ignores
    `vocab_file=` and maps every word to [UNK]) and checked on a known case first."""
    from transformers import BertTokenizerFast

    reference = BertTokenizerFast.from_pretrained(str(directory))
    known = reference("I love Paris")["input_ids"]
    assert known == [101, 1045, 2293, 3000, 102] or reference.do_lower_case is False, known
    assert reference.convert_tokens_to_ids("paris") == 3000
    return reference


@pytest.fixture(scope="session")
def tiny_pretraining_checkpoint(tmp_path_factory, default_model_dir) -> Path:
    """A randomly initialised transformers BertForPreTraining (tiny size, bert-base-uncased
    vocabulary), saved by transformers: a checkpoint with MLM and NSP heads for pipelines."""
    import shutil

    import torch
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512)
    model = BertForPreTraining(config).eval()
    directory = tmp_path_factory.mktemp("tiny-pretraining")
    model.save_pretrained(directory)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_model_dir / name, directory / name)
    return directory

"""Helpers shared by the training tests: the bundled SST-2 sample, a tiny classifier, a batch source that gives
the same batch at every step, and the `finetune` command the fine-tuning tests run (and the settings it records)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.model import BertConfig, BertForSequenceClassification

from conftest import REPO

SST2 = REPO / "src" / "bertforge" / "data" / "sst2_sample" / "train.tsv"


def tiny_classifier(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig.from_size("tiny", vocab_size=100, id2label={0: "0", 1: "1"}))


class _SameBatch:
    """One fixed batch at every step, and a copy of the trained model's weights as each step begins."""

    def __init__(self, model):
        self.model, self.seen = model, []
        generator = torch.Generator().manual_seed(1)
        self.batch = {"input_ids": torch.randint(0, 100, (4, 8), generator=generator),
                      "labels": torch.tensor([0, 1, 1, 0])}

    def micro_batches(self, step, rank, world_size, accumulation):
        self.seen.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return [self.batch]


def _finetune_command(encoder: Path, output: Path, *extra: str) -> list[str]:
    return ["finetune", "--task", "classification", "--train", str(SST2), "--train-limit", "240", "--model",
            str(encoder), "--output", str(output), "--batch-size", "8", "--gradient-accumulation-steps", "2",
            "--epochs", "2", "--max-length", "64", "--learning-rate", "1e-3", "--checkpoint-every", "4",
            "--threads", "1", "--seed", "7", *extra]


def _finetuned_args(encoder: Path, output: Path, *extra: str) -> dict:
    """Fine-tune with `_finetune_command(..., *extra)` and return the settings its metrics.json records."""
    result = CliRunner().invoke(cli, _finetune_command(encoder, output, *extra))
    assert result.exit_code == 0, result.output
    return json.loads((output / "metrics.json").read_text())["args"]

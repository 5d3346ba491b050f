"""Helpers of the `bertforge distill` tests (tests/test_distill*.py): tiny random-weight teachers and a small
pre-trained student saved with their tokenizer, the command run in this process, its one-line errors, and its
training log. The teachers and the slices of data those tests share are fixtures in conftest.py."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.model import BertConfig, BertForPreTraining, BertForSequenceClassification
from bertforge.tasks import ClassificationTask, read_task_data
from bertforge.training.logs import TRAIN_LOG

from conftest import fixture_data

SST2_LABELS = {0: "0", 1: "1"}


def _teacher(directory: Path, head, tokenizer, layers: int = 4, hidden: int = 32, id2label=None, seed: int = 0):
    """A tiny random-weight teacher with the bert-base-uncased vocabulary, saved with its tokenizer. Its
    task head is scaled up so that its outputs differ from input to input, as a trained teacher's do
    (BERT's initialisation gives near-uniform distributions, nothing to learn from)."""
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=512, id2label=id2label)
    model = head(config).eval()
    for name in ("classifier", "qa_outputs"):
        if hasattr(model, name):
            getattr(model, name).weight.data *= 10
    if hasattr(model, "mlm"):  # the decoder is tied to the word embeddings, whose scale the input LayerNorm undoes
        model.bert.embeddings.word.weight.data *= 30
    model.save_pretrained(directory, tokenizer)
    return directory


def _fine_tuned_sst2_teacher(directory: Path, tokenizer) -> Path:
    """A tiny classifier fine-tuned for a few seconds on 96 SST-2 sentences: unlike a random network's,
    its [CLS] outputs differ from sentence to sentence."""
    from bertforge.tasks import FinetuneArgs, finetune

    task = ClassificationTask(list(SST2_LABELS.values()))
    features = task.train_features(read_task_data("classification", fixture_data("sst2", "train.tsv"))[:96],
                                   tokenizer, 128)
    config = BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                        id2label=SST2_LABELS)
    finetune(lambda: BertForSequenceClassification(config), task, features, None,
             FinetuneArgs(output_dir=str(directory), epochs=8, batch_size=16, learning_rate=2e-3, progress=False),
             tokenizer)
    return directory


def _pretrained(directory: Path, tokenizer, layers: int, hidden: int) -> Path:
    """A small BertForPreTraining of BERT's initialisation, saved with its tokenizer (a stand-in for bertforge-mini)."""
    torch.manual_seed(3)
    BertForPreTraining(BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                                  intermediate_size=2 * hidden)).save_pretrained(directory, tokenizer)
    return directory


def _distill(*arguments) -> dict:
    result = CliRunner().invoke(cli, ["distill", "--threads", "1", "--batch-size", "16", *map(str, arguments)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


PROGRESS_LINE = re.compile(r"[\w ]+: +\d+%\|")


def _one_line_error(*arguments) -> str:
    result = CliRunner().invoke(cli, ["distill", "--threads", "1", *map(str, arguments)])
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    # The teacher's pass shows progress (plain lines here, as in a log file); the error is the only other line.
    lines = [line for line in result.output.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _train_log(output: Path, column: str) -> list[float]:
    with open(output / TRAIN_LOG, encoding="utf-8") as f:
        return [float(row[column]) for row in csv.DictReader(f)]


def _falls(output: Path, column: str = "loss") -> tuple[float, float]:
    """The mean of a training-log column over the first and the last quarter of the run."""
    values = _train_log(output, column)
    quarter = max(1, len(values) // 4)
    return float(np.mean(values[:quarter])), float(np.mean(values[-quarter:]))

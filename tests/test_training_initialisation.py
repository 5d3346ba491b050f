"""Where fine-tuning starts the head and the top layers: --linear-probe-first fits the classifier as a logistic
regression before the first step (LP-FT), --reinit-layers draws the top encoder layers afresh and keeps the
rest."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.model import BertForSequenceClassification, default_model_path
from bertforge.tasks.batching import predict_logits
from bertforge.tasks.trainer import reinitialise_top_layers

from conftest import fixture_data
from training_helpers import SST2, _finetune_command, _finetuned_args


pytestmark = pytest.mark.usefixtures("one_thread")


def test_linear_probe_first_starts_the_classifier_from_a_logistic_regression(tiny_encoder, tmp_path):
    """LP-FT: before the first step the head is a fitted logistic regression on the pooled outputs (it scores the
    training rows above chance), where a random head scores about chance; then every weight trains."""
    from bertforge.tasks import ClassificationTask, read_task_data
    from bertforge.tasks.trainer import _with_probed_head
    from bertforge.tokenization import BertTokenizer

    data = read_task_data("classification", SST2)[:240]
    task = ClassificationTask.from_examples(data)
    tokenizer = BertTokenizer.from_pretrained(default_model_path())
    features = task.train_features(data, tokenizer, 64)
    labels = torch.tensor([f["labels"] for f in features])

    def build():  # the bundled MiniLM: a random encoder's pooled outputs say little about the sentence
        torch.manual_seed(0)
        return BertForSequenceClassification.from_pretrained(default_model_path(),
                                                             id2label=dict(enumerate(task.labels)))

    def accuracy(model):
        logits = torch.tensor(np.stack(predict_logits(model, features)))
        return float((logits.argmax(-1) == labels).float().mean())

    majority = float(max(labels.float().mean(), 1 - labels.float().mean()))
    assert accuracy(build()) < majority + 0.05
    assert accuracy(_with_probed_head(build, features, 64)) > majority + 0.1
    output = tmp_path / "lp-ft"
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, output, "--max-steps", "2",
                                                       "--linear-probe-first"))
    assert result.exit_code == 0, result.output
    assert json.loads((output / "metrics.json").read_text())["args"]["linear_probe_first"] is True
    conll = fixture_data("conll2003", "train.txt")
    result = CliRunner().invoke(cli, ["finetune", "--task", "ner", "--train", str(conll), "--train-limit", "8",
                                      "--model", str(tiny_encoder), "--output", str(tmp_path / "ner"),
                                      "--linear-probe-first"])
    assert result.exit_code == 2 and result.output.startswith("error: --linear-probe-first fits a sentence "
                                                              "classifier's head"), result.output


def test_reinit_layers_draws_the_top_layers_afresh_and_keeps_the_rest(tiny_encoder, tmp_path):
    model = BertForSequenceClassification.from_pretrained(tiny_encoder, num_labels=2)
    with torch.no_grad():  # away from the initialisation everywhere, as a pre-trained model's weights are
        for parameter in model.parameters():
            parameter.add_(0.5)
    start = {name: weight.clone() for name, weight in model.bert.state_dict().items()}
    reinitialise_top_layers(model, 1)
    weights = model.bert.state_dict()
    top = [name for name in start if name.startswith("encoder.layers.1.")]
    kept = [name for name in start if name not in top]
    assert top and all(torch.equal(weights[name], start[name]) for name in kept)
    assert not any(torch.equal(weights[name], start[name]) for name in top if name.endswith("dense.weight"))
    for name in top:  # BERT's initialisation: normal(0, 0.02) matrices, zero biases, unit LayerNorm
        if "norm" in name and name.endswith("weight"):
            assert torch.equal(weights[name], torch.ones_like(weights[name]))
        elif name.endswith("bias"):
            assert torch.equal(weights[name], torch.zeros_like(weights[name]))
        else:
            assert abs(weights[name].std().item() - 0.02) < 0.002, name

    args = _finetuned_args(tiny_encoder, tmp_path / "reinit", "--max-steps", "2", "--reinit-layers", "2")
    assert args["reinit_layers"] == 2
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "deep", "--reinit-layers", "3"))
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == "error: --reinit-layers 3: the model has only 2 encoder layers"
    assert not (tmp_path / "deep" / "checkpoint").exists()

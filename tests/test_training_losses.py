"""Fine-tuning's loss options written out for each task head: label smoothing spreads the gold label's weight
over the classes, R-Drop adds the disagreement of two dropout passes; both reach the run from `finetune` and
are refused out of range or for distillation."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.distillation.task import DistillArgs
from bertforge.errors import ConfigError
from bertforge.model import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
                             BertForTokenClassification)
from bertforge.tasks.trainer import FinetuneArgs, TaskObjective

from training_helpers import _finetune_command, _finetuned_args


pytestmark = pytest.mark.usefixtures("one_thread")


def _batches_of_each_head(**config) -> tuple[BertConfig, torch.Tensor, dict]:
    """A one-layer config of three classes (`config` overrides its fields), 4 rows of 6 token ids (of its 50-word
    vocabulary) and a batch of them with targets for each task head: NER with two positions labelled -100, answer
    spans."""
    config = BertConfig(**{"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "intermediate_size": 32, "id2label": {0: "a", 1: "b", 2: "c"}, **config})
    torch.manual_seed(0)
    ids = torch.randint(1, 50, (4, 6))
    return config, ids, {BertForSequenceClassification: {"input_ids": ids, "labels": torch.tensor([0, 2, 1, 2])},
                 BertForTokenClassification: {"input_ids": ids,
                                              "labels": torch.tensor([[0, 1, 2, -100, -100, 1]] * 4)},
                 BertForQuestionAnswering: {"input_ids": ids, "start_positions": torch.tensor([1, 2, 3, 4]),
                                            "end_positions": torch.tensor([2, 2, 4, 5])}}


def test_label_smoothing_factor_spreads_the_labels_weight_over_the_classes(tiny_encoder, tmp_path):
    """The smoothed cross-entropy, written out: (1 − ε) of the gold class's −log p and ε of the mean −log p over
    the classes; NER's positions labelled -100 carry none, and question answering (no `labels`) keeps its loss."""
    config, ids, batches = _batches_of_each_head()
    for head, batch in batches.items():
        model = head(config).eval()
        loss, _ = TaskObjective(0.2).loss(model, batch, TaskObjective().counts(batch))  # the whole global batch
        if "labels" not in batch:
            assert torch.equal(loss, model(**batch).loss)
            continue
        log_p = torch.log_softmax(model(input_ids=ids).logits, -1).flatten(0, -2)
        labels = batch["labels"].flatten()
        kept = labels != -100
        gold = -log_p[kept].gather(1, labels[kept, None])[:, 0]
        assert torch.allclose(loss, (0.8 * gold - 0.2 * log_p[kept].mean(1)).mean(), atol=1e-6)
        assert not torch.allclose(loss, model(**batch).loss)
    args = _finetuned_args(tiny_encoder, tmp_path / "smoothed", "--max-steps", "1", "--label-smoothing-factor", "0.1")
    assert args["label_smoothing_factor"] == 0.1
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "bad", "--label-smoothing-factor", "1"))
    assert result.exit_code == 2 and "Invalid value for '--label-smoothing-factor': 1.0 is not in the range 0<=x<1" \
        in result.output
    with pytest.raises(ConfigError, match=r"label_smoothing_factor must be in \[0, 1\), got 1.5"):
        FinetuneArgs(output_dir="x", label_smoothing_factor=1.5)
    with pytest.raises(ConfigError, match="label_smoothing_factor is for fine-tuning on labels"):
        DistillArgs(output_dir="x", label_smoothing_factor=0.1)


def test_rdrop_adds_the_two_dropout_passes_disagreement_to_their_cross_entropy(tiny_encoder, tmp_path):
    """R-Drop written out: the batch twice under the same random draws, the mean cross-entropy of both passes +
    alpha/2 × the symmetric KL per labelled position (NER's -100 positions carry none); without dropout the two
    passes agree and only the cross-entropy is left; question answering (no `labels`) keeps its loss."""
    config, ids, batches = _batches_of_each_head(hidden_dropout_prob=0.3, initializer_range=0.5)
    for head, batch in batches.items():
        model = head(config).train()
        torch.manual_seed(1)
        loss, _ = TaskObjective(rdrop_alpha=0.6).loss(model, batch, TaskObjective().counts(batch))
        torch.manual_seed(1)
        if "labels" not in batch:
            assert torch.equal(loss, model(**batch).loss)
            continue
        log_p = torch.log_softmax(model(input_ids=torch.cat([ids, ids])).logits, -1)
        labels = batch["labels"].flatten()
        kept = labels != -100
        first, second = (half.flatten(0, -2)[kept] for half in log_p.chunk(2))
        cross_entropy = -(first.gather(1, labels[kept, None]) + second.gather(1, labels[kept, None])).mean() / 2
        kl = ((first.exp() * (first - second)).sum(1) + (second.exp() * (second - first)).sum(1)).mean() / 2
        assert kl > 0.01  # the two passes' dropout masks differ (weights drawn wide: logits far from 0)
        assert torch.allclose(loss, cross_entropy + 0.3 * kl, atol=1e-6)
        model.eval()
        assert torch.allclose(TaskObjective(rdrop_alpha=0.6).loss(model, batch, TaskObjective().counts(batch))[0], model(**batch).loss,
                              atol=1e-6)
    args = _finetuned_args(tiny_encoder, tmp_path / "rdrop", "--max-steps", "1", "--rdrop-alpha", "1")
    assert args["rdrop_alpha"] == 1.0
    result = CliRunner().invoke(cli, _finetune_command(tiny_encoder, tmp_path / "bad", "--rdrop-alpha", "-1"))
    assert result.exit_code == 2 and "Invalid value for '--rdrop-alpha': -1.0 is not in the range x>=0" in result.output
    with pytest.raises(ConfigError, match="rdrop_alpha must be 0 or more, got -0.5"):
        FinetuneArgs(output_dir="x", rdrop_alpha=-0.5)
    with pytest.raises(ConfigError, match="rdrop_alpha is for fine-tuning on labels"):
        DistillArgs(output_dir="x", rdrop_alpha=1)

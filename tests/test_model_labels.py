"""Labels given to the task models' forward: a wrong shape, type or class id is an InputError naming the argument,
what was given and what was expected; valid labels give the losses they gave (as transformers computes them)."""

from __future__ import annotations

import pytest
import torch

from bertforge.errors import InputError
from bertforge.model import (
    BertConfig,
    BertForMaskedLM,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)

IDS = torch.tensor([[2, 7, 9, 11, 3], [2, 5, 3, 0, 0]])  # a batch of 2 sequences of 5 tokens


def tiny(cls, **keys):
    torch.manual_seed(0)
    return cls(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=16, **keys)).eval()


@pytest.mark.parametrize("cls, keys, labels, message", [
    (BertForSequenceClassification, {"num_labels": 3}, {"labels": torch.tensor([5, 0])},
     r"labels holds 5, outside 0..2 \(or -100 for no loss\)"),
    (BertForSequenceClassification, {"num_labels": 3}, {"labels": torch.tensor([-3, 0])},
     r"labels holds -3, outside 0..2"),
    (BertForSequenceClassification, {"num_labels": 3}, {"labels": torch.tensor([0, 1, 2])},
     r"labels must be a tensor shaped \(2,\), got \(3,\)"),
    (BertForSequenceClassification, {"num_labels": 3}, {"labels": [0, 1]},
     r"labels must be a tensor shaped \(2,\), got list"),
    (BertForSequenceClassification, {"num_labels": 3}, {"labels": torch.tensor([0, 1], dtype=torch.int32)},
     r"labels must hold integer ids \(torch.long\), got torch.int32"),
    (BertForSequenceClassification, {"num_labels": 3, "problem_type": "single_label_classification"},
     {"labels": torch.tensor([0.0, 1.0])}, r"labels must hold integer ids \(torch.long\), got torch.float32"),
    (BertForSequenceClassification, {"num_labels": 3}, {"labels": torch.tensor([0.0, 1.0])},
     r"labels \(floats, so one 0/1 per label: multi-label\) must be a tensor shaped \(2, 3\), got \(2,\)"),
    (BertForSequenceClassification, {"num_labels": 3, "problem_type": "regression"}, {"labels": torch.ones(2, 1)},
     r"labels must be a tensor shaped \(2, 3\), got \(2, 1\)"),  # torch broadcast it, with a warning
    (BertForSequenceClassification, {"num_labels": 1}, {"labels": torch.ones(3)},
     r"labels must be a tensor shaped \(2,\), got \(3,\)"),
    (BertForTokenClassification, {"num_labels": 3}, {"labels": torch.tensor([[0] * 5, [0, 0, 0, 0, 3]])},
     r"labels holds 3, outside 0..2"),
    (BertForTokenClassification, {"num_labels": 3}, {"labels": torch.zeros(2, 4, dtype=torch.long)},
     r"labels must be a tensor shaped \(2, 5\), got \(2, 4\)"),
    (BertForQuestionAnswering, {}, {"start_positions": torch.tensor([1, 2, 3]), "end_positions": torch.tensor([1, 2])},
     r"start_positions must be a tensor shaped \(2,\), got \(3,\)"),
    (BertForQuestionAnswering, {}, {"start_positions": torch.tensor([1, 2]), "end_positions": torch.tensor([1.0, 2.0])},
     r"end_positions must hold integer ids \(torch.long\), got torch.float32"),
    (BertForMaskedLM, {}, {"labels": torch.full((2, 5), 50)}, r"labels holds 50, outside 0..49"),
    (BertForMaskedLM, {}, {"labels": torch.full((2, 4), 1)}, r"labels must be a tensor shaped \(2, 5\), got \(2, 4\)"),
    (BertForPreTraining, {}, {"labels": torch.full((2, 5), -100), "next_sentence_label": torch.tensor([2, 0])},
     r"next_sentence_label holds 2, outside 0..1"),
    (BertForPreTraining, {}, {"next_sentence_label": torch.tensor([0, 0, 1])},
     r"next_sentence_label must be a tensor shaped \(2,\), got \(3,\)"),
    (BertForNextSentencePrediction, {}, {"labels": torch.tensor([0, 5])}, r"labels holds 5, outside 0..1"),
])
def test_bad_labels_are_named_with_what_was_given_and_expected(cls, keys, labels, message):
    with pytest.raises(InputError, match=f"^{message}"):
        tiny(cls, **keys)(IDS, **labels)


def test_valid_labels_in_the_layouts_transformers_reads_still_give_a_loss():
    """Class ids read flattened (transformers' view(-1)): (batch, 1) is taken; -100 carries no loss; QA positions
    outside the sequence are clamped and ignored, as transformers does; regression takes floats (or integers)."""
    classifier = tiny(BertForSequenceClassification, num_labels=3)
    assert torch.equal(classifier(IDS, labels=torch.tensor([2, 0])).loss,
                       classifier(IDS, labels=torch.tensor([[2], [0]])).loss)
    assert torch.equal(classifier(IDS, labels=torch.tensor([2, -100])).loss,
                       torch.nn.functional.cross_entropy(classifier(IDS).logits[:1], torch.tensor([2])))
    qa = tiny(BertForQuestionAnswering)
    assert torch.equal(qa(IDS, start_positions=torch.tensor([-4, 99]), end_positions=torch.tensor([[0], [5]])).loss,
                       qa(IDS, start_positions=torch.tensor([0, 5]), end_positions=torch.tensor([0, 5])).loss)
    regression = tiny(BertForSequenceClassification, num_labels=1)
    assert torch.equal(regression(IDS, labels=torch.tensor([1, 2])).loss,
                       regression(IDS, labels=torch.tensor([[1.0], [2.0]])).loss)

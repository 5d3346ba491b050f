"""The text-classification pipeline (unpadded encoder, [CLS] rows only through pooler and head)
against transformers' BertForSequenceClassification on the padded batch, on real SST-2 sentences."""

from __future__ import annotations

import pytest
import torch
from conftest import reference_tokenizer, sst2_sentences

from bertforge.pipelines import pipeline
from bertforge.pipelines.text_classification import default_classification_model_path

# Short and long texts mixed, so that every batch of 8 holds several length groups.
TEXTS = sst2_sentences(30, split="validation") + ["dull", "a gripping , beautifully acted film", "no .", "x " * 50]


@pytest.fixture(scope="module")
def model_dir():
    return default_classification_model_path()


def reference_probabilities(model_dir, texts, pairs=None) -> torch.Tensor:
    """(texts, labels) softmax of transformers' model on the padded batch: the independent computation."""
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    batch = reference_tokenizer(model_dir)(texts, pairs, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.softmax(dim=-1)


def as_matrix(results, labels) -> torch.Tensor:
    return torch.tensor([[{r["label"]: r["score"] for r in row}[label] for label in labels] for row in results])


def test_scores_equal_transformers_on_mixed_lengths(model_dir):
    classify = pipeline("text-classification", model=model_dir, batch_size=8)
    lengths = sorted(len(e.ids) for e in classify.encode(TEXTS))
    assert len(set(lengths)) > len(range(0, len(TEXTS), 8)) + 4  # many length groups per batch
    results = classify(TEXTS)
    assert all(row[0]["score"] >= row[-1]["score"] for row in results)  # best first
    torch.testing.assert_close(as_matrix(results, classify.labels), reference_probabilities(model_dir, TEXTS),
                               atol=1e-5, rtol=0)
    assert classify(TEXTS[5], top_k=1) == [results[5][0]]  # one text alone: the same answer


def test_pairs_equal_transformers(model_dir):
    firsts, seconds = TEXTS[:6], TEXTS[6:12]
    classify = pipeline("text-classification", model=model_dir, batch_size=4)
    results = classify(firsts, text_pair=seconds)
    torch.testing.assert_close(as_matrix(results, classify.labels),
                               reference_probabilities(model_dir, firsts, seconds), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_reduced_precision_stays_close(model_dir, dtype):
    exact = pipeline("text-classification", model=model_dir)
    reduced = pipeline("text-classification", model=model_dir, dtype=dtype)
    difference = (as_matrix(reduced(TEXTS), exact.labels) - as_matrix(exact(TEXTS), exact.labels)).abs()
    assert difference.mean() < 0.03, difference.mean()

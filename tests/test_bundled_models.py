"""The bundled SST-2 classifier (src/bertforge/pretrained/sst2-distilled): what it scores on rows it
never trained on, that transformers reads it the same way, and that the pipeline and `serve` pick
it when given no model."""

from __future__ import annotations

import pytest
import torch
from conftest import fixture_data

from bertforge.paths import bundled_model_path
from bertforge.pipelines import pipeline

GOLD_NAMES = {"0": "negative", "1": "positive"}


@pytest.fixture(scope="module")
def classify():
    return pipeline("text-classification")


def sst2_validation_rows() -> list[tuple[str, str]]:
    """The fixture's 200 rows of the last 2,000 SST-2 train rows, which the teacher and the student
    were never trained on (two of its phrases also occur, repeated, in the training rows)."""
    rows = fixture_data("sst2", "validation.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [(text.strip(), GOLD_NAMES[label.strip()]) for text, label in (row.split("\t") for row in rows)]


def test_the_default_classifier_is_the_bundled_student_and_scores_on_held_out_rows(classify):
    assert classify.model_path == bundled_model_path("sst2-distilled", "unused")
    assert classify.config.num_hidden_layers == 3
    rows = sst2_validation_rows()
    predicted = [result[0]["label"] for result in classify([text for text, _ in rows])]
    accuracy = sum(p == gold for p, (_, gold) in zip(predicted, rows)) / len(rows)
    assert accuracy >= 0.85, accuracy  # measured: 93.5% (187 of 200)


def test_transformers_reads_the_bundled_classifier_with_the_same_scores(classify):
    """The float16 file loads in transformers' BertForSequenceClassification (cast to float32, as
    bertforge's loader does) and gives the pipeline's probabilities."""
    from transformers import AutoModelForSequenceClassification, BertTokenizerFast

    reference = AutoModelForSequenceClassification.from_pretrained(str(classify.model_path),
                                                                   dtype=torch.float32).eval()
    tokenizer = BertTokenizerFast.from_pretrained(str(classify.model_path))
    texts = [text for text, _ in sst2_validation_rows()[:16]]
    with torch.inference_mode():
        probabilities = reference(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    names = [reference.config.id2label[i] for i in range(reference.config.num_labels)]
    assert names == ["negative", "positive"]
    for row, result in zip(probabilities, classify(texts)):
        ours = {item["label"]: item["score"] for item in result}
        torch.testing.assert_close(torch.tensor([ours[name] for name in names]), row, atol=1e-4, rtol=0)


def test_serve_loads_the_bundled_classifier_by_default():
    from bertforge.cli.serve import bundled_models
    from bertforge.pipelines.base import checkpoint_tasks

    served = dict(bundled_models())
    assert served["sst2-distilled"] == bundled_model_path("sst2-distilled", "unused")
    assert "text-classification" in checkpoint_tasks(served["sst2-distilled"])
    # one model per task that needs a head: no other bundled model classifies
    assert [name for name, path in served.items() if "text-classification" in checkpoint_tasks(path)] == \
        ["sst2-distilled"]

"""The text-classification pipeline (unpadded encoder, [CLS] rows only through pooler and head)
against transformers' BertForSequenceClassification on the padded batch, on real SST-2 sentences."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np

import pytest
import torch
from safetensors.torch import load_file
from conftest import reference_tokenizer, sst2_sentences

from bertforge.errors import InputError
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
    results = classify(TEXTS, top_k=None)
    assert all(row[0]["score"] >= row[-1]["score"] for row in results)  # best first
    torch.testing.assert_close(as_matrix(results, classify.labels), reference_probabilities(model_dir, TEXTS),
                               atol=1e-5, rtol=0)
    assert classify(TEXTS[5], top_k=1) == [results[5][0]]  # one text alone: the same answer


def without_scores(results):
    return json.loads(json.dumps(results), parse_float=lambda _: 0.0)


def test_results_are_shaped_as_transformers_shapes_them(model_dir):
    """Default: each text's best label, one dict per text; top_k given: a list per text (the list itself
    for one text). A user moving from transformers' pipeline indexes the results the same way."""
    from transformers import pipeline as hf_pipeline
    ours = pipeline("text-classification", model=model_dir)
    theirs = hf_pipeline("text-classification", model=str(model_dir))
    calls = [((TEXTS[0],), {}), ((TEXTS[:3],), {}), ((TEXTS[0],), {"top_k": None}), ((TEXTS[:3],), {"top_k": None}),
             ((TEXTS[0],), {"top_k": 1}), ((TEXTS[:3],), {"top_k": 1})]
    for args, kwargs in calls:
        mine, reference = ours(*args, **kwargs), theirs(*args, **kwargs)
        # the same nesting and labels; the scores are compared within 1e-5 by the other tests
        assert without_scores(mine) == without_scores(reference), (args, kwargs)
    with pytest.raises(InputError, match="top_k must be a positive integer or None, got True"):
        ours(TEXTS[0], top_k=True)


def test_pairs_equal_transformers(model_dir):
    firsts, seconds = TEXTS[:6], TEXTS[6:12]
    classify = pipeline("text-classification", model=model_dir, batch_size=4)
    results = classify(firsts, text_pair=seconds, top_k=None)
    torch.testing.assert_close(as_matrix(results, classify.labels),
                               reference_probabilities(model_dir, firsts, seconds), atol=1e-5, rtol=0)


def test_pair_dicts_and_function_to_apply_as_transformers_has_them(model_dir):
    """transformers' pair form ({"text", "text_pair"}, alone or in a list) and its function_to_apply:
    the same nesting, labels and scores."""
    from transformers import pipeline as hf_pipeline
    ours = pipeline("text-classification", model=model_dir)
    theirs = hf_pipeline("text-classification", model=str(model_dir), dtype=torch.float32)
    pairs = [{"text": a, "text_pair": b} for a, b in zip(TEXTS[:3], TEXTS[3:6])]
    calls = [((pairs[0],), {}), ((pairs,), {}), ((pairs,), {"top_k": None}), (({"text": TEXTS[0]},), {}),
             ((TEXTS[:3],), {"function_to_apply": "none", "top_k": None}),
             ((TEXTS[0],), {"function_to_apply": "sigmoid"})]
    for args, kwargs in calls:
        mine, reference = ours(*args, **kwargs), theirs(*args, **kwargs)
        assert without_scores(mine) == without_scores(reference), (args, kwargs)
        scores = lambda results: re.findall(r"'score': (-?[0-9.e-]+)", str(results))  # noqa: E731
        np.testing.assert_allclose(np.array(scores(mine), float), np.array(scores(reference), float), atol=1e-5)
    with pytest.raises(InputError, match=r"inputs\[0\]: a pair is \{'text': ..., 'text_pair': ...\}, got the keys "
                                         r"\['sentence'\]"):
        ours([{"sentence": "a"}])
    with pytest.raises(InputError, match="function_to_apply must be one of softmax, sigmoid, none, got 'relu'"):
        ours(TEXTS[0], function_to_apply="relu")
    with pytest.raises(InputError, match=r"give text_pair= or \{'text': ..., 'text_pair': ...\} inputs, not both"):
        ours(pairs[0], text_pair="another")
    with pytest.raises(InputError, match="some inputs have a text_pair and some have none"):
        ours([pairs[0], {"text": TEXTS[0]}])


@pytest.fixture(scope="module")
def mean_pooled_model_dir(model_dir, tmp_path_factory):
    """The bundled classifier with classifier_pooling "mean": its head then reads each text's mean vector."""
    directory = tmp_path_factory.mktemp("mean-pooled")
    shutil.copytree(model_dir, directory, dirs_exist_ok=True)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "classifier_pooling": "mean"}))
    return directory


def test_mean_pooled_scores_equal_transformers_encoder_mean_and_the_head(model_dir, mean_pooled_model_dir):
    """transformers' BERT has no mean-pooled classifier: the reference is its BertModel's last layer,
    averaged over the real tokens, through the checkpoint's classifier weights."""
    from transformers import BertModel

    encoder = BertModel.from_pretrained(str(mean_pooled_model_dir), dtype=torch.float32).eval()
    batch = reference_tokenizer(mean_pooled_model_dir)(TEXTS, padding=True, return_tensors="pt")
    weights = {k: v.float() for k, v in load_file(str(mean_pooled_model_dir / "model.safetensors")).items()}
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        logits = ((hidden * mask).sum(1) / mask.sum(1)) @ weights["classifier.weight"].T + weights["classifier.bias"]
    classify = pipeline("text-classification", model=mean_pooled_model_dir, batch_size=8)
    mean_pooled = as_matrix(classify(TEXTS, top_k=None), classify.labels)
    torch.testing.assert_close(mean_pooled, logits.softmax(dim=-1), atol=1e-5, rtol=0)
    on_cls = pipeline("text-classification", model=model_dir, batch_size=8)
    assert (as_matrix(on_cls(TEXTS, top_k=None), on_cls.labels) - mean_pooled).abs().max() > 0.01  # the setting is read


def test_mean_pooled_training_forward_equals_the_pipeline(mean_pooled_model_dir):
    """The padded forward that fine-tuning runs pools the same way as the unpadded pipeline."""
    from bertforge.model import BertForSequenceClassification
    from bertforge.tasks.batching import collate

    classify = pipeline("text-classification", model=mean_pooled_model_dir, batch_size=8)
    model = BertForSequenceClassification.from_pretrained(mean_pooled_model_dir).eval()
    features = [{"input_ids": e.ids, "token_type_ids": e.type_ids} for e in classify.encode(TEXTS)]
    with torch.no_grad():
        logits = model(**collate(features, 0)).logits
    torch.testing.assert_close(as_matrix(classify(TEXTS, top_k=None), classify.labels), logits.softmax(dim=-1),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_reduced_precision_stays_close(model_dir, mean_pooled_model_dir, dtype, pooling):
    directory = mean_pooled_model_dir if pooling == "mean" else model_dir
    exact = pipeline("text-classification", model=directory)
    reduced = pipeline("text-classification", model=directory, dtype=dtype)
    difference = (as_matrix(reduced(TEXTS, top_k=None), exact.labels)
                  - as_matrix(exact(TEXTS, top_k=None), exact.labels)).abs()
    assert difference.mean() < 0.03, difference.mean()

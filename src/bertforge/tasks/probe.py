"""The feature-based approach: a frozen encoder turns sentences into [CLS] or mean-pooled vectors
and a scikit-learn logistic regression learns the labels from them."""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from bertforge.errors import InputError

POOLINGS = ("cls", "mean")


def sentence_features(embedder, texts: list[str], pooling: str = "cls") -> np.ndarray:
    """(len(texts), hidden) float32 vectors of the last layer, from the sentence-embedding pipeline
    `embedder` (the frozen encoder, unnormalised: the regression sees the layer's own scale)."""
    if pooling not in POOLINGS:
        raise InputError(f"pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    return embedder(texts, pooling=pooling, normalize=False)


def check_classes(labels, source) -> None:
    """A logistic regression needs rows of at least two labels (scikit-learn would fail later)."""
    counts = Counter(labels)
    if not counts:
        raise InputError(f"{source}: no labelled rows to train on")
    if len(counts) < 2:
        (label, count), = counts.items()
        raise InputError(f"{source}: all {count} training rows have the label {label!r}; a probe needs at least "
                         f"two classes")


def fit_probe(train_x: np.ndarray, train_y, seed: int = 0, max_iter: int = 2000) -> LogisticRegression:
    """The logistic regression of the training vectors' labels: the probe, and fine-tuning's LP-FT head."""
    return LogisticRegression(max_iter=max_iter, random_state=seed).fit(train_x, train_y)


def run_probe(train_x: np.ndarray, train_y, test_x: np.ndarray, test_y, seed: int = 0, max_iter: int = 2000) -> dict:
    """Fit a logistic regression on the training vectors; accuracy on both splits."""
    if len(train_y) == 0 or len(test_y) == 0:
        raise InputError(f"a probe needs training and test rows, got {len(train_y)} and {len(test_y)}")
    check_classes(train_y, "the training labels")
    classifier = fit_probe(train_x, train_y, seed, max_iter)
    return {"train_accuracy": float(accuracy_score(train_y, classifier.predict(train_x))),
            "test_accuracy": float(accuracy_score(test_y, classifier.predict(test_x))),
            "train_examples": int(len(train_y)), "test_examples": int(len(test_y))}

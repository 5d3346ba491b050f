"""The feature-based approach: a frozen encoder turns sentences into [CLS] or mean-pooled vectors
and a scikit-learn logistic regression learns the labels from them."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from bertforge.errors import ConfigError, InputError
from bertforge.model.heads import mean_pool
from bertforge.progress import progress_bar
from bertforge.tasks.batching import collate

POOLINGS = ("cls", "mean")


@torch.no_grad()
def sentence_features(encoder, tokenizer, texts: list[str], pooling: str = "cls", batch_size: int = 64,
                      max_length: int = 128, progress: bool = False) -> np.ndarray:
    """(len(texts), hidden) float32 vectors from the last layer of a frozen BertModel."""
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    encoder.eval()
    bert = encoder.base_model
    device = next(bert.parameters()).device
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    features = [{"input_ids": ids, "token_type_ids": types}
                for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"])]
    order = sorted(range(len(texts)), key=lambda i: len(features[i]["input_ids"]))  # little padding per batch
    out = np.zeros((len(texts), bert.config.hidden_size), dtype=np.float32)
    for start in progress_bar(range(0, len(order), batch_size), desc="features", disable=not progress):
        index = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate([features[i] for i in index], tokenizer.pad_token_id).items()}
        hidden = bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state.float()
        vectors = hidden[:, 0] if pooling == "cls" else mean_pool(hidden, batch["attention_mask"])
        out[index] = vectors.cpu().numpy()
    return out


def fit_probe(train_x: np.ndarray, train_y, seed: int = 0, max_iter: int = 2000) -> LogisticRegression:
    """The logistic regression of the training vectors' labels: the probe, and fine-tuning's LP-FT head."""
    return LogisticRegression(max_iter=max_iter, random_state=seed).fit(train_x, train_y)


def run_probe(train_x: np.ndarray, train_y, test_x: np.ndarray, test_y, seed: int = 0, max_iter: int = 2000) -> dict:
    """Fit a logistic regression on the training vectors; accuracy on both splits."""
    if len(train_y) == 0 or len(test_y) == 0:
        raise InputError(f"a probe needs training and test rows, got {len(train_y)} and {len(test_y)}")
    if len(set(train_y)) < 2:
        raise InputError(f"a probe needs at least two classes in the training labels, got only {set(train_y)}")
    classifier = fit_probe(train_x, train_y, seed, max_iter)
    return {"train_accuracy": float(accuracy_score(train_y, classifier.predict(train_x))),
            "test_accuracy": float(accuracy_score(test_y, classifier.predict(test_x))),
            "train_examples": int(len(train_y)), "test_examples": int(len(test_y))}

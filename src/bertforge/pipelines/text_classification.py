"""`text-classification`: scores per label from a fine-tuned BertForSequenceClassification."""

from __future__ import annotations

import numpy as np
import torch

from bertforge.errors import ConfigError, InputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_finetuned(model_class, model, device: str, dtype: str):
    """(model in eval mode on `device` in `dtype`, its tokenizer) from a fine-tuned checkpoint
    directory. There is no silent default: an encoder with an untrained head answers at random."""
    from bertforge.tasks.trainer import resolve_device
    from bertforge.tokenization import BertTokenizer

    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if model is None:
        raise ConfigError(f"this pipeline needs a fine-tuned {model_class.__name__}: pass model=DIR "
                          "(made by `bertforge finetune`, or a transformers checkpoint)")
    loaded = model_class.from_pretrained(model).to(resolve_device(device, 0), DTYPES[dtype]).eval()
    return loaded, BertTokenizer.from_pretrained(model)


def as_list(inputs, name: str) -> tuple[list, bool]:
    """(inputs as a list, whether a single item was given)."""
    if isinstance(inputs, str):
        return [inputs], True
    if isinstance(inputs, (list, tuple)) and all(isinstance(x, str) for x in inputs):
        return list(inputs), False
    raise InputError(f"{name} must be a string or a list of strings, got {type(inputs).__name__}")


class TextClassificationPipeline:
    """`pipe("a gripping film")` → [{"label": "1", "score": 0.97}, {"label": "0", "score": 0.03}]
    (every label, best first); a list of texts gives a list of such lists; `text_pair` for pair tasks."""

    def __init__(self, model=None, device="cpu", dtype="float32", batch_size=32, max_length=None):
        from bertforge.model import BertForSequenceClassification

        self.model, self.tokenizer = load_finetuned(BertForSequenceClassification, model, device, dtype)
        self.labels = [self.model.config.id2label[i] for i in sorted(self.model.config.id2label)] \
            if self.model.config.id2label else [f"LABEL_{i}" for i in range(self.model.config.num_labels)]
        self.batch_size = batch_size
        self.max_length = max_length or self.model.config.max_position_embeddings

    def __call__(self, inputs, text_pair=None, top_k: int | None = None):
        from bertforge.tasks.batching import predict_logits

        texts, single = as_list(inputs, "inputs")
        pairs = None
        if text_pair is not None:
            pairs, _ = as_list(text_pair, "text_pair")
            if len(pairs) != len(texts):
                raise InputError(f"text_pair has {len(pairs)} items, inputs {len(texts)}")
        encoded = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        features = [{"input_ids": ids, "token_type_ids": types}
                    for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"])]
        logits = np.stack(predict_logits(self.model, features, self.batch_size))
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        results = []
        for row in probabilities:
            ranked = sorted(zip(self.labels, row.tolist()), key=lambda item: -item[1])[:top_k]
            results.append([{"label": label, "score": score} for label, score in ranked])
        return results[0] if single else results

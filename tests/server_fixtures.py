"""The served models and the server that tests/test_server.py and tests/test_server_errors.py share, a
plugin both name in `pytest_plugins` (pytest finds fixtures only in conftest.py, the test module and
plugins). The fixtures are module-scoped: each of the two files builds its own models and server."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bertforge.model import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
                             BertForTokenClassification)
from bertforge.server import ServerSettings, background_server, create_app, load_served_model
from bertforge.tokenization import BertTokenizer


NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "B-ORG", 6: "I-ORG"}
MAX_TEXTS, MAX_CHARS, MAX_MASKS, MAX_RESULTS = 8, 4000, 4, 40


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, default_model_dir, tiny_pretraining_checkpoint) -> dict[str, Path]:
    """The MiniLM encoder, a random transformers pre-training checkpoint and random bertforge task models."""
    tokenizer = BertTokenizer.from_pretrained()
    root = tmp_path_factory.mktemp("served")
    torch.manual_seed(0)
    tasks = {"sentiment": BertForSequenceClassification(BertConfig.from_size("tiny", id2label={0: "neg", 1: "pos"})),
             "ner": BertForTokenClassification(BertConfig.from_size("tiny", id2label=NER_LABELS)),
             "qa": BertForQuestionAnswering(BertConfig.from_size("tiny"))}
    for name, model in tasks.items():
        model.save_pretrained(root / name, tokenizer=tokenizer)
    return {"minilm": default_model_dir, "pretrained": tiny_pretraining_checkpoint,
            **{name: root / name for name in tasks}}


@pytest.fixture(scope="module")
def models(model_dirs):
    return [load_served_model(name, directory) for name, directory in model_dirs.items()]


@pytest.fixture(scope="module")
def server(models):
    app = create_app(models, ServerSettings(max_texts=MAX_TEXTS, max_chars=MAX_CHARS, max_masks=MAX_MASKS,
                                            max_results=MAX_RESULTS, max_wait_ms=20))
    with background_server(app) as url:
        yield url, app

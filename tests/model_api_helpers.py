"""What the tests of the calls ported from transformers share (tests/test_model_api.py,
tests/test_model_api_forward.py): a small config, and a transformers model saved to load into bertforge."""

from __future__ import annotations

import torch
import transformers

SMALL = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def saved_reference(tmp_path, name: str, **config):
    """A transformers model with random weights and random MLM bias, saved by transformers."""
    torch.manual_seed(0)
    model = getattr(transformers, name)(transformers.BertConfig(**{**SMALL, **config})).eval()
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("bias"):
                parameter.normal_()
    model.save_pretrained(tmp_path / name)
    return model, tmp_path / name

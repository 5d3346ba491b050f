"""The model's dropout (model/dropout.py): torch's rule (zero with probability p, scale the rest by 1 / (1 - p)),
with a mask drawn from torch's generator, so that a seed gives the same masks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bertforge.model import BertConfig, BertModel
from bertforge.model.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_zeroes_a_share_p_and_scales_the_rest(p):
    x = torch.ones(2_000_000)
    out = dropout(x, p)
    zeroed = float((out == 0).float().mean())
    assert abs(zeroed - p) < 5 * (p * (1 - p) / x.numel()) ** 0.5  # five standard deviations
    assert torch.equal(out[out != 0], torch.full_like(out[out != 0], 1 / (1 - p)))


def test_dropout_masks_follow_the_seed_and_its_gradient_is_the_mask():
    x = torch.randn(3, 7, 5, requires_grad=True)
    torch.manual_seed(1)
    first = dropout(x, 0.3)
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.3), first)
    assert not torch.equal(dropout(x, 0.3), first)  # the generator moved on
    first.sum().backward()
    assert torch.equal(x.grad, (first != 0).float() / 0.7)


def test_dropout_off_returns_its_input():
    x = torch.randn(4, 4)
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))  # torch's rule for p = 1
    module = Dropout(0.1)
    assert isinstance(module, nn.Dropout) and module.eval()(x) is x


def test_a_training_model_drops_out_and_an_evaluating_one_does_not():
    """Attention's dropout too: on the CPU in training the attention is written out with this mask."""
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.5)
    model = BertModel(config)
    ids = torch.randint(0, 50, (2, 9))
    model.eval()
    quiet = model(ids).last_hidden_state
    model.train()
    torch.manual_seed(0)
    noisy = model(ids).last_hidden_state
    torch.manual_seed(0)
    assert torch.equal(model(ids).last_hidden_state, noisy)
    assert not torch.allclose(noisy, quiet, atol=1e-3)
    model.config.attention_probs_dropout_prob = 0.0
    for layer in model.encoder.layers:
        layer.attention.dropout_p = 0.0
    assert torch.allclose(model(ids).last_hidden_state, quiet, atol=1e-5)

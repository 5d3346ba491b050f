"""The learning rate and weight decay each parameter gets: the schedule's warm-up then linear or cosine decay,
no weight decay on biases and LayerNorm, and layer-wise rate decay below the heads."""

from __future__ import annotations

import pytest
import torch

from bertforge.errors import ConfigError
from bertforge.training import TrainingArguments, build_optimizer, learning_rate_factor
from bertforge.training.optim import SCHEDULES, set_learning_rate

from training_helpers import tiny_classifier


pytestmark = pytest.mark.usefixtures("one_thread")


def test_schedule_starts_above_zero_and_decays_linearly():
    # warm-up over 2 steps of 5: 1/2, 2/2, then (5 - s) / 3 for s = 2, 3, 4 (hand-computed)
    assert [learning_rate_factor(s, 2, 5) for s in range(5)] == pytest.approx([0.5, 1.0, 1.0, 2 / 3, 1 / 3])
    assert learning_rate_factor(0, 0, 4) == 1.0 and learning_rate_factor(4, 0, 4) == 0.0


def test_cosine_schedule_falls_along_half_a_cosine_after_the_same_warm_up():
    # warm-up over 2 steps of 6, then (1 - cos(π r)) / 2 of the share r = (6 - s) / 4 of the decay left
    factors = [learning_rate_factor(s, 2, 6, "cosine") for s in range(7)]
    half = 2 ** -0.5 / 2
    assert factors == pytest.approx([0.5, 1.0, 1.0, 0.5 + half, 0.5, 0.5 - half, 0.0])
    linear = [learning_rate_factor(s, 2, 6) for s in range(7)]
    assert factors[3] > linear[3] and factors[4] == pytest.approx(linear[4]) and factors[5] < linear[5]
    with pytest.raises(ConfigError, match="lr_scheduler_type must be one of linear, cosine, got 'step'"):
        TrainingArguments(output_dir="x", lr_scheduler_type="step")
    # the CLI's choices (kept free of torch's import) are the engine's
    from bertforge.cli.finetune import finetune as finetune_command

    choices = next(p for p in finetune_command.params if p.name == "lr_scheduler_type").type.choices
    assert tuple(choices) == tuple(SCHEDULES)


def test_no_weight_decay_on_biases_and_layer_norm():
    model = tiny_classifier()
    optimizer = build_optimizer(model, 1e-3, weight_decay=0.01)
    exempt = {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
    exempt |= {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    decayed, undecayed = ({id(p) for p in g["params"]} for g in optimizer.param_groups)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01 and optimizer.param_groups[1]["weight_decay"] == 0.0
    assert undecayed == exempt and decayed == {id(p) for p in model.parameters()} - exempt


def test_layer_lr_decay_gives_each_layer_below_the_heads_a_smaller_rate():
    model = tiny_classifier()  # 2 encoder layers
    optimizer = build_optimizer(model, 1e-3, weight_decay=0.01, layer_lr_decay=0.5)
    set_learning_rate(optimizer, 1e-3)
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(rate) == len(list(model.parameters()))
    named = dict(model.named_parameters())
    # hand-computed: the heads at the peak, then halved per layer down to the embeddings
    expected = {"classifier.weight": 1e-3, "bert.pooler.dense.bias": 1e-3,
                "bert.encoder.layers.1.intermediate.weight": 5e-4, "bert.encoder.layers.1.output_norm.weight": 5e-4,
                "bert.encoder.layers.0.attention.qkv.weight": 2.5e-4, "bert.embeddings.word.weight": 1.25e-4,
                "bert.embeddings.norm.bias": 1.25e-4}
    assert {name: rate[id(named[name])] for name in expected} == pytest.approx(expected)
    assert {name: decay[id(named[name])] for name in ("bert.embeddings.word.weight", "bert.embeddings.norm.bias",
                                                       "bert.encoder.layers.0.attention.qkv.bias")} \
        == {"bert.embeddings.word.weight": 0.01, "bert.embeddings.norm.bias": 0.0,
            "bert.encoder.layers.0.attention.qkv.bias": 0.0}
    # without the decay: the two groups every earlier checkpoint holds, at the peak rate
    plain = build_optimizer(model, 1e-3)
    set_learning_rate(plain, 1e-3)
    assert [(g["weight_decay"], g["lr"]) for g in plain.param_groups] == [(0.01, 1e-3), (0.0, 1e-3)]

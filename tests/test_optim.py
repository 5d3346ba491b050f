"""The engine's AdamW: the fused kernel it uses by default against torch's reference loop, and
checkpoints of runs made before it was the default continuing exactly as they started."""

from __future__ import annotations

import pytest
import torch

from bertforge.model import BertConfig, BertForPreTraining
from bertforge.training import build_optimizer
from bertforge.training.state import Checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model() -> BertForPreTraining:
    torch.manual_seed(0)
    return BertForPreTraining(BertConfig.from_size("tiny", vocab_size=300, hidden_dropout_prob=0.0,
                                                   attention_probs_dropout_prob=0.0))


def batch(step: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    ids = torch.randint(5, 300, (4, 16), generator=generator)
    labels = torch.where(torch.rand(4, 16, generator=generator) < 0.2, ids, -100)
    return {"input_ids": ids, "labels": labels, "next_sentence_label": torch.tensor([0, 1, 1, 0])}


def train(model, optimizer, steps: range) -> None:
    for step in steps:
        model(**batch(step)).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_default_optimizer_is_fused_and_matches_torch_reference_loop():
    fused, reference = tiny_model(), tiny_model()
    optimizer = build_optimizer(fused, 1e-2, weight_decay=0.01)
    assert all(group["fused"] for group in optimizer.param_groups)
    # Written out independently: the same groups and hyper-parameters, torch's single-tensor loop.
    decay = [p for p in reference.parameters() if p.ndim >= 2]
    no_decay = [p for p in reference.parameters() if p.ndim < 2]
    loop = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=1e-2, betas=(0.9, 0.999), eps=1e-6, foreach=False, fused=False)
    for step in range(5):
        # the same gradients for both, so that only the update rule is compared
        fused(**batch(step)).loss.backward()
        for p, q in zip(fused.parameters(), reference.parameters()):
            q.grad = p.grad.clone()
        for model, opt in ((fused, optimizer), (reference, loop)):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        difference = max(float((p - q).abs().max()) for p, q in zip(fused.parameters(), reference.parameters()))
        moved = max(float((p - q).abs().max()) for p, q in zip(fused.parameters(), tiny_model().parameters()))
    assert difference < 1e-6 and moved > 1e-2  # the weights did move: equality is not trivial


def test_checkpoint_of_an_unfused_run_resumes_unfused_and_bit_identical(tmp_path):
    model = tiny_model()
    optimizer = build_optimizer(model, 1e-2, fused=False)  # a run made before fused was the default
    train(model, optimizer, range(2))
    save_checkpoint(tmp_path, 2, model, optimizer, {})
    train(model, optimizer, range(2, 4))

    resumed = tiny_model()
    resumed_optimizer = build_optimizer(resumed, 1e-2)
    checkpoint = Checkpoint(tmp_path)
    checkpoint.load_model(resumed)
    checkpoint.load_optimizer(resumed_optimizer)
    assert not any(group["fused"] for group in resumed_optimizer.param_groups)
    train(resumed, resumed_optimizer, range(2, 4))
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name

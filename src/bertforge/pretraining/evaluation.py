"""MLM and NSP statistics of pre-training batches: the objective's sums and held-out evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bertforge.errors import ConfigError
from bertforge.model.heads import BertForPreTraining
from bertforge.pretraining.shards import PretrainingData

STATISTICS = ("mlm_loss", "masked", "mlm_correct", "nsp_loss", "sequences", "nsp_correct", "tokens")


def step_statistics(output, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sums over the batch, in the order of STATISTICS."""
    masked = output.mlm_labels.numel()
    sequences = batch["next_sentence_label"].numel()
    mlm_correct = (output.prediction_logits.argmax(-1) == output.mlm_labels).sum()
    nsp_correct = (output.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum()
    return torch.tensor([output.mlm_loss.item() * masked, masked, mlm_correct.item(),
                         output.nsp_loss.item() * sequences, sequences, nsp_correct.item(),
                         batch["attention_mask"].sum().item()], dtype=torch.float64)


def averages(totals: dict[str, float]) -> dict[str, float]:
    masked, sequences = max(totals["masked"], 1), max(totals["sequences"], 1)
    return {"loss": totals["mlm_loss"] / masked + totals["nsp_loss"] / sequences,
            "mlm_loss": totals["mlm_loss"] / masked, "nsp_loss": totals["nsp_loss"] / sequences,
            "mlm_accuracy": totals["mlm_correct"] / masked, "nsp_accuracy": totals["nsp_correct"] / sequences}


def to_tensors(batch: dict[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value).to(device, non_blocking=True) for key, value in batch.items()}


def load_model(model_dir: str | Path) -> BertForPreTraining:
    """The model with both pre-training heads, refused as fill-mask and nsp refuse it when one is
    missing: random head weights would be scored as if trained."""
    from bertforge.pipelines.loading import load_for_task
    from bertforge.pipelines.fill_mask import FillMaskPipeline
    from bertforge.pipelines.next_sentence import NextSentencePipeline

    return load_for_task(BertForPreTraining, Path(model_dir), "pretrain evaluate",
                         FillMaskPipeline.head_prefix + NextSentencePipeline.head_prefix,
                         f"{FillMaskPipeline.head_name} and a {NextSentencePipeline.head_name}")


@torch.no_grad()
def evaluate(model: BertForPreTraining, data: PretrainingData, device: torch.device, batch_size: int,
             max_instances: int, bf16: bool = False) -> dict[str, float]:
    """MLM and NSP loss and accuracy on the first `max_instances` held-out instances (fixed masks)."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if max_instances < 1:
        raise ConfigError(f"--instances must be at least 1, got {max_instances}")
    totals = torch.zeros(len(STATISTICS), dtype=torch.float64)
    count = min(max_instances, len(data))
    with model.evaluating():
        for start in range(0, count, batch_size):
            batch = to_tensors(data.batch(np.arange(start, min(start + batch_size, count)), epoch=0), device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                output = model(**batch, labelled_logits_only=True)
            totals += step_statistics(output, batch)
    return averages(dict(zip(STATISTICS, totals.tolist())))

"""The model's one dropout: `F.dropout`, with its mask drawn faster on the CPU.

torch's CPU dropout draws one Bernoulli sample per element; here each element takes half of a 64-bit random
integer, compared against a threshold, which is faster to draw. Attention with dropout is written out on the CPU
(`bert.explicit_attention`) to take this mask: SDPA's CPU kernel materialises the weights when it drops out, with
torch's mask. BERT-mini pre-training went from 2.79× to 2.96× transformers' tokens/s on a Zen 4 (means of two
`bench/pretrain.py` runs each, docs/benchmarks.md).
The mask keeps each element with probability 1 - p to 2^-32, the survivors scaled by 1 / (1 - p), as torch's;
the numbers come from torch's generator, so a seed, and a resumed run's saved generator state, give the same
masks. GPUs keep torch's fused dropout, and a graph being captured sees `F.dropout`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bertforge.model.linear import capturing_graph


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)`: each element zeroed with probability p, the others scaled by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or capturing_graph() or not 0.0 < p < 1.0:
        return F.dropout(x, p, training)  # it also names a p outside 0..1
    count = x.numel()
    # Two uniform 32-bit integers from each 64-bit draw; kept where at least the p-quantile of their range.
    bits = torch.randint(-2**63, 2**63 - 1, ((count + 1) // 2,), dtype=torch.int64).view(torch.int32)[:count]
    keep = bits.view(x.shape) >= round(-2**31 + p * 2**32)
    return x * keep * (1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """`nn.Dropout` (the same module to every hook and state dict) whose mask is `dropout`'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

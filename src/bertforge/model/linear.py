"""The model's one Linear: `nn.Linear`, with float32 inference on the CPU through oneDNN.

PyTorch's float32 `F.linear` on the CPU calls MKL's sgemm, and MKL runs its fast kernels on Intel
CPUs only: on an AMD EPYC with AVX-512 it reached 94–104 GFLOP/s on one thread where oneDNN's matmul
(the library PyTorch already uses for bfloat16 and int8) reached 168–231 GFLOP/s on the same shapes
(docs/benchmarks.md). oneDNN's kernels are Intel's too, written for every x86 CPU.
`torch.ops.mkldnn._linear_pointwise` is the op Inductor lowers CPU linears to; it has no backward,
so training (anything that records gradients) keeps `F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x·weightᵀ + bias, as `F.linear`: (..., in) → (..., out)."""
    if (ONEDNN_LINEAR and not torch.is_grad_enabled() and x.device.type == "cpu"
            and x.dtype == torch.float32 and weight.dtype == torch.float32):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, same state dict) whose product is `linear` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

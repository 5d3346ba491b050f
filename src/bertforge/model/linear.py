"""The model's one Linear: `nn.Linear`, with its float32 products on the CPU through the faster of
PyTorch's two x86 libraries for the CPU it runs on.

PyTorch's float32 `F.linear` on the CPU calls MKL's sgemm, and MKL runs its AVX-512 kernels on Intel
CPUs only; elsewhere it takes its AVX2 ones. On an AMD EPYC with AVX-512 (Zen 5) it reached 87–93 GFLOP/s
on one thread where oneDNN's matmul (the library PyTorch already uses for bfloat16 and int8) reached
170–217 GFLOP/s on the model's shapes, forward and backward. On an Intel Xeon (AVX-512, AMX) MKL is the
faster one: oneDNN reached 0.73–0.97× its GFLOP/s; so it is on an AMD EPYC with AVX2 and no AVX-512
(Zen 3), where both libraries run AVX2 code: oneDNN 0.66–0.94× (`bench/embed_kernels.py --products`,
docs/benchmarks.md). So `F.linear` (MKL) runs on Intel CPUs and on CPUs without AVX-512, and oneDNN on
the other x86 CPUs; the two agree within float32 rounding.
`torch.ops.mkldnn._linear_pointwise` is the op Inductor lowers CPU linears to. It has no backward,
so `OneDNNLinear` gives it one, made of the same op: training takes the same kernels as inference.
Off x86 PyTorch's float32 products are not MKL's, and oneDNN was not measured there: `F.linear` runs.
"""

from __future__ import annotations

import platform

import torch
import torch.nn.functional as F
from torch import nn

from bertforge.model.cpu import cpu_has_any, cpu_is_intel

ONEDNN_AVAILABLE = (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
                    and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def mkl_is_fast() -> bool:
    """Whether MKL's kernels are this CPU's fastest: on Intel CPUs (the CPU's brand, as PyTorch's CPU probe
    reads it: "Intel Xeon", "AMD EPYC 9R45", ...), and on CPUs without AVX-512, where oneDNN has no wider
    kernels than MKL's AVX2 ones to offer."""
    return cpu_is_intel() or not cpu_has_any("avx512_f")


ONEDNN_LINEAR = ONEDNN_AVAILABLE and not mkl_is_fast()


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(..., in) · (out, in)ᵀ + (out) → (..., out); strided (transposed) operands are fine."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        # oneDNN reorders a transposed left side with spaced-out rows element by element: for the pooler's [CLS] rows
        # (32 of a 32 × 128 batch) that took 60 ms against 0.1 ms once contiguous (contiguous() is free when it is).
        grad_rows = grad.reshape(-1, grad.shape[-1]).contiguous()  # (rows, out)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = onednn_linear(grad, weight.t(), None)  # (..., out) · (out, in) → (..., in)
        if ctx.needs_input_grad[1]:
            # (out, rows) · (rows, in) → (out, in). oneDNN copies a transposed left side whole, so the narrower of
            # the two goes there: for the vocabulary projection that is x (rows × 256), not grad (rows × 30522).
            x_rows = x.reshape(-1, x.shape[-1]).contiguous()  # (rows, in)
            if grad_rows.shape[1] > x_rows.shape[1]:
                grad_weight = onednn_linear(x_rows.t(), grad_rows.t(), None).t()  # ((in, rows) · (rows, out))ᵀ
            else:
                grad_weight = onednn_linear(grad_rows.t(), x_rows.t(), None)
        if ctx.needs_input_grad[2]:  # False when there is no bias
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias


def capturing_graph() -> bool:
    """Whether torch.compile, torch.export (and the ONNX exporter built on it) or torch.jit.trace (the older ONNX
    exporter) is recording the model: the model then takes no branch on tensor values and no op these lack."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x·weightᵀ + bias, as `F.linear`: (..., in) → (..., out). Under autocast `F.linear` runs, so
    that it casts to bfloat16 as usual; so it does for no rows, which oneDNN's reduction refuses,
    and while a graph is captured: inductor lowers oneDNN's product only for frozen weights, and the
    tracer and the ONNX exporters know no such op."""
    if not (ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and x.numel() and not capturing_graph()):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return OneDNNLinear.apply(x, weight, bias)
    return onednn_linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, same state dict) whose product is `linear` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

"""int8 inference on the CPU, on supported ops only (no `torch.ao` quantisation, which is deprecated).

Each of the encoder's Linear layers becomes an `Int8Linear`: int8 weights with one scale per output
channel, computed once, and activations quantised at run time to 0..255 with a scale and a zero point
per token. Per-token scales keep one long-tailed token from costing every other token its precision;
the zero point matters after GELU, whose output barely goes below zero, so a symmetric range would
waste half of the levels there (worst cosine to float32 on 1,000 Gutenberg lines: 0.979 symmetric,
0.991 with zero points). The heads and the pooler stay float32: a small share of the time, and their
outputs (logits) are what users read.

The integer product runs on oneDNN's int8 matmul (`torch.ops.onednn.qlinear_pointwise`, the kernel
Inductor's x86 quantisation lowers to: VNNI / AMX, the weight scales applied in the kernel) on CPUs with
VNNI or AMX. Without VNNI, oneDNN multiplies u8 by s8 with AVX2's vpmaddubsw, whose int16 sums of two
products saturate at 32,767 (255·127·2 = 64,770): on an AMD EPYC with AVX2 alone, 65% of a layer's
outputs came out wrong, by up to 9.6 (tests/test_precision.py's outlier layer). There the same integer
sums are computed exactly by float32 matrix products (`exact_integer_product`): many times faster than
`torch._int_mm`'s CPU kernel, though no faster than float32 itself (docs/benchmarks.md).
The oneDNN kernel takes one activation scale per tensor, so it multiplies the levels with scale 1
and the per-token scales and zero points are applied after it: x = s·(u − z) gives x·Wᵀ = s·(u·Wᵀ − z·ΣW).
"""

from __future__ import annotations

import torch
from torch import nn

from bertforge.model.cpu import cpu_has_any

# The instruction sets whose int8 products oneDNN sums in int32 (VNNI, AMX), so never saturates.
INT8_EXACT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# Integers up to 2^24 are exact in float32. A product of a shifted level (-128..127) and a weight level
# (-127..127) is at most 16,256 in size, so a sum of up to 1,032 of them is exact in any order of addition.
EXACT_FLOAT32_TERMS = 2**24 // (128 * 127)
# Smallest scale, so that an all-zero weight row or token does not divide by zero.
EPSILON = 1e-8


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


def onednn_int8_exact() -> bool:
    """Whether oneDNN's int8 matmul is there and sums exactly in int32 on this CPU (VNNI or AMX)."""
    return cpu_has_any(*INT8_EXACT_FLAGS) and onednn_available()


class Int8Linear(nn.Module):
    """y = x·Wᵀ + b with int8 weights and 8-bit activations, products summed exactly: in int32 by oneDNN,
    or as float32 products of the levels where oneDNN would saturate (`exact_integer_product`)."""

    def __init__(self, linear: nn.Linear, use_onednn: bool | None = None):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=EPSILON) / 127
        quantized = torch.round(weight / scale[:, None]).to(torch.int8)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.use_onednn = onednn_int8_exact() if use_onednn is None else use_onednn
        self.register_buffer("weight_scale", scale)
        # ΣW·scale per output channel: what the zero points cost, subtracted after the product.
        self.register_buffer("zero_point_weight", quantized.sum(dim=1, dtype=torch.int32).float() * scale)
        self.register_buffer("bias", linear.bias.detach().float() if linear.bias is not None else None)
        if self.use_onednn:
            self.register_buffer("weight", torch.ops.onednn.qlinear_prepack(quantized, None))  # oneDNN's layout
            self.register_buffer("weight_zero_point", torch.zeros_like(scale, dtype=torch.long))
        else:
            # The levels 0..255 are shifted down by 128 to keep the sums small; the shift is added back as 128·ΣW.
            self.register_buffer("weight", quantized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()
        low = x.amin(dim=1, keepdim=True).clamp(max=0)  # 0 stays in range, and exact
        high = x.amax(dim=1, keepdim=True).clamp(min=0)
        scale = (high - low).clamp(min=EPSILON) / 255
        zero_point = torch.round(-low / scale)
        levels = torch.round(x / scale + zero_point).clamp_(0, 255)
        if self.use_onednn:
            product = torch.ops.onednn.qlinear_pointwise(
                levels.to(torch.uint8), 1.0, 0, self.weight, self.weight_scale, self.weight_zero_point, None,
                1.0, 0, torch.float32, "none", [], "")  # (u·Wᵀ) times the weight scales
        else:
            product = exact_integer_product(levels - 128, self.weight).mul_(self.weight_scale)
            zero_point = zero_point - 128
        product.addr_(zero_point.view(-1), self.zero_point_weight, alpha=-1)
        y = torch.addcmul(self.bias, product, scale) if self.bias is not None else product.mul_(scale)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kernel = "onednn" if self.use_onednn else "exact float32"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               f"kernel={kernel}"


def exact_integer_product(levels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(tokens, in) integer-valued float32 levels · (out, in) int8 weightᵀ → (tokens, out): the exact integer
    sums, rounded once to float32 (as `torch._int_mm(...).float()` gives them). Longer rows go in slices of
    `EXACT_FLOAT32_TERMS`, each exact, added in float64."""
    weight = weight.float()
    width = levels.shape[1]
    if width <= EXACT_FLOAT32_TERMS:
        return levels @ weight.t()
    total = None
    for start in range(0, width, EXACT_FLOAT32_TERMS):
        part = (levels[:, start:start + EXACT_FLOAT32_TERMS] @ weight[:, start:start + EXACT_FLOAT32_TERMS].t()).double()
        total = part if total is None else total.add_(part)
    return total.float()


def quantize_encoder(model: nn.Module, use_onednn: bool | None = None) -> nn.Module:
    """Replace every Linear of the model's encoder layers by an `Int8Linear`, in place."""
    for module in list(model.base_model.encoder.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child, use_onednn))
    return model

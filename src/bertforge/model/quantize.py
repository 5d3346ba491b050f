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
VNNI or AMX, and on `torch._int_mm` elsewhere. Without VNNI, oneDNN multiplies u8 by s8 with AVX2's
vpmaddubsw, whose int16 sums of two products saturate at 32,767 (255·127·2 = 64,770): on an AMD EPYC
with AVX2 alone, 65% of a layer's outputs came out wrong, by up to 9.6 (tests/test_precision.py's outlier
layer). The oneDNN kernel takes one activation scale per tensor, so it multiplies the levels with scale 1
and the per-token scales and zero points are applied after it: x = s·(u − z) gives x·Wᵀ = s·(u·Wᵀ − z·ΣW).
"""

from __future__ import annotations

import torch
from torch import nn

# Smallest scale, so that an all-zero weight row or token does not divide by zero.
EPSILON = 1e-8


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


def onednn_int8_exact() -> bool:
    """Whether oneDNN's int8 matmul is there and sums exactly in int32 on this CPU (VNNI or AMX)."""
    capabilities = torch.cpu.get_capabilities()
    vnni = any(capabilities.get(flag, False) for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))
    return vnni and onednn_available()


class Int8Linear(nn.Module):
    """y = x·Wᵀ + b with int8 weights and 8-bit activations, products summed in int32."""

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
            # `_int_mm` multiplies int8 by int8: the levels 0..255 are shifted down by 128, so that
            # shift is added back as 128·ΣW; the (in, out) operand is a transposed view, no copy.
            self.register_buffer("weight", quantized.t())

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
            product = torch._int_mm((levels - 128).to(torch.int8), self.weight).float().mul_(self.weight_scale)
            zero_point = zero_point - 128
        product.addr_(zero_point.view(-1), self.zero_point_weight, alpha=-1)
        y = torch.addcmul(self.bias, product, scale) if self.bias is not None else product.mul_(scale)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kernel = "onednn" if self.use_onednn else "_int_mm"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               f"kernel={kernel}"


def quantize_encoder(model: nn.Module, use_onednn: bool | None = None) -> nn.Module:
    """Replace every Linear of the model's encoder layers by an `Int8Linear`, in place."""
    for module in list(model.base_model.encoder.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child, use_onednn))
    return model

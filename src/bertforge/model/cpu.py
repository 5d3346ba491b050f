"""What the CPU offers, as PyTorch's own probe (`torch.cpu.get_capabilities`) reads it: the one place
where the speed and precision rules (`linear`, `quantize`, `pipelines.loading`) ask for instruction sets
and the CPU's brand. Read at each call, not cached, so a test can stand in another CPU."""

from __future__ import annotations

import torch


def cpu_has_any(*flags: str) -> bool:
    """Whether the CPU has at least one of `flags` (PyTorch's names: "avx512_f", "avx512_vnni", "amx_bf16", ...)."""
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(flag, False) for flag in flags)


def cpu_is_intel() -> bool:
    """The CPU's brand as PyTorch reads it: "Intel Xeon ...", "AMD EPYC 9R45", ..."""
    return str(torch.cpu.get_capabilities().get("cpu_name", "")).lower().startswith("intel")

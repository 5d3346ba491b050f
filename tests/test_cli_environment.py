"""The environment a `bertforge` process starts with (`bertforge.cli.environment`): set when the command line is
loaded, before any command imports torch, which reads it once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Loads the command line, then torch, and fills a 64 MB tensor: the value PyTorch saw, and the huge pages it got.
PROBE = """
import os, re, sys
import bertforge.cli.main
assert "torch" not in sys.modules, "the command line loaded torch"
import torch
x = torch.ones(1 << 24)
huge = int(re.search(r"AnonHugePages:\\s+(\\d+)", open("/proc/self/smaps_rollup").read()).group(1))
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), huge)
"""


def transparent_huge_pages() -> str | None:
    """The kernel's mode (always, madvise, never), None off Linux."""
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return re.search(r"\[(\w+)\]", path.read_text()).group(1) if path.exists() else None


@pytest.mark.parametrize("given, expected", [(None, "1"), ("0", "0")], ids=["unset", "the user's 0"])
def test_the_command_line_asks_pytorch_for_huge_pages_before_torch_is_loaded(given, expected):
    """PyTorch's allocator asks for transparent huge pages for its large blocks with THP_MEM_ALLOC_ENABLE=1 (a
    training step's fresh logits fault far fewer pages); a value the user set is kept. Where the kernel gives huge
    pages only to blocks that ask (madvise), the 64 MB tensor gets them with the setting and not without."""
    if sys.platform != "linux":
        pytest.skip("/proc/self/smaps_rollup is Linux's")
    environment = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if given is not None:
        environment["THP_MEM_ALLOC_ENABLE"] = given
    value, huge_kb = subprocess.run([sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True,
                                    check=True).stdout.split()
    assert value == expected
    if transparent_huge_pages() == "madvise":
        assert (int(huge_kb) > 0) == (expected == "1"), huge_kb

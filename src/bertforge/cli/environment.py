"""The environment a `bertforge` process starts with: settings PyTorch reads once, before its first allocation,
so they are set when the command line is loaded, before any command imports torch."""

from __future__ import annotations

import os

# THP_MEM_ALLOC_ENABLE=1: PyTorch's CPU allocator asks the kernel for transparent huge pages for its blocks of 2 MB
# and more. A training step allocates its largest tensors afresh (the vocabulary logits of the masked positions and
# their gradients, 608 × 30,522 floats for a batch of 32 × 128), and the kernel faults them in page by page on first
# touch: 512 times fewer faults with 2 MB pages. `bench/pretrain.py` (each library in a process of its own, on a
# Zen 4): BERT-tiny 6,775 → 8,455 and 8,668 tokens/s, BERT-mini within the runs' spread (docs/benchmarks.md).
# Sentence embeddings ran at the same speed either way (ad hoc, 600 paragraphs). A value the user set is kept.
PROCESS_ENVIRONMENT = {"THP_MEM_ALLOC_ENABLE": "1"}


def with_defaults(environment: dict[str, str]) -> dict[str, str]:
    """`environment` with the settings above where it does not set them."""
    return {**PROCESS_ENVIRONMENT, **environment}


def set_defaults() -> None:
    os.environ.update(with_defaults(dict(os.environ)))

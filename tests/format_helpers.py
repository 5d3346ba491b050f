"""Helpers shared by the checkpoint-format tests (tests/test_formats*.py): the TensorFlow checkpoint
fixture's folder and the real texts the formats are run on."""

from __future__ import annotations

from conftest import REPO, gutenberg_lines, sst2_sentences

TF_FIXTURE = REPO / "tests" / "fixtures" / "tf_checkpoint"


def _real_texts() -> list[str]:
    return gutenberg_lines(40) + sst2_sentences(40, split="validation")

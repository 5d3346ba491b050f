"""Helpers shared by the fine-tuning task tests: a small MiniLM and an SST-2 slice."""

from __future__ import annotations

from conftest import fixture_data

# Two of MiniLM's six pre-trained layers (real weights, a third of the cost) without dropout, so that
# a few steps at a high learning rate show the loss falling.
SMALL = {"num_hidden_layers": 2, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def sst2_slice(tmp_path, rows: int, split: str = "train"):
    lines = fixture_data("sst2", f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    path = tmp_path / f"sst2_{split}.tsv"
    path.write_text("\n".join(lines[:rows + 1]) + "\n", encoding="utf-8")
    return path

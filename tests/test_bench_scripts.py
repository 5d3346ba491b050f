"""Bench scripts' own argument checks: a wrong option stops with one line naming it, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("rate", ["abc", "0", "-1e-4"])
def test_pretraining_value_rejects_a_learning_rate_that_is_not_positive(tmp_path, rate):
    done = subprocess.run([sys.executable, str(BENCH / "pretraining_value.py"), str(tmp_path), f"--lr={rate}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"pretraining_value.py: error: --learning-rate must be a positive number, got {rate!r}")

"""What the bench script tests share (tests/test_bench_scripts.py, tests/test_bench_distill.py): where the scripts
are, and a script run as from the command line, stopped by its own argument checks."""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
from pathlib import Path
from unittest import mock

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def stops(script: str, *arguments) -> tuple[int, str]:
    """(exit status, last line of stderr) of a bench script run as `python bench/SCRIPT arguments` would run
    it, in this process: its checks come before any work, and a new process would only spend seconds
    importing torch again."""
    stderr = io.StringIO()
    with mock.patch.object(sys, "argv", [str(BENCH / script), *map(str, arguments)]), \
            mock.patch.object(sys, "path", [str(BENCH), *sys.path]), mock.patch.dict(os.environ), \
            contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(BENCH / script), run_name="__main__")
    code = stopped.value.code
    if isinstance(code, str):  # sys.exit("message"): Python prints the message and exits with 1
        return 1, code.splitlines()[-1]
    return code, stderr.getvalue().strip().splitlines()[-1]

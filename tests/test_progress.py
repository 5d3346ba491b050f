"""Progress bars: tqdm's in-place bar on a terminal, timed plain lines in a log file."""

import io
import sys

import pytest

from bertforge import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def drawn(monkeypatch, stream, steps=1000, interval=3600.0) -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", interval)
    for _ in progress.progress_bar(range(steps), desc="training", unit="step"):
        pass
    return stream.getvalue()


def test_a_log_file_gets_whole_lines_at_the_interval_not_a_redraw_per_step(monkeypatch):
    lines = drawn(monkeypatch, io.StringIO()).splitlines()
    assert "\r" not in "".join(lines)
    # the bar as it starts and as it ends: nothing in between within the hour's interval
    assert lines[0].startswith("training:   0%") and "0/1000" in lines[0]
    assert all("1000/1000" in line for line in lines[1:]) and 2 <= len(lines) <= 3
    assert all(line == line.rstrip() for line in lines)


def test_a_terminal_keeps_tqdms_redrawn_bar(monkeypatch):
    text = drawn(monkeypatch, Terminal(), steps=50, interval=0.0)
    assert text.startswith("\rtraining:") and text.count("\r") >= 2 and "50/50" in text


@pytest.mark.parametrize("disable", [True, False])
def test_a_disabled_bar_writes_nothing(monkeypatch, disable):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress.progress_bar(range(10), disable=disable):
        pass
    assert (stream.getvalue() == "") == disable

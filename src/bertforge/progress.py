"""Progress bars for every long job: tqdm's bar on a terminal; where stderr is not one (a log file under
nohup, a pipe, a CI log) one plain line every LOG_INTERVAL_S seconds instead, because tqdm redraws its
bar with carriage returns ten times a second and an hour of training would leave megabytes on one
unreadable line."""

from __future__ import annotations

import sys

from tqdm import autonotebook, std
from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


class _Lines:
    """A stream that writes each of tqdm's redraws as a line of its own (tqdm starts each with "\r" and
    pads it with spaces to cover the last one; a clearing redraw, all blanks, is dropped)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable=None, **options) -> tqdm:
    """`tqdm(iterable, **options)`, in plain timed lines where stderr is not a terminal (a notebook keeps
    tqdm.auto's widget)."""
    stream = sys.stderr
    if autonotebook.tqdm is std.tqdm and not (hasattr(stream, "isatty") and stream.isatty()):
        # maxinterval too: tqdm's monitor thread would otherwise redraw every 10 s
        options = {"file": _Lines(stream), "mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S, **options}
    return tqdm(iterable, **options)

"""Stopping a run on Ctrl-C or SIGTERM without losing the steps since its last checkpoint.

The first signal asks the engine to finish the step it is in, save a checkpoint and stop; a second Ctrl-C
stops at once, as it would without this. Handlers can only be set from the main thread; elsewhere (a
run started from a worker thread) the signals keep their usual behaviour.
"""

from __future__ import annotations

import logging
import signal
import threading

from bertforge.errors import BertforgeError

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(BertforgeError):
    """The run stopped on a signal after saving a checkpoint; the command with --resume continues it."""

    exit_code = 130  # the shell's code for a command stopped by Ctrl-C


class StopRequests:
    """A context in which SIGINT and SIGTERM set `requested` instead of stopping the process."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in SIGNALS}
        return self

    def __exit__(self, *exception) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("%s: the run stops after this step and saves a checkpoint first (Ctrl-C again stops it "
                       "at once, losing the steps since the last checkpoint)", signal.Signals(number).name)

"""Where the served models run: in a child process of their own (the default), or on one inference
thread of the server's process.

On a thread, the model shares the GIL with the event loop (HTTP, JSON, validation), and PyTorch
takes the GIL back between operations: bench/serve.py measures a 32-sentence call up to 20x slower
beside a thread busy with Python. In a child process the model has an interpreter of its own, and
the event loop's work runs beside it on another core. The price: the child loads its own copy of
every model (twice the memory; start-up waits for it), and inputs and answers are pickled across,
which is small next to a forward pass. Like any spawned process, it needs a script that starts the
server to have the usual `if __name__ == "__main__":` guard.

The child takes its work when it is free: a thread of the child receives batches into an inbox as
the server sends them, and the model takes everything waiting for the same call into one model call
(up to `max_batch_size` inputs). So batches that queued while the model was busy run together, as
one batch would have, had the server waited to collect them: the model neither waits for the event
loop nor runs a batch smaller than what is waiting.

What runs is a `ModelCall`: a served model's `run_*` method by name, which means the same in
either place.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import itertools
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

from bertforge.server.models import ServedModel, load_served_model


class InferenceProcessGone(RuntimeError):
    """The child process that runs the models has died (killed, or out of memory)."""

    def __init__(self, message: str = "the inference process has stopped"):
        super().__init__(message)


class Job(NamedTuple):
    """What the server sends the child: `call(models, *inputs)`. A batched job's one input is its list
    of payloads, which may join other batched jobs for the same call."""

    id: int
    call: Any
    inputs: tuple
    batched: bool

    @property
    def size(self) -> int:
        return len(self.inputs[0]) if self.batched else 0


class Cancel(NamedTuple):
    """Sent to the child when every client of a job has gone: the job is dropped if it has not started."""

    id: int


@dataclass(frozen=True)
class ModelCall:
    """`models[model].method(*inputs, **options)`; hashable, so that inputs are grouped by it."""

    model: str
    method: str
    options: tuple[tuple[str, Any], ...] = ()  # keyword arguments as (name, value) pairs

    def __call__(self, models: dict[str, ServedModel], *inputs):
        return getattr(models[self.model], self.method)(*inputs, **dict(self.options))


class InferenceThread:
    """The models on one thread of this process (torch spreads each call over the cores)."""

    in_flight = 1  # a batch queued behind another on the same thread would gain nothing

    def __init__(self, models: dict[str, ServedModel]):
        self.models = models
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertforge-inference")

    async def start(self) -> None:
        pass

    @property
    def alive(self) -> bool:
        return True

    async def run(self, call, *inputs):
        return await asyncio.get_running_loop().run_in_executor(self.executor, call, self.models, *inputs)

    async def run_batch(self, call: ModelCall, payloads: list) -> tuple[list, int]:
        """(one result per payload, the size of the model call that computed them)."""
        return await self.run(call, payloads), len(payloads)

    async def stop(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class InferenceProcess:
    """The models in one spawned child process, loaded there from their directories."""

    # Collections the server may send ahead. Those waiting for the same call run as one, so nothing is
    # gained by holding them back; the bound keeps an overloaded server's backlog in its own queue,
    # where the queue limit sees it.
    in_flight = 64

    def __init__(self, models: dict[str, ServedModel], threads: int, max_batch_size: int):
        self.specs = [(m.name, str(m.directory), str(m.checkpoint.device), m.checkpoint.dtype)
                      for m in models.values()]
        self.threads = threads
        self.max_batch_size = max_batch_size
        self.process: multiprocessing.Process | None = None
        self.pid: int | None = None  # the child's, once started
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._gone = False

    async def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        child_inbox, self._inbox = context.Pipe(duplex=False)
        self._outbox, child_outbox = context.Pipe(duplex=False)
        self.process = context.Process(target=_serve_in_child, name="bertforge-inference", daemon=True,
                                       args=(child_inbox, child_outbox, self.specs, self.threads,
                                             self.max_batch_size))
        loaded = self._expect(0)
        self.process.start()  # from the event loop's thread, which PR_SET_PDEATHSIG ties the child to
        child_inbox.close()
        child_outbox.close()
        # The event loop watches the pipe itself (a selector loop: Linux, macOS), so an answer reaches
        # its request with no hop through another thread.
        asyncio.get_running_loop().add_reader(self._outbox.fileno(), self._receive)
        outcome, _ = await loaded  # the server reports started once the child has loaded the models
        if isinstance(outcome, BaseException):
            raise outcome
        self.pid = outcome

    @property
    def alive(self) -> bool:
        return not self._gone and self.process is not None and self.process.is_alive()

    async def run(self, call, *inputs):
        result, _ = await self._send(call, inputs, batched=False)
        return result

    async def run_batch(self, call: ModelCall, payloads: list) -> tuple[list, int]:
        """(one result per payload, the size of the model call that computed them: 0 when they
        joined a call that an earlier batch leads)."""
        return await self._send(call, (payloads,), batched=True)

    async def stop(self) -> None:
        if self.process is None or self.process.pid is None:
            return
        if not self._gone:
            asyncio.get_running_loop().remove_reader(self._outbox.fileno())
            try:
                self._inbox.send(None)
            except OSError:
                pass  # already gone
        await asyncio.to_thread(self.process.join, 10)
        if self.process.is_alive():
            self.process.kill()
        self._inbox.close()
        self._outbox.close()
        self._fail_waiting(InferenceProcessGone("the inference process stopped with the server"))

    def _expect(self, job_id: int) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._waiting[job_id] = future
        return future

    async def _send(self, call, inputs: tuple, batched: bool):
        if self._gone:
            raise InferenceProcessGone()
        job_id = next(self._ids)
        answer = self._expect(job_id)
        try:
            self._inbox.send(Job(job_id, call, inputs, batched))
        except OSError:  # the child has gone and the event loop has not yet heard
            self._waiting.pop(job_id)
            raise InferenceProcessGone() from None
        try:
            outcome, size = await answer
        except asyncio.CancelledError:  # its clients have gone: the child drops it unless it has started
            self._waiting.pop(job_id, None)
            try:
                self._inbox.send(Cancel(job_id))
            except OSError:
                pass
            raise
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome, size

    def _receive(self) -> None:
        """On the event loop, whenever the child has answered."""
        try:
            while self._outbox.poll():
                job_id, outcome, size = self._outbox.recv()
                future = self._waiting.pop(job_id, None)
                if future is not None and not future.done():
                    future.set_result((outcome, size))
        except (EOFError, OSError):
            self._gone = True
            asyncio.get_running_loop().remove_reader(self._outbox.fileno())
            self._fail_waiting(InferenceProcessGone())

    def _fail_waiting(self, error: Exception) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()


def make_runner(inference: str, models: dict[str, ServedModel], threads: int,
                max_batch_size: int) -> InferenceThread | InferenceProcess:
    return InferenceProcess(models, threads, max_batch_size) if inference == "process" else InferenceThread(models)


# ---- in the child process ---------------------------------------------------------------------------
def _serve_in_child(inbox, outbox, specs: list[tuple[str, str, str, str]], threads: int,
                    max_batch_size: int) -> None:
    import torch

    if sys.platform == "linux":  # end with the server, even one killed with no chance to stop us
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    # Ctrl-C reaches the terminal's whole process group; the server stops this process itself once its
    # requests are answered.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    try:
        models = {name: load_served_model(name, directory, device, dtype)
                  for name, directory, device, dtype in specs}
    except Exception as e:
        outbox.send((0, _picklable(e), None))
        return
    outbox.send((0, os.getpid(), None))
    waiting: collections.deque = collections.deque()
    arrived = threading.Condition()

    def receive() -> None:
        while True:
            try:
                job = inbox.recv()
            except (EOFError, OSError):
                job = None
            with arrived:
                if isinstance(job, Cancel):
                    cancelled = next((queued for queued in waiting if queued is not None and queued.id == job.id), None)
                    if cancelled is not None:
                        waiting.remove(cancelled)
                    continue
                waiting.append(job)
                arrived.notify()
            if job is None:
                return

    threading.Thread(target=receive, name="bertforge-inbox", daemon=True).start()
    while True:
        with arrived:
            arrived.wait_for(lambda: waiting)
            group = _take_group(waiting, max_batch_size)
        if group is None:
            return
        for job_id, outcome, size in _run_group(models, group):
            try:
                outbox.send((job_id, outcome, size))
            except (pickle.PicklingError, TypeError, AttributeError) as e:  # an answer that cannot cross
                outbox.send((job_id, RuntimeError(f"the answer could not be sent to the server: {e}"), None))


def _take_group(waiting: collections.deque, max_batch_size: int) -> list[Job] | None:
    """The first waiting job, and every later batched job for the same call that fits beside it."""
    first = waiting.popleft()
    if first is None:
        return None
    group, size, kept = [first], first.size, []
    while first.batched and waiting:
        job = waiting.popleft()
        if job is not None and job.batched and job.call == first.call and size + job.size <= max_batch_size:
            group.append(job)
            size += job.size
        else:
            kept.append(job)
    waiting.extendleft(reversed(kept))
    return group


def _run_group(models: dict[str, ServedModel], group: list[Job]) -> list[tuple]:
    """(job id, result or exception, model call size) for each job of the group."""
    first = group[0]
    if len(group) > 1:
        payloads = [payload for job in group for payload in job.inputs[0]]
        try:
            results = first.call(models, payloads)
        except Exception:  # one bad batch must not fail the others: each runs on its own
            return [answer for job in group for answer in _run_group(models, [job])]
        answers, start = [], 0
        for job in group:
            answers.append((job.id, results[start:start + job.size], len(payloads) if job is first else 0))
            start += job.size
        return answers
    try:
        return [(first.id, first.call(models, *first.inputs), first.size)]
    except Exception as e:
        e.add_note("in the inference process:\n" + traceback.format_exc())  # the server logs it with a 500
        return [(first.id, _picklable(e), None)]


def _picklable(error: Exception) -> Exception:
    """The error itself where it crosses to the server intact, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")

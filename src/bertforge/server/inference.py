"""Where the served models run: in a child process of their own (the default), or on one inference
thread of the server's process.

On a thread, the model shares the GIL with the event loop (HTTP, JSON, validation), and PyTorch
takes the GIL back between operations: bench/serve.py measures a 32-sentence call up to 20x slower
beside a thread busy with Python. In a child process the model has an interpreter of its own, and
the event loop's work runs beside it on another core. The price: the child loads its own copy of
every model (twice the memory; start-up waits for it), and inputs and answers are pickled across,
which is small next to a forward pass. Like any spawned process, it needs a script that starts the server to have
the usual `if __name__ == "__main__":` guard.

What runs is a `ModelCall`: a served model's `run_*` method by name, which means the same in
either place.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bertforge.server.models import ServedModel, load_served_model


@dataclass(frozen=True)
class ModelCall:
    """`models[model].method(*inputs, **options)`; hashable, so that the batcher groups inputs by it."""

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

    async def run(self, call, *inputs):
        return await asyncio.get_running_loop().run_in_executor(self.executor, call, self.models, *inputs)

    async def stop(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class InferenceProcess:
    """The models in one spawned child process, loaded there from their directories."""

    # The next batch waits in the child's queue while one runs, so the model never waits for the
    # event loop to answer the last batch's clients and collect the next one.
    in_flight = 2

    def __init__(self, models: dict[str, ServedModel], threads: int):
        self.specs = [(m.name, str(m.directory), str(m.checkpoint.device), m.checkpoint.dtype)
                      for m in models.values()]
        self.threads = threads
        self.pool: ProcessPoolExecutor | None = None
        self.pid: int | None = None  # the child's, once started

    async def start(self) -> None:
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_load_models, initargs=(self.specs, self.threads))
        self.pid = await self.run(_child_pid)  # the server reports started once the child has loaded the models

    async def run(self, call, *inputs):
        return await asyncio.wrap_future(self.pool.submit(_run_in_child, call, inputs))

    async def stop(self) -> None:
        if self.pool is not None:
            await asyncio.to_thread(self.pool.shutdown, wait=True, cancel_futures=True)


def make_runner(inference: str, models: dict[str, ServedModel], threads: int) -> InferenceThread | InferenceProcess:
    return InferenceProcess(models, threads) if inference == "process" else InferenceThread(models)


# ---- in the child process ---------------------------------------------------------------------------
_child_models: dict[str, ServedModel] = {}


def _load_models(specs: list[tuple[str, str, str, str]], threads: int) -> None:
    import torch

    if sys.platform == "linux":  # end with the server, even one killed with no chance to stop us
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    torch.set_num_threads(threads)
    for name, directory, device, dtype in specs:
        _child_models[name] = load_served_model(name, directory, device, dtype)


def _child_pid(models: dict[str, ServedModel]) -> int:
    return os.getpid()


def _run_in_child(call, inputs: tuple):
    return call(_child_models, *inputs)

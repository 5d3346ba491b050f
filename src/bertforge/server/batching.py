"""Dynamic micro-batching: requests that arrive together run through the model together.

Every text of every request becomes one queue item. A collector task takes the first waiting
item, then waits up to `max_wait_ms` (counted from when that item arrived) for the batch to
fill to `max_batch_size`, also taking whatever else is already queued (up to a few batches'
worth). The default wait is 0: requests that queued while the model was busy still run together,
and a wait for more only idled the model in the serving bench. A wait set by the user applies only
while requests keep company: when the last collection held a single
request, a lone client would wait for nobody, so the next collection takes what is queued and
goes at once (as with batching off); the first collection that finds two requests turns the
wait back on. The items are grouped by the call they ask for (model, task, options), sorted by
length so each micro-batch pads little, and handed to where the models run (inference.py), so the
event loop keeps accepting requests meanwhile. On a thread, a collection is taken only when the
model can start on it, so it holds everything that waited meanwhile; a child process takes
collections as they come and runs those waiting for the same call as one. Items whose client has
gone are dropped before they are sent to run.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from bertforge.server.metrics import Metrics

DRAIN_BATCHES = 4  # how many batches' worth of already-queued items one collection may take


class QueueFullError(Exception):
    """More items are waiting than the server accepts; the client should retry later."""


@dataclass
class _Item:
    run: Hashable  # the batched call, run(models, inputs) -> one result (or exception) per input
    payload: Any
    length: int
    future: asyncio.Future
    request: int  # which submit() call the item came from
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(self, metrics: Metrics, runner, max_batch_size: int = 32, max_wait_ms: float = 0.0,
                 enabled: bool = True, max_queue: int = 4096):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.enabled = enabled
        self.max_queue = max_queue
        self.runner = runner  # an InferenceProcess or InferenceThread (inference.py)
        self._queue: asyncio.Queue[_Item] | None = None
        self._slots: asyncio.Semaphore | None = None  # collections the runner may hold at once
        self._collector: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._requests = itertools.count()
        self._company = False  # did the last collection hold more than one request?

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        await self.runner.start()
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.runner.in_flight)
        self._collector = asyncio.create_task(self._collect_forever())

    async def stop(self) -> None:
        tasks = [task for task in (self._collector, *self._running) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.runner.stop()

    async def call(self, run: Callable, *args) -> Any:
        """Run a single (unbatched) computation where the models run."""
        return await self.runner.run(run, *args)

    async def submit(self, run: Hashable, payloads: list, lengths: list[int]) -> list:
        """Results for `payloads` (one request's inputs), computed with other requests' inputs for
        the same `run`. Raises the first per-input exception."""
        if not self.enabled:
            self.metrics.observe_batch(len(payloads))
            return _raise_first(await self.call(run, payloads))
        if self.queue_depth + len(payloads) > self.max_queue:
            raise QueueFullError(f"{self.queue_depth} inputs are already waiting (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        request = next(self._requests)
        items = [_Item(run, payload, length, loop.create_future(), request)
                 for payload, length in zip(payloads, lengths)]
        for item in items:
            self._queue.put_nowait(item)
        try:
            return _raise_first(list(await asyncio.gather(*(item.future for item in items))))
        finally:
            # On cancellation (the client went away) its items are skipped if they have not been sent to run.
            for item in items:
                item.future.cancel()

    async def _collect_forever(self) -> None:
        while True:
            await self._slots.acquire()
            items = await self._collect()
            groups: dict[Hashable, list[_Item]] = {}
            for item in items:
                if not item.future.done():
                    groups.setdefault(item.run, []).append(item)
            batches = []
            for group in groups.values():
                group.sort(key=lambda item: item.length)
                batches += [group[start:start + self.max_batch_size]
                            for start in range(0, len(group), self.max_batch_size)]
            task = asyncio.create_task(self._run_all(batches))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _run_all(self, batches: list[list[_Item]]) -> None:
        for batch in batches:
            await self._run(batch)

    async def _collect(self) -> list[_Item]:
        first = await self._queue.get()
        items = [first]
        deadline = first.arrived + (self.max_wait if self._company else 0.0)
        while len(items) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                items.append(self._queue.get_nowait() if not self._queue.empty()
                             else await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                break
        limit = self.max_batch_size * DRAIN_BATCHES
        items += [self._queue.get_nowait() for _ in itertools.takewhile(
            lambda _: not self._queue.empty(), range(limit - len(items)))]
        self._company = len({item.request for item in items}) > 1
        return items

    async def _run(self, batch: list[_Item]) -> None:
        batch = [item for item in batch if not item.future.done()]
        if not batch:
            return
        call = asyncio.ensure_future(self.runner.run_batch(batch[0].run, [item.payload for item in batch]))

        def client_gone(_) -> None:  # once every client of the batch has gone, the model need not run it
            if all(item.future.cancelled() for item in batch):
                call.cancel()

        for item in batch:
            item.future.add_done_callback(client_gone)
        try:
            results, size = await call
        except asyncio.CancelledError:
            if call.cancelled() and not asyncio.current_task().cancelling():
                return
            raise
        except Exception as e:
            if len(batch) == 1:
                results, size = [e], 0
            else:  # one bad input must not fail the others: run them one by one
                for item in batch:
                    await self._run([item])
                return
        if size:  # 0 when the batch joined a model call that another batch led
            self.metrics.observe_batch(size)
        for item, result in zip(batch, results):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)


def _raise_first(results: list) -> list:
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results

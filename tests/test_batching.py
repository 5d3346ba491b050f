"""The dynamic batcher alone (no HTTP): a lone client waits for nobody, concurrent requests still
share model calls, and a failing input fails only its own request. And the inference process alone:
batches that waited for it run as one model call, and one that fails runs apart."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from bertforge.cli.serve import serve
from bertforge.server.batching import Batcher
from bertforge.server.inference import InferenceProcess, InferenceThread
from bertforge.server.limits import ServerSettings
from bertforge.server.metrics import Metrics

LONG_WAIT_MS = 120_000  # far longer than any test may take: a request that waited for it would time out


class Recorder:
    """A batched function that records the batches it was given; `hold` keeps it busy until released."""

    def __init__(self):
        self.batches: list[list] = []
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()

    def __call__(self, models: dict, payloads: list) -> list:
        self.started.set()
        self.hold.wait(60)
        self.batches.append(list(payloads))
        return [ValueError(f"bad {p}") if p == "bad" else p.upper() for p in payloads]


def run(coroutine_factory, **batcher_options):
    async def main():
        batcher = Batcher(Metrics(), InferenceThread({}), **batcher_options)
        await batcher.start()
        try:
            return await asyncio.wait_for(coroutine_factory(batcher), 30)
        finally:
            await batcher.stop()
    return asyncio.run(main())


async def behind_a_busy_call(batcher, recorder: Recorder, first: str, rest: tuple[str, ...]):
    """Submits `first`, then each of `rest` as a request of its own while the model holds first's call; then
    lets the call finish. The requests' futures: (first's, [rest's])."""
    recorder.hold.clear()
    busy = asyncio.ensure_future(batcher.submit(recorder, [first], [len(first)]))
    await asyncio.to_thread(recorder.started.wait, 30)
    waiting = [asyncio.ensure_future(batcher.submit(recorder, [text], [len(text)])) for text in rest]
    await asyncio.sleep(0.05)
    recorder.hold.set()
    return busy, waiting


def test_a_lone_client_does_not_wait_for_company():
    recorder = Recorder()

    async def lone_client(batcher):
        return [await batcher.submit(recorder, [f"text {i}"], [6]) for i in range(3)]

    # With a two-minute window, each request answered inside the 30 s limit proves nobody waited for it.
    assert run(lone_client, max_wait_ms=LONG_WAIT_MS) == [["TEXT 0"], ["TEXT 1"], ["TEXT 2"]]
    assert recorder.batches == [["text 0"], ["text 1"], ["text 2"]]


def test_requests_queued_together_share_a_call_and_company_turns_the_wait_on():
    recorder = Recorder()

    async def clients(batcher):
        # the first request occupies the model while three more arrive: they are collected together when it is free
        first, rest = await behind_a_busy_call(batcher, recorder, "a", ("b", "c", "d"))
        answers = [await first] + [await r for r in rest]
        # That collection held three requests, so the next one waits for company (the batch closes
        # when the third request arrives, well inside the window).
        later = []
        for text in ("e", "f", "g"):
            later.append(asyncio.ensure_future(batcher.submit(recorder, [text], [1])))
            await asyncio.sleep(0.05)
        return answers + [await r for r in later]

    answers = run(clients, max_wait_ms=LONG_WAIT_MS, max_batch_size=3)
    assert answers == [["A"], ["B"], ["C"], ["D"], ["E"], ["F"], ["G"]]
    assert recorder.batches == [["a"], ["b", "c", "d"], ["e", "f", "g"]]


def test_without_a_wait_requests_that_queued_while_the_model_was_busy_share_a_call():
    recorder = Recorder()

    async def clients(batcher):
        first, rest = await behind_a_busy_call(batcher, recorder, "a", ("b", "c", "d"))
        return [await first] + [await r for r in rest]

    defaults = ServerSettings()
    assert defaults.max_wait_ms == 0  # the server's default, as `serve` gives it
    assert next(p for p in serve.params if p.name == "max_wait_ms").default == defaults.max_wait_ms
    assert run(clients, max_wait_ms=defaults.max_wait_ms) == [["A"], ["B"], ["C"], ["D"]]
    assert recorder.batches == [["a"], ["b", "c", "d"]]


def test_a_bad_input_fails_only_its_own_request():
    recorder = Recorder()

    async def clients(batcher):
        busy, (good, bad) = await behind_a_busy_call(batcher, recorder, "x", ("good", "bad"))
        await busy
        with pytest.raises(ValueError, match="bad bad"):
            await bad
        return await good

    assert run(clients, max_wait_ms=1) == ["GOOD"]


def shout(models: dict, payloads: list) -> list:
    """A batched call for the inference process: each answer says how many inputs its call had."""
    if "bad" in payloads:
        raise ValueError("bad input")
    return [(p.upper(), len(payloads)) for p in payloads]


def whisper(models: dict, payloads: list) -> list:
    return [(p.lower(), len(payloads)) for p in payloads]


def nap(models: dict, seconds: float) -> str:
    time.sleep(seconds)
    return "rested"


def touch(models: dict, paths: list) -> list:
    for path in paths:
        open(path, "w").close()
    return paths


def test_a_batch_whose_client_has_gone_is_dropped_by_the_inference_process(tmp_path):
    """Collections go to the child as they come; one whose every client has gone before the child
    takes it must not run (a client that times out and retries would otherwise multiply the work)."""
    gone, kept = str(tmp_path / "gone"), str(tmp_path / "kept")

    async def main():
        runner = InferenceProcess({}, threads=1, max_batch_size=4)
        batcher = Batcher(Metrics(), runner, max_batch_size=4, max_wait_ms=0)
        await batcher.start()  # and the runner
        try:
            busy = asyncio.ensure_future(batcher.call(nap, 1.0))
            await asyncio.sleep(0.2)
            abandoned = asyncio.ensure_future(batcher.submit(touch, [gone], [1]))
            await asyncio.sleep(0.2)  # sent: it waits in the child's inbox behind the nap
            abandoned.cancel()
            assert await busy == "rested"
            return await batcher.submit(touch, [kept], [1])
        finally:
            await batcher.stop()

    assert asyncio.run(asyncio.wait_for(main(), 60)) == [kept]
    assert os.path.exists(kept) and not os.path.exists(gone)


def test_the_inference_process_runs_batches_that_waited_for_it_as_one_call():
    async def main():
        runner = InferenceProcess({}, threads=1, max_batch_size=4)
        await runner.start()
        try:
            async def while_busy(*batches):
                # sent in this order while the child sleeps, so all of them wait in its inbox together
                busy = asyncio.ensure_future(runner.run(nap, 1.0))
                await asyncio.sleep(0.2)
                answers = [asyncio.ensure_future(runner.run_batch(call, payloads)) for call, payloads in batches]
                assert await busy == "rested"
                return await asyncio.gather(*answers, return_exceptions=True)

            merged = await while_busy((shout, ["a", "b"]), (whisper, ["X"]), (shout, ["c"]), (shout, ["d", "e"]))
            failed = await while_busy((shout, ["f"]), (shout, ["bad"]), (shout, ["g"]))
            return merged, failed
        finally:
            await runner.stop()

    merged, failed = asyncio.run(asyncio.wait_for(main(), 60))
    # a, b and c in one call of 3 inputs, led by the first batch; d and e would pass max_batch_size
    assert merged == [([("A", 3), ("B", 3)], 3), ([("x", 1)], 1), ([("C", 3)], 0), ([("D", 2), ("E", 2)], 2)]
    # the joint call fails, so each batch runs on its own, and only the bad one fails
    assert failed[0] == ([("F", 1)], 1) and failed[2] == ([("G", 1)], 1)
    assert isinstance(failed[1], ValueError) and str(failed[1]) == "bad input"

"""The serving bench's breakdown, after its load test: what the model alone costs per sentence by
batch size (in arrival order and sorted by length), the bound a server without a model sets, and
what sharing the GIL with an event loop costs a model on a thread. `bench/serve.py` prints it."""

from __future__ import annotations

import json
import statistics
import time


def served_model():
    """The servers' model, loaded in this process (after the load test) on one thread."""
    import torch

    from bertforge.model import default_model_path
    from bertforge.server import load_served_model

    torch.set_num_threads(1)
    return load_served_model("minilm", default_model_path())


def model_cpu_cost(model, sentences: list[str], sizes=(1, 8, 16, 32), texts: int = 320,
                   by_length: bool = False) -> dict[int, float]:
    """CPU milliseconds per sentence for the embedding call alone, one thread, by batch size: the
    most dynamic batching can save on a CPU. Every size runs over the same `texts` sentences, cut in
    order into batches (as a server's arrivals would be), for at least 3 s; `by_length`: sorted by token
    count first, as the offline pipeline sorts all its texts, which a server cannot do with arrivals."""
    pool = sentences[:texts]
    if by_length:
        pool = sorted(pool, key=lambda text: len(model.tokenizer.encode(text)))
    costs = {}
    for size in sizes:
        batches = [pool[start:start + size] for start in range(0, len(pool) - size + 1, size)]
        done, started = 0, time.process_time()
        while time.process_time() - started < 3:
            for batch in batches:
                model.run_embeddings(batch)
            done += len(batches) * size
        costs[size] = 1000 * (time.process_time() - started) / done
    return costs


def model_beside_python(model, sentences: list[str], batches: int = 10) -> tuple[float, float]:
    """Wall ms per 32-sentence embedding call on one thread, alone and while another thread of this
    process runs Python (JSON in and out, as a busy event loop does): in the server, the event loop
    and the inference thread share one GIL, and torch takes it back between operations."""
    import threading

    batch = sentences[:32]
    model.run_embeddings(batch)

    def timed() -> float:
        started = time.perf_counter()
        for _ in range(batches):
            model.run_embeddings(batch)
        return 1000 * (time.perf_counter() - started) / batches

    alone, stop = timed(), threading.Event()

    def event_loop_like() -> None:
        request = {"input": batch[0], "encoding_format": "float"}
        while not stop.is_set():
            json.loads(json.dumps(request))

    busy = threading.Thread(target=event_loop_like)
    busy.start()
    try:
        beside = timed()
    finally:
        stop.set()
        busy.join()
    return alone, beside


def print_model_breakdown(sentences: list[str], top: int, floor_cpu_ms: float) -> None:
    """`floor_cpu_ms`: the server's CPU per /v1/tokenize request at `top` clients (no model)."""
    model = served_model()
    costs = model_cpu_cost(model, sentences)
    print("model alone, 1 thread, CPU ms per sentence by batch size: "
          + ", ".join(f"{size}: {ms:.1f}" for size, ms in costs.items())
          + f" (batching saves at most {costs[1] / min(costs.values()):.2f}x of the model's work)")
    # Orders take turns over 3 rounds (one 3-second pass varies by ±5%), the median of each counts.
    turns = [[model_cpu_cost(model, sentences, sizes=(16, 32), by_length=sort) for sort in (False, True)]
             for _ in range(3)]
    arrival, by_length = ({size: statistics.median(turn[i][size] for turn in turns) for size in (16, 32)}
                          for i in (0, 1))
    print("the same texts in arrival order / sorted by length first (as the offline pipeline sorts them), CPU ms "
          "per sentence, median of 3 rounds: " + ", ".join(
              f"{size}: {arrival[size]:.2f} / {by_length[size]:.2f} (sorting saves {1 - by_length[size] / arrival[size]:.1%})"
              for size in (16, 32)))
    model_ms = min(costs.values())
    print(f"the server without a model (/v1/tokenize, {top} clients): {floor_cpu_ms:.2f} CPU ms per request; "
          f"with the model's {model_ms:.1f} ms per sentence, a server whose event loop and model share one core "
          f"reaches at most {model_ms / (model_ms + floor_cpu_ms):.2f}x the offline pipeline on one-sentence "
          "requests")
    alone, beside = model_beside_python(model, sentences)
    print(f"the model on a thread: {alone:.0f} ms per 32-sentence call alone, {beside:.0f} ms while another thread "
          f"runs Python ({beside / alone:.1f}x): what sharing the GIL with the event loop costs (--inference thread)")

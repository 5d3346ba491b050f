"""Server metrics in the Prometheus text exposition format (version 0.0.4).

Four families are all the server needs, so they are written here rather than pulling in a
client library: requests by endpoint and status, request latency and batch size histograms,
and the queue depth read at scrape time.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Callable

METHODS = ("GET", "POST")  # every other method is counted as "other": a client cannot grow the label set
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def label(value: object) -> str:
    """A label value escaped as the exposition format requires (backslash, double quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += value

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {count}'
               for bound, count in zip(self.buckets, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        suffix = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{suffix} {self.sum:.6f}", f"{name}_count{suffix} {self.total}"]
        return out


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.cancelled = 0
        self.queue_depth: Callable[[], int] = lambda: 0

    def observe_request(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        with self._lock:
            self.requests[(method, endpoint, status)] += 1
            self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, size: int) -> None:
        with self._lock:
            self.batch_size.observe(size)

    def observe_cancelled(self) -> None:
        with self._lock:
            self.cancelled += 1

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP bertforge_requests_total HTTP requests by endpoint and status code.",
                     "# TYPE bertforge_requests_total counter"]
            lines += [f'bertforge_requests_total{{method="{label(m)}",endpoint="{label(e)}",status="{s}"}} {n}'
                      for (m, e, s), n in sorted(self.requests.items())]
            lines += ["# HELP bertforge_request_duration_seconds Time from request to response.",
                      "# TYPE bertforge_request_duration_seconds histogram"]
            for endpoint, histogram in sorted(self.latency.items()):
                lines += histogram.lines("bertforge_request_duration_seconds", f'endpoint="{label(endpoint)}"')
            lines += ["# HELP bertforge_batch_size Inputs per model call (micro-batch).",
                      "# TYPE bertforge_batch_size histogram"]
            lines += self.batch_size.lines("bertforge_batch_size")
            lines += ["# HELP bertforge_requests_cancelled_total Requests whose client went away before the answer.",
                      "# TYPE bertforge_requests_cancelled_total counter",
                      f"bertforge_requests_cancelled_total {self.cancelled}"]
        lines += ["# HELP bertforge_queue_depth Inputs waiting for the model.",
                  "# TYPE bertforge_queue_depth gauge",
                  f"bertforge_queue_depth {self.queue_depth()}"]
        return "\n".join(lines) + "\n"

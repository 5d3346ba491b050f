"""HTTP helpers shared by the server tests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


def call(url: str, body=None, raw: bytes | None = None, headers: dict | None = None, method: str | None = None):
    """(status, parsed JSON or text) of one HTTP request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, payload, kind = response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, payload, kind = e.code, e.read(), e.headers.get("content-type", "")
    return status, json.loads(payload) if "json" in kind else payload.decode()


def metric(url: str, name: str) -> float:
    text = call(url + "/metrics")[1]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def wait_for(condition, what: str, seconds: float = 30) -> None:
    """Poll until `condition()` holds; fail after `seconds` (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)

"""Load test of `bertforge serve`: dynamic batching against batching off and against the offline
pipeline, in the same run.

Starts two servers (MiniLM, /v1/embeddings) as subprocesses on free loopback ports, one with
dynamic batching and one with --no-batching, and sends them in turn a fixed number of
one-sentence requests from 1, 8 and 32 concurrent clients (threads of this process, keep-alive
connections). Sentences are real lines of the Gutenberg corpus. Prints requests/s, p50/p99
latency, errors, server CPU time per request (and the clients'), the two busiest server threads'
share of a core (the model's and the event loop's), the server's peak memory (VmHWM) per setting,
and the throughput ratio batching / off. The server's figures cover its inference process too
(`--inference process`, the default; `--inference thread` runs the models on a thread of the
server's process instead). `--compare-inference` adds a server batching with the other
`--inference`, and `--compare-max-wait MS` one batching with that collector wait, each taking turns with
the two others and printed beside them (a setting compared in one run meets the same machine); each
server's start-up time and memory, each level's mean batch (from the server's /metrics) and the
host's steal are printed too. In each round of the busiest level, after the servers' turns (they
idle meanwhile), the same texts its clients sent go through the sentence-embedding pipeline in this
process (the servers' --threads, batches of --max-batch-size): the server's mean throughput at that
level over the pipeline's mean is what serving costs on top of the model. The busiest level's clients also
send their texts to /v1/tokenize, which runs no model: the server's own CPU per request (HTTP,
validation, the answer), which bounds the ratio to the offline pipeline when the server has one core.
Last, the model alone (`serve_breakdown.py`): its CPU per sentence by batch size, in arrival order and sorted,
and its wall time per call beside a thread running Python (what sharing the GIL costs the inference thread).

    .venv/bin/python bench/serve.py [--requests-per-client 25] [--concurrency 1 8 32] [--encoding float|base64]
                                    [--inference process|thread] [--compare-inference] [--compare-max-wait MS]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time

from bertforge.server.limits import ServerSettings
from locations import REPO, corpus_books
from processes import cpu_ticks, peak_memory_mb, stolen_share, thread_cpu_seconds, tree_cpu_seconds
from serve_breakdown import print_model_breakdown

WHERE = {"process": "in a child process", "thread": "on a thread of the server"}


def corpus_sentences(limit: int) -> list[str]:
    """Lines of 40-300 characters from the corpus (typical embedding inputs)."""
    sentences = []
    for book in corpus_books():
        for line in book.splitlines():
            line = line.strip()
            if 40 <= len(line) <= 300:
                sentences.append(line)
                if len(sentences) == limit:
                    return sentences
    return sentences


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, batching: bool, max_batch_size: int, max_wait_ms: float,
                 threads: int | None, inference: str) -> subprocess.Popen:
    command = [str(REPO / ".venv" / "bin" / "bertforge"), "serve", "--port", str(port), "--log-level", "warning",
               "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms), "--inference", inference]
    if threads is not None:
        command += ["--threads", str(threads)]
    if not batching:
        command.append("--no-batching")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start within 120 s")


def busiest_threads(before: dict[str, float], after: dict[str, float], wall: float) -> list[float]:
    """The two busiest server threads' share of one core over a load level: the one running the
    model and the event loop. Neither near 100% means the server waits, not computes."""
    shares = sorted(((after[t] - before.get(t, 0.0)) / wall for t in after), reverse=True)
    return (shares + [0.0, 0.0])[:2]


def batch_totals(port: int) -> tuple[float, float]:
    """(inputs, batches) the server has run so far, from its /metrics."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    values = {name: float(value) for name, value in (line.rsplit(" ", 1) for line in
              connection.getresponse().read().decode().splitlines() if line.startswith("bertforge_batch_size_"))}
    return values.get("bertforge_batch_size_sum", 0.0), values.get("bertforge_batch_size_count", 0.0)


def level_texts(sentences: list[str], clients: int, per_client: int) -> list[str]:
    """The texts one load level sends (client i sends its per_client texts in order)."""
    return [sentences[(index * per_client + k) % len(sentences)] for index in range(clients) for k in range(per_client)]


def check_embedding(data: bytes, encoding: str) -> bool:
    embedding = json.loads(data)["data"][0]["embedding"]
    return len(base64.b64decode(embedding) if encoding == "base64" else embedding) == (384 * 4 if encoding == "base64"
                                                                                        else 384)


def per_client_requests(asked: int, clients: int) -> int:
    """Each client's share of a level: `asked`, or more so that the level sends at least 200."""
    return max(asked, -(-200 // clients))


def run_load(port: int, sentences: list[str], clients: int, per_client: int, encoding: str,
             endpoint: str = "/v1/embeddings") -> dict:
    """One load level: each client posts its texts one request at a time. `/v1/tokenize` (no model)
    measures what the HTTP stack alone costs per request."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    embeddings = endpoint == "/v1/embeddings"

    texts = level_texts(sentences, clients, per_client)

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for text in texts[index * per_client:(index + 1) * per_client]:
            body = json.dumps({"input": text, "encoding_format": encoding} if embeddings else {"input": text})
            started = time.perf_counter()
            try:
                connection.request("POST", endpoint, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
                ok = response.status == 200 and (check_embedding(data, encoding) if embeddings
                                                 else bool(json.loads(data)["results"][0]["input_ids"]))
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                ok = False
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                errors[0] += not ok

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "rps": len(latencies) / wall,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "errors": errors[0]}


def offline_pipeline(batch_size: int, threads: int | None, warm_up: list[str]):
    """The sentence-embedding pipeline in this process, with the servers' thread count, warmed up."""
    import torch

    from bertforge.pipelines import pipeline

    if threads is not None:
        torch.set_num_threads(threads)
    embed = pipeline("sentence-embedding", batch_size=batch_size)
    embed(warm_up)
    return embed


def offline_rate(embed, texts: list[str]) -> float:
    """Texts/s of one pass of the pipeline over `texts`."""
    started = time.perf_counter()
    embed(texts)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests-per-client", type=int, default=25,
                        help="requests each client sends (at least 200 in total per level)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=ServerSettings.max_wait_ms,
                        help="the servers' --max-wait-ms [default: the server's own]")
    parser.add_argument("--threads", type=int, default=None, help="the server's --threads (default: torch's)")
    parser.add_argument("--inference", choices=["process", "thread"], default="process",
                        help="the server's --inference: the models in a child process, or on a thread of the server")
    parser.add_argument("--compare-inference", action="store_true",
                        help="also run a batching server with the other --inference, taking turns with the two others")
    parser.add_argument("--compare-max-wait", type=float, default=None, metavar="MS",
                        help="also run a batching server with this --max-wait-ms, taking turns with the others")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each setting (alternating the servers)")
    parser.add_argument("--encoding", choices=["float", "base64"], default="float",
                        help="the requests' encoding_format (OpenAI's Python client sends base64)")
    args = parser.parse_args()

    sentences = corpus_sentences(2000)
    print(f"# bench/serve.py: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# {len(sentences)} corpus lines of 40-300 characters, one per request to /v1/embeddings (MiniLM-L6); "
          f"max batch {args.max_batch_size}, max wait {args.max_wait_ms} ms, server threads "
          f"{args.threads or 'torch default'}, models {WHERE[args.inference]}")
    print(f"# load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (other work on this machine "
          "slows every figure)")
    # The servers run side by side and take turns, level by level, so that the load other work puts
    # on this machine falls on all alike; each setting runs `--rounds` times.
    other = "thread" if args.inference == "process" else "process"
    settings = {"batching": (True, args.inference, args.max_wait_ms), "off": (False, args.inference, args.max_wait_ms)}
    compared = {}  # label: (its setting, the default batching server's), printed side by side at the end
    if args.compare_inference:
        settings[f"on {other}"] = (True, other, args.max_wait_ms)
        compared[f"on {other}"] = (f"models {WHERE[other]}", f"models {WHERE[args.inference]}")
    if args.compare_max_wait is not None:
        waited = f"wait {args.compare_max_wait:g}"
        settings[waited] = (True, args.inference, args.compare_max_wait)
        compared[waited] = (f"max wait {args.compare_max_wait:g} ms", f"max wait {args.max_wait_ms:g} ms")
    servers, stolen_before = {}, cpu_ticks()
    try:
        for label, (batching, inference, max_wait_ms) in settings.items():
            port, started = free_port(), time.perf_counter()
            server = start_server(port, batching, args.max_batch_size, max_wait_ms, args.threads, inference)
            print(f"# {label} server (models {WHERE[inference]}, max wait {max_wait_ms:g} ms): answering /health "
                  f"{time.perf_counter() - started:.1f} s after launch, {peak_memory_mb(server.pid):.0f} MB", flush=True)
            servers[label] = (port, server)
            run_load(port, sentences, 4, 5, args.encoding)  # warm-up
        runs: dict[tuple[str, int], list[dict]] = {}
        top, lone = max(args.concurrency), min(args.concurrency)
        # The offline pipeline takes its turn after the servers' in each round of the busiest level
        # (the servers idle meanwhile), so that it meets the same machine as they do.
        embed, offline_rounds = offline_pipeline(args.max_batch_size, args.threads, sentences[:64]), []
        for clients in args.concurrency:
            per_client = per_client_requests(args.requests_per_client, clients)
            for round_ in range(args.rounds):
                # every other round in reverse order, so that no server always runs just after another
                for label, (port, server) in list(servers.items())[::-1 if round_ % 2 else 1]:
                    cpu_before, client_cpu_before = tree_cpu_seconds(server.pid), time.process_time()
                    threads_before, batches_before = thread_cpu_seconds(server.pid), batch_totals(port)
                    result = run_load(port, sentences, clients, per_client, args.encoding)
                    result["threads"] = busiest_threads(threads_before, thread_cpu_seconds(server.pid),
                                                        result["requests"] / result["rps"])  # the level's wall time
                    result["cpu_ms"] = 1000 * (tree_cpu_seconds(server.pid) - cpu_before) / result["requests"]
                    result["client_cpu_ms"] = 1000 * (time.process_time() - client_cpu_before) / result["requests"]
                    result["peak_mb"] = peak_memory_mb(server.pid)
                    (inputs, batches), (inputs_before, count_before) = batch_totals(port), batches_before
                    result["mean_batch"] = (inputs - inputs_before) / max(1.0, batches - count_before)
                    runs.setdefault((label, clients), []).append(result)
                    print(f"{label:9} clients={clients:3d} "
                          f"requests={result['requests']:5d} {result['rps']:7.1f} req/s  "
                          f"p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms  "
                          f"server CPU {result['cpu_ms']:5.1f} ms/request (clients {result['client_cpu_ms']:4.1f}), "
                          f"busiest threads {result['threads'][0]:.0%} / {result['threads'][1]:.0%} of a core  "
                          f"mean batch {result['mean_batch']:.1f}  "
                          f"errors {result['errors']}  "
                          f"peak server memory {result['peak_mb']:.0f} MB", flush=True)
                if clients == top:
                    offline_rounds.append(offline_rate(embed, level_texts(sentences, top, per_client)))
                    print(f"offline   texts={top * per_client:5d} {offline_rounds[-1]:7.1f} texts/s", flush=True)
        # The same texts to /v1/tokenize: the HTTP stack, validation and a (small) answer with no model.
        port, server = servers["batching"]
        cpu_before = tree_cpu_seconds(server.pid)
        # ten times the level's requests: each takes about a millisecond, and CPU time is counted in ticks
        floor = run_load(port, sentences, top, 10 * per_client_requests(args.requests_per_client, top),
                         args.encoding, "/v1/tokenize")
        floor["cpu_ms"] = 1000 * (tree_cpu_seconds(server.pid) - cpu_before) / floor["requests"]
        print(f"tokenize  clients={top:3d} requests={floor['requests']:5d} {floor['rps']:7.1f} req/s  "
              f"server CPU {floor['cpu_ms']:5.2f} ms/request  errors {floor['errors']}", flush=True)
    finally:
        for _, server in servers.values():
            server.terminate()
            server.wait(30)
    # per setting: the mean throughput over rounds, the worst p50/p99, all errors
    results = {key: {"rps": statistics.mean(r["rps"] for r in rs), "p50_ms": max(r["p50_ms"] for r in rs),
                     "p99_ms": max(r["p99_ms"] for r in rs), "errors": sum(r["errors"] for r in rs),
                     "cpu_ms": statistics.mean(r["cpu_ms"] for r in rs), "peak_mb": max(r["peak_mb"] for r in rs),
                     "mean_batch": statistics.mean(r["mean_batch"] for r in rs)}
               for key, rs in runs.items()}

    print("\n| clients | batching req/s | off req/s | ratio | batching p50 / p99 ms | off p50 / p99 ms | "
          "server CPU ms/request (batching / off) | errors | peak MB (batching / off) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for clients in args.concurrency:
        on, off = results[("batching", clients)], results[("off", clients)]
        print(f"| {clients} | {on['rps']:.1f} | {off['rps']:.1f} | {on['rps'] / off['rps']:.2f}x | "
              f"{on['p50_ms']:.0f} / {on['p99_ms']:.0f} | {off['p50_ms']:.0f} / {off['p99_ms']:.0f} | "
              f"{on['cpu_ms']:.1f} / {off['cpu_ms']:.1f} | {on['errors'] + off['errors']} | "
              f"{on['peak_mb']:.0f} / {off['peak_mb']:.0f} |")
    print(f"\n# load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; the host took "
          f"{stolen_share(stolen_before):.0%} of this machine's CPU time during the load test (steal)")
    offline = statistics.mean(offline_rounds)
    served = results[("batching", top)]
    print(f"offline sentence-embedding pipeline on the texts the {top} clients sent, batch {args.max_batch_size}: "
          f"{offline:.1f} texts/s, mean of {len(offline_rounds)} rounds (best {max(offline_rounds):.1f}: the server "
          f"is {served['rps'] / max(offline_rounds):.2f}x that)")
    print(f"{top} clients: server {served['rps']:.1f} req/s = {served['rps'] / offline:.2f}x the offline pipeline "
          f"(goal >= 0.9x: {'met' if served['rps'] >= 0.9 * offline else 'NOT met'}), "
          f"p99 {served['p99_ms']:.0f} ms (goal < 1 s: {'met' if served['p99_ms'] < 1000 else 'NOT met'}); "
          f"batching/off throughput {served['rps'] / results[('off', top)]['rps']:.2f}x")
    for label, (setting, default_setting) in compared.items():
        for clients in args.concurrency:
            server, default = results[(label, clients)], results[("batching", clients)]
            print(f"{clients} clients, {setting}: {server['rps']:.1f} req/s, {server['rps'] / offline:.2f}x the "
                  f"offline pipeline ({default_setting}: {default['rps'] / server['rps']:.2f}x that), p50 / p99 "
                  f"{server['p50_ms']:.0f} / {server['p99_ms']:.0f} ms, server CPU {server['cpu_ms']:.1f} ms/request, "
                  f"mean batch {server['mean_batch']:.1f} ({default_setting}: {default['mean_batch']:.1f}), "
                  f"peak {server['peak_mb']:.0f} MB")
    on, off = results[("batching", lone)], results[("off", lone)]
    print(f"{lone} client(s): p50 latency batching {on['p50_ms']:.1f} ms / off {off['p50_ms']:.1f} ms = "
          f"{on['p50_ms'] / off['p50_ms']:.2f}x (goal <= 1.1x: {'met' if on['p50_ms'] <= 1.1 * off['p50_ms'] else 'NOT met'})")
    print_model_breakdown(sentences, top, floor["cpu_ms"])
    errors = sum(r["errors"] for r in results.values()) + floor["errors"]
    if errors:
        sys.exit(f"{errors} requests failed")


if __name__ == "__main__":
    main()

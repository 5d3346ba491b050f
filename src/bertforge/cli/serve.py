"""`bertforge serve`: the loaded models over HTTP, with the web page at `/`."""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from pathlib import Path

import click

from bertforge.errors import ConfigError


def parse_model_option(value: str) -> tuple[str, Path]:
    """"NAME=DIR" or "DIR", named after the model's folder: "." and a file in it ("DIR/config.json") too."""
    from bertforge.errors import CheckpointError
    from bertforge.model.checkpoint import checkpoint_location

    name, sep, directory = value.partition("=")
    if not sep:
        try:
            name = checkpoint_location(value)[0].resolve().name
        except CheckpointError:  # not there: loading says so, after the start-up checks
            name = Path(value).name
        directory = value
    if not name or not directory:
        raise ConfigError(f"--model {value!r}: expected DIR or NAME=DIR")
    return name, Path(directory)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the models load (minutes, for large ones): a port in use or an
    address this machine does not have fails at once, naming the option."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: not an address to listen on ({e.strerror})") from None
    listening = socket.socket(family, kind, protocol)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart at once
    try:
        listening.bind(address)
    except OSError as e:
        listening.close()
        hint = "; another server listens there, choose another --port" if e.errno == errno.EADDRINUSE else ""
        raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror}){hint}") from None
    return listening


def bundled_models() -> list[tuple[str, Path]]:
    from bertforge.model import default_model_path
    from bertforge.paths import default_pretraining_model_path
    from bertforge.pipelines.question_answering import default_qa_model_path
    from bertforge.pipelines.text_classification import default_classification_model_path
    from bertforge.pipelines.token_classification import default_token_classification_model_path

    return [("all-MiniLM-L6-v2", default_model_path())] + [
        (path.name, path) for path in (default_pretraining_model_path(), default_qa_model_path(),
                                       default_classification_model_path(), default_token_classification_model_path())]


@click.command()
@click.option("--model", "model_options", multiple=True, metavar="[NAME=]DIR",
              help="A model directory, optionally named (repeatable). Default: the bundled models "
                   "(all-MiniLM-L6-v2 for embeddings, bertforge's pre-trained model for fill-mask and "
                   "next-sentence, its SQuAD model for QA, its distilled SST-2 model for sentiment and its "
                   "distilled CoNLL-2003 model for named entities).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (loopback unless told otherwise).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--device", default="cpu", show_default=True, help="torch device for the models, e.g. cuda.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads for one model call (default: torch's choice, one per core).")
@click.option("--max-batch-size", default=32, show_default=True, type=click.IntRange(1, 1024),
              help="Most inputs run through a model together.")
@click.option("--max-wait-ms", default=0.0, show_default=True, type=click.FloatRange(0, 10_000),
              help="How long the first queued input waits for others to join its batch (0: batches hold what "
                   "queued while the model was busy).")
@click.option("--no-batching", is_flag=True, help="Run each request on its own (no dynamic batching).")
@click.option("--inference", default="process", show_default=True, type=click.Choice(["process", "thread"]),
              help="Where the models run: a child process of their own, beside the HTTP event loop instead of "
                   "sharing its GIL (each model is loaded twice), or a thread of the server's process.")
@click.option("--api-key", envvar="BERTFORGE_API_KEY", default=None,
              help="Require this key (Authorization: Bearer KEY) on every endpoint but /health and the page. "
                   "Also read from BERTFORGE_API_KEY.")
@click.option("--max-texts", default=64, show_default=True, type=click.IntRange(1), help="Most texts in one request.")
@click.option("--max-chars", default=5000, show_default=True, type=click.IntRange(1),
              help="Most characters in one text.")
@click.option("--max-masks", default=20, show_default=True, type=click.IntRange(1),
              help="Most [MASK] tokens in one fill-mask text.")
@click.option("--max-results", default=1000, show_default=True, type=click.IntRange(1),
              help="Most fill-mask candidates in one answer (masks of all its texts x top_k).")
@click.option("--max-response-mb", default=32, show_default=True, type=click.IntRange(1),
              help="Largest answer, in MiB of JSON; a request whose answer would be larger gets a 413.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(model_options, host, port, device, threads, max_batch_size, max_wait_ms, no_batching, inference, api_key,
          max_texts, max_chars, max_masks, max_results, max_response_mb, log_level):
    """Serve models over HTTP: OpenAI-style /v1/embeddings, fill-mask, next-sentence, classify, ner, qa,
    attention and tokenize, with /health, /metrics, OpenAPI docs at /docs and a web page at /.

    \b
    Examples:
      bertforge serve
      bertforge serve --model qa=qa-model --model sst2=sst2-model --port 8080
    """
    import torch
    import uvicorn

    from bertforge.server import ServerSettings, create_app, load_served_model

    # Settings first: a bad API key is refused before minutes of model loading.
    settings = ServerSettings(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, batching=not no_batching,
                              inference=inference, api_key=api_key or None, max_texts=max_texts, max_chars=max_chars,
                              max_masks=max_masks, max_results=max_results,
                              max_response_bytes=max_response_mb * 2**20)
    if not is_loopback(host) and settings.api_key is None:
        click.secho(f"WARNING: serving on {host}, reachable from other machines, WITHOUT an API key: anyone who "
                    f"can reach port {port} can use the models. Pass --api-key (or set BERTFORGE_API_KEY).",
                    err=True, fg="red", bold=True)
    if threads is not None:
        torch.set_num_threads(threads)
    named = [parse_model_option(value) for value in model_options] or bundled_models()
    names = [name for name, _ in named]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"--model: name(s) {', '.join(duplicates)} given twice; use NAME=DIR to tell them apart")
    with listen(host, port) as listening:
        models = []
        for name, directory in named:
            model = load_served_model(name, directory, device)
            click.echo(f"{name}: {model.architecture} from {directory} -> {', '.join(model.tasks)}", err=True)
            models.append(model)
        server = uvicorn.Server(uvicorn.Config(create_app(models, settings), log_level=log_level))
        bound_host, bound_port = listening.getsockname()[:2]
        click.echo(f"serving on http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port} "
                   f"(Ctrl-C stops)", err=True)
        try:
            server.run(sockets=[listening])
        except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once it has shut down cleanly
            click.echo("stopped", err=True)
            sys.exit(130)
    if not server.started:  # the app's start-up failed (uvicorn has logged why)
        sys.exit(3)

"""Sentence vectors of a corpus larger than one machine, with Ray Data (`pip install 'bertforge[ray]'`).

`SentenceEmbedder` is a callable class for `ray.data.Dataset.map_batches`: Ray starts a pool of
actors, each loads the sentence-embedding pipeline once, and each batch of rows comes back as
its ids and its vectors, the vectors `bertforge.pipeline("sentence-embedding")` gives in one
process:

    import ray
    from bertforge.pipelines.ray_embed import SentenceEmbedder

    ray.init()                                   # or ray.init("auto"): join a running cluster
    rows = ray.data.read_parquet("corpus/")      # columns "id" and "text"
    vectors = rows.map_batches(SentenceEmbedder, batch_format="pyarrow", batch_size=1024,
                               fn_constructor_kwargs={"id_column": "id", "text_column": "text", "threads": 1},
                               compute=ray.data.ActorPoolStrategy(size=4), num_cpus=1)
    vectors.write_parquet("vectors/")            # columns "id" and "embedding" (a fixed-size list of floats)

Leave Ray a CPU (actors × num_cpus below the cluster's CPUs): its tasks that list, read and
write the files need one, and actors holding them all would wait for rows forever.

`embed_with_ray` is what `bertforge embed --ray` runs: the same, with the output directory
swapped in whole when every shard is written. The model directory (default: the bundled one,
which every node with bertforge has) and the output directory must be at the same path on every
node, on a file system they share. Ray itself is imported by `embed_with_ray` only.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pyarrow as pa
import torch

from bertforge.errors import BertforgeError, InputError
from bertforge.io.atomic import arrow_table, atomic_directory
from bertforge.io.readers import input_error
from bertforge.pipelines import pipeline
from bertforge.pipelines.base import DEFAULT_BATCH_SIZE
from bertforge.tokenization.basic import has_text

# Rows handed to one actor call: enough for the pipeline to sort them into length-matched
# forward passes, few enough that the pool's actors share a small input.
RAY_BATCH_ROWS = 1024
EMBEDDING_COLUMN = "embedding"
CONNECT_TIMEOUT_S = 5  # to a --ray host:port, before Ray is asked to join it


class SentenceEmbedder:
    """For `Dataset.map_batches(SentenceEmbedder, batch_format="pyarrow", fn_constructor_kwargs={...})`.

    Constructor keywords: `id_column` and `text_column` (the input's columns), the pipeline's
    `model`, `device`, `dtype`, `batch_size` (texts per forward pass), `max_length`, the
    embedding's `pooling`, `layers`, `combine`, `normalize` (as in `bertforge embed`), and
    `threads` (torch's intra-op threads per actor; give the CPUs each actor reserves).
    Each call returns a table of `id_column` and `embedding`; rows whose text is null or blank are
    dropped, as `bertforge embed` skips empty lines."""

    def __init__(self, id_column: str = "id", text_column: str = "text", model: str | Path | None = None,
                 device: str = "cpu", dtype: str = "float32", batch_size: int = DEFAULT_BATCH_SIZE,
                 max_length: int | None = None, pooling: str | None = None, layers=-1, combine: str = "sum",
                 normalize: bool | None = None, threads: int | None = None):
        if threads is not None:
            torch.set_num_threads(threads)
        self.id_column, self.text_column = id_column, text_column
        self.pipe = pipeline("sentence-embedding", model=model, device=device, dtype=dtype, batch_size=batch_size,
                             max_length=max_length)
        self.options = {"pooling": pooling, "layers": layers, "combine": combine, "normalize": normalize}

    def __call__(self, batch):
        if not isinstance(batch, pa.Table):
            raise InputError(f"SentenceEmbedder takes Arrow batches: call map_batches with batch_format='pyarrow', "
                             f"not {type(batch).__name__}")
        texts = batch.column(self.text_column).to_pylist()
        wrong = next((t for t in texts if t is not None and not isinstance(t, str)), None)
        if wrong is not None:
            raise InputError(f"column {self.text_column!r} holds {type(wrong).__name__} values, expected text")
        keep = [t is not None and has_text(t) for t in texts]
        vectors = self.pipe([t for t, k in zip(texts, keep) if k], **self.options)
        table = arrow_table({EMBEDDING_COLUMN: vectors})
        return table.add_column(0, self.id_column, batch.column(self.id_column).filter(pa.array(keep)))


def embed_with_ray(address: str, source: str | Path, output: str | Path, id_column: str, text_column: str,
                   actors: int | None = None, **embedder_options) -> tuple[int, int]:
    """Embed the Parquet file or directory `source` on the Ray cluster at `address` ("auto": the
    running one; "local": start one here for this run; "host:port" or "ray://host:port") with
    `actors` SentenceEmbedders, into the directory `output` of Parquet shards. A driver already
    connected to Ray keeps its connection. Returns (rows written, shard files).

    One CPU of the cluster is left to Ray's tasks that list, read and write the files: actors that
    held every CPU would wait forever for rows no task could read. So the actors default to one
    per other CPU (one torch thread each; one per GPU with a cuda device), and more actors than
    that share those CPUs."""
    ray = _import_ray()
    _check_source(source)
    _check_options(id_column, text_column, embedder_options)
    started = not ray.is_initialized()
    if started:
        _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except ConnectionError as e:  # no cluster at that address: a user's mistake, not a crash
            raise InputError(f"--ray {address}: no Ray cluster found ({str(e).splitlines()[0]}); start one with "
                             f"`ray start --head`, or give --ray local to start one for this run") from None
    try:
        rows = ray.data.read_parquet(str(source))
        _check_columns(rows.schema(), source, id_column, text_column)
        gpu = str(embedder_options.get("device", "cpu")).startswith("cuda")
        resources = ray.cluster_resources()
        if gpu and resources.get("GPU", 0) < 1:  # Ray would wait for one for ever
            raise InputError(f"--device {embedder_options['device']}: the Ray cluster has no GPU")
        spare_cpus = resources.get("CPU", 0) - 1
        if spare_cpus <= 0:
            raise InputError(f"--ray: the cluster has {resources.get('CPU', 0):g} CPU(s); it needs at least 2, "
                             f"one to read and write files while the others embed")
        if actors is None:
            actors = max(1, int(resources.get("GPU", 0) if gpu else spare_cpus))
        vectors = rows.select_columns([id_column, text_column]).map_batches(
            SentenceEmbedder, batch_format="pyarrow", batch_size=RAY_BATCH_ROWS,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=min(1.0, spare_cpus / actors), num_gpus=1 if gpu else 0,
            fn_constructor_kwargs={"id_column": id_column, "text_column": text_column,
                                   "threads": None if gpu else 1, **embedder_options})
        with atomic_directory(output) as build:
            try:
                vectors.write_parquet(str(build))
            except Exception as e:  # Ray wraps an actor's exception: a user mistake is shown as it was raised
                raise _bertforge_cause(e) or e from None
            return _count_rows(build)
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """A host:port that nothing answers at: Ray would retry it for minutes, printing only its retries."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # auto, local, or a spelling Ray itself judges
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise InputError(f"--ray {address}: nothing answers there ({e.strerror or e}); start a cluster with "
                         f"`ray start --head`, or give --ray local to start one for this run") from None


def _import_ray():
    try:
        import ray
        import ray.data  # Ray Data needs packages of its own (ray[data]): check they are there
    except ImportError:
        raise InputError("--ray needs Ray Data: pip install 'bertforge[ray]'") from None
    return ray


def _check_source(source: str | Path) -> None:
    """A local path must exist (a URI such as s3://bucket/corpus is left to Ray); Ray reads Parquet."""
    if "://" in str(source):
        return
    path = Path(source)
    if not path.exists():
        raise input_error(path, "no such file or directory")
    if path.is_file() and path.suffix.lower() != ".parquet":
        raise input_error(path, "--ray reads Parquet (a .parquet file or a directory of them); other tables "
                                "run without --ray")


def _check_options(id_column: str, text_column: str, embedder_options: dict) -> None:
    """Run the actors' own code once here, on the CPU: a user mistake (a model directory, a layer,
    a --max-length) then ends in its own one-line error. In an actor's constructor Ray would keep
    only its text, inside an ActorDiedError, after restarting the actor."""
    SentenceEmbedder(id_column, text_column, **{**embedder_options, "device": "cpu"})(
        pa.table({id_column: [0], text_column: ["A sentence to check the options with."]}))


def _check_columns(schema, source, id_column: str, text_column: str) -> None:
    """Before any actor starts: both columns are there, and the text column holds text."""
    names = list(schema.names)
    for column, option in ((text_column, "--column"), (id_column, "--id-column")):
        if column not in names:
            raise input_error(source, f"no column {column!r} (found: {', '.join(names)}); choose it with {option}")
    kind = schema.types[names.index(text_column)]
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
        raise input_error(source, f"column {text_column!r} holds {kind} values, expected text")


def _bertforge_cause(error: BaseException) -> BertforgeError | None:
    """The BertforgeError an actor raised, from inside the exceptions Ray wraps it in."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__module__.startswith("bertforge."):
            return error
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return None


def _count_rows(directory: Path) -> tuple[int, int]:
    import pyarrow.parquet as pq

    files = sorted(directory.glob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files), len(files)

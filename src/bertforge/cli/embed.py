"""`bertforge embed`: sentence vectors (to .npy, JSON Lines or Parquet, optionally on a Ray cluster) or
token vectors (JSON Lines)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click

from bertforge.cli.io import (check_output, input_options, model_options, pipeline_from_options, read_inputs,
                              typed, with_line_numbers, write_array, write_records)
from bertforge.errors import InputError
from bertforge.io.atomic import arrow_table, check_output_dir, resumable_directory, write_parquet
from bertforge.io.readers import input_error, read_items
from bertforge.pipelines.features import COMBINATIONS, LAYER_PRESETS, POOLINGS

FILE_SUFFIXES = (".npy", ".json", ".jsonl", ".parquet")
# Rows per Parquet shard: ~150 MB of 384-dimensional float32 vectors, a size every Parquet reader
# handles well and a work unit that spreads over many readers.
SHARD_ROWS = 100_000


def parse_layers(value: str):
    """"-1", "-4,-3,-2,-1" or a preset name (last, last-four, embeddings)."""
    if value in LAYER_PRESETS:
        return value
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise InputError(f"--layers {value!r}: give layer indices like -1 or -4,-3,-2,-1, or one of "
                         f"{', '.join(LAYER_PRESETS)}") from None


def output_kind(output: Path | None, input_path: Path | None) -> str | None:
    """None (stdout), "shards" (a directory: an existing one, or a name without a suffix), or the
    file suffix; checked now, before any work."""
    if output is None:
        return None
    if output.name.lower() in FILE_SUFFIXES:  # Python reads no suffix in ".npy": it would name a directory of shards
        raise InputError(f"--output {output}: a suffix alone; give a file name before it (vectors{output.name})")
    if output.is_dir() or not output.suffix:
        check_output_dir(output, "--output", inputs=(input_path,), holds="*.parquet")
        return "shards"
    check_output(output, FILE_SUFFIXES, inputs=(input_path,))
    return output.suffix.lower()


@click.command()
@click.argument("texts", nargs=-1)
@click.option("--level", type=click.Choice(["sentence", "word", "piece"]), default="sentence", show_default=True,
              help="One vector per text, per word (pieces averaged, with character spans) or per word piece.")
@click.option("--pooling", type=click.Choice(POOLINGS), default=None,
              help="Sentence vector: [CLS], mean over the tokens, or max. Default: the model's sentence-transformers "
                   "pooling where it has one, else mean.")
@click.option("--layers", default="-1", show_default=True,
              help="Hidden state(s): 0 = input embeddings, -1 = last; several as -4,-3,-2,-1; or last-four.")
@click.option("--combine", type=click.Choice(COMBINATIONS), default="sum", show_default=True,
              help="How several layers are combined.")
@click.option("--normalize/--no-normalize", default=None,
              help="L2-normalise the vectors. Default: off for tokens; for sentences, the model's "
                   "sentence-transformers setting where it has one, else on.")
@click.option("--id-column", default=None,
              help="Column (key) of the --input table whose values identify each output row. "
                   "Default: the line number (the row number for Parquet).")
@click.option("--shard-rows", type=click.IntRange(min=1), default=SHARD_ROWS, show_default=True,
              help="Rows per Parquet file when --output is a directory; each is kept as it is done, so the same "
                   "command, stopped, continues where it stopped.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Embed on a Ray cluster (pip install 'bertforge[ray]'): auto (the running one), local "
                   "(start one here), or host:port. Reads a Parquet --input (file or directory), needs "
                   "--id-column and an --output directory.")
@click.option("--ray-actors", type=click.IntRange(min=1), default=None,
              help="Ray actors, each with the model loaded once. Default: one per CPU of the cluster but one "
                   "(which reads and writes the files), or one per GPU.")
@model_options
@input_options()
def embed(texts, level, pooling, layers, combine, normalize, id_column, shard_rows, ray_address, ray_actors,
          input_path, column, output, **options):
    """Embed TEXTS (or the lines of --input) with a BERT model (default: the bundled all-MiniLM-L6-v2).

    Sentence vectors go to stdout as JSON Lines ({"line", "text", "embedding"}), to an --output .npy
    array (rows in input order), or to Parquet: an --output .parquet file, or a directory of
    part-NNNNN.parquet shards (--output DIR), with the line number (or the --id-column) and the
    vector on each row. Token vectors go to JSON Lines ({"text", "tokens", "spans", "vectors"}).
    Every output is written to a temporary name and moved into place when complete; shards are kept
    as each is done (in .DIR.partial), so the same command run again after a stop continues there.

    \b
    Examples:
      bertforge embed "A cat sat on the mat." "The dog slept."
      bertforge embed --input sentences.txt --output vectors.npy --batch-size 64 --dtype bfloat16
      bertforge embed --input train.tsv --column sentence --pooling cls --layers last-four --combine concat --output x.npy
      bertforge embed --input corpus.parquet --id-column id --output vectors/ --shard-rows 50000
      bertforge embed --ray auto --input /shared/corpus/ --id-column id --output /shared/vectors/
      bertforge embed --level word "He got bit by Python"
    """
    kind = output_kind(output, input_path)
    if kind in (".npy", ".parquet", "shards") and level != "sentence":
        raise InputError(f"--output {output} holds sentence vectors only; token vectors go to .json or .jsonl")
    if level != "sentence" and typed("pooling"):
        raise InputError(f"--pooling {pooling} makes one vector per text; --level {level} gives one per "
                         f"{level if level == 'word' else 'word piece'}, which nothing pools")
    chosen = parse_layers(layers)
    if ray_address is not None:
        _embed_on_ray(ray_address, ray_actors, texts, input_path, column, id_column, output, kind,
                      pooling=pooling, layers=chosen, combine=combine, normalize=normalize, **options)
        return
    if id_column is not None and input_path is None:
        raise InputError("--id-column names a column of the --input table; TEXT arguments have none")
    if id_column is None:
        items = read_inputs(texts, input_path, [column])
    else:
        items = read_items(input_path, [column], id_column)
    if kind == ".npy" and items.first_gap is not None:
        raise input_error(input_path, f"an empty {items.numbered_by}: a .npy has a row per vector and no line numbers, "
                                      f"so the rows after it would not line up with the input's; remove the empty "
                                      f"{items.numbered_by}s, or write .parquet or .jsonl, which carry each "
                                      f"{items.numbered_by}'s number", items.first_gap)
    if level == "sentence":
        pipe = pipeline_from_options("sentence-embedding", options, progress=input_path is not None)
        # the pipeline's defaults, named here so that the shards' fingerprint records what ran
        default_pooling, default_normalize = pipe.checkpoint_defaults
        settings = dict(pooling=pooling or default_pooling, layers=chosen, combine=combine,
                        normalize=default_normalize if normalize is None else normalize)
        if kind == "shards":
            _embed_to_shards(pipe, settings, items, _row_ids(items, id_column, input_path), output, shard_rows,
                             input_path)
            return
        vectors = pipe(items.values, **settings)
        if kind == ".npy":
            write_array(vectors, output)
            return
        if kind == ".parquet":
            write_parquet(output, _vector_table(_row_ids(items, id_column, input_path), vectors, input_path))
            click.echo(f"wrote {len(vectors)} vector(s) to {output}", err=True)
            return
        records = [{"text": t, "embedding": v} for t, v in zip(items.values, vectors)]
    else:
        pipe = pipeline_from_options("feature-extraction", options, progress=input_path is not None)
        features = pipe(items.values, layers=chosen, combine=combine, level=level, normalize=bool(normalize))
        records = [{"text": t, "tokens": f.tokens, "spans": [list(s) for s in f.spans], "vectors": f.vectors}
                   for t, f in zip(items.values, features)]
    if items.ids is not None:
        records = [{id_column: i, **r} for i, r in zip(items.ids, records)]
    write_records(with_line_numbers(items, records), output)


def _row_ids(items, id_column, input_path) -> tuple[str, list]:
    """What identifies each Parquet row: the --id-column's values, else the line (row) numbers, else, for
    TEXT arguments, the texts themselves."""
    if items.ids is not None:
        return id_column, items.ids
    if input_path is not None:
        return items.numbered_by, items.lines
    return "text", items.values


def _vector_table(ids: tuple[str, list], vectors, input_path):
    try:
        return arrow_table({ids[0]: ids[1], "embedding": vectors})
    except InputError as e:
        raise InputError(f"{input_path}: {e}") from None


def _embed_to_shards(pipe, settings: dict, items, ids: tuple[str, list], output: Path, shard_rows: int,
                     input_path) -> None:
    """One shard at a time into a directory that outlives an interruption (`resumable_directory`): the same
    command run again embeds only the shards it had not written, then swaps the whole directory in."""
    texts = items.values
    inputs = hashlib.sha256(ids[0].encode())
    for row in zip(ids[1], texts):
        inputs.update(json.dumps(row, default=str).encode())
    fingerprint = {"rows": len(texts), "shard_rows": shard_rows, "model": str(Path(pipe.model_path).resolve()),
                   "dtype": str(pipe.dtype), "max_length": pipe.max_length, **settings, "inputs": inputs.hexdigest()}
    count, kept, done = max(1, -(-len(texts) // shard_rows)), 0, 0
    with resumable_directory(output, fingerprint) as build:
        try:
            for shard in range(count):
                file = build / f"part-{shard:05d}.parquet"
                if file.exists():
                    kept += 1
                    continue
                rows = slice(shard * shard_rows, (shard + 1) * shard_rows)
                write_parquet(file, _vector_table((ids[0], ids[1][rows]), pipe(texts[rows], **settings), input_path))
                done += 1
        except BaseException:
            click.echo(f"stopped: {kept + done} of {count} shard(s) are kept in {build}; the same command "
                       f"continues from there", err=True)
            raise
    again = f" ({kept} kept from the interrupted run)" if kept else ""
    click.echo(f"wrote {len(texts)} vector(s) in {count} Parquet file(s) to {output}{again}", err=True)


def _embed_on_ray(address, actors, texts, input_path, column, id_column, output, kind, **embedder_options) -> None:
    if texts or input_path is None:
        raise InputError("--ray reads an --input Parquet file or directory, not TEXT arguments")
    if kind != "shards":
        raise InputError("--ray writes a directory of Parquet shards: give --output DIR")
    if id_column is None:
        raise InputError("--ray needs --id-column: rows read in parallel have no line numbers, so each must "
                         "carry an id of its own")
    if embedder_options.pop("parallel_batches") != 1:
        raise InputError("--parallel-batches runs batches side by side in one process; with --ray, "
                         "--ray-actors sets how many embed at once")
    from bertforge.pipelines.ray_embed import embed_with_ray

    rows, shards = embed_with_ray(address, input_path, output, id_column=id_column, text_column=column,
                                  actors=actors, **embedder_options)
    click.echo(f"wrote {rows} vector(s) in {shards} Parquet file(s) to {output}", err=True)

"""Parquet in and out, and embedding on a Ray cluster.

Parquet inputs are written here with pyarrow from rows the csv module reads out of the fixture
TSV files, so the reference is independent of bertforge's own TSV reader; they must give the same
examples as the TSV does. Vectors written by `bertforge embed` (one process, or a local
two-worker Ray cluster) are checked against the in-process sentence-embedding pipeline, whose
vectors are themselves checked against sentence-transformers in test_pipeline_features.py."""

from __future__ import annotations

import csv
import logging
import socket

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import fixture_data

from bertforge.cli.main import cli
from bertforge.errors import InputError
from bertforge.io.atomic import arrow_table, resumable_directory, write_parquet
from bertforge.io.datasets import read_text_examples
from bertforge.io.readers import read_items

# (fixture, text column, pair column, label column, how the csv module reads it): SST-2 has stray
# quotes inside sentences (no quoting, as the data's README says); RTE is pandas' export, with
# fields that hold a tab or a quote quoted whole.
TABLES = [("sst2", "sentence", None, "label", csv.QUOTE_NONE),
          ("rte", "sentence1", "sentence2", "label", csv.QUOTE_MINIMAL)]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def tsv_columns(path, limit: int | None = None, quoting: int = csv.QUOTE_NONE) -> dict[str, list]:
    """The columns of a fixture TSV as the csv module reads it (tab-separated, a leading
    byte-order mark dropped), integer-looking columns as integers."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        header, *rows = list(csv.reader(f, delimiter="\t", quoting=quoting))
    rows = rows[:limit]
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    return {name: [int(v) for v in values] if all(v.isdigit() for v in values) else values
            for name, values in columns.items()}


@pytest.mark.parametrize("name, text, pair, label, quoting", TABLES)
def test_parquet_table_gives_the_tsv_examples(tmp_path, name, text, pair, label, quoting):
    tsv = fixture_data(name, "train.tsv")
    columns = tsv_columns(tsv, quoting=quoting)
    pq.write_table(pa.table(columns), tmp_path / "train.parquet")
    assert isinstance(columns[label][0], int)  # typed labels read as the TSV's text
    from_tsv = read_text_examples(tsv, text, pair, label)
    from_parquet = read_text_examples(tmp_path / "train.parquet", text, pair, label)
    assert len(from_parquet) == len(columns[text]) == len(from_tsv)
    as_tuples = [(e.text, e.text_pair, e.label) for e in from_parquet]
    assert as_tuples == [(e.text, e.text_pair, e.label) for e in from_tsv]
    # The TSV's first data row is its line 2; the Parquet's is row 1.
    assert from_parquet[4].source == f"{tmp_path / 'train.parquet'}: row 5" and from_tsv[4].source.endswith(":6")


def test_parquet_items_and_ids_match_the_tsv(tmp_path, caplog):
    tsv = fixture_data("sst2", "train.tsv")
    columns = tsv_columns(tsv, limit=50)
    columns["sentence"][3] = None  # a null is an empty cell: skipped and counted
    columns["id"] = [f"s{i}" for i in range(50)]
    pq.write_table(pa.table(columns), tmp_path / "x.parquet")
    with caplog.at_level(logging.WARNING):
        items = read_items(tmp_path / "x.parquet", ["sentence"], id_column="id")
    assert "skipped 1 empty row(s)" in caplog.text
    expected = read_items(tsv, ["sentence"])
    assert items.values == expected.values[:3] + expected.values[4:50]
    assert items.numbered_by == "row" and items.lines == [n - 1 for n in expected.lines[:3] + expected.lines[4:50]]
    assert items.ids == [f"s{i}" for i in range(50) if i != 3]


@pytest.mark.parametrize("columns, read_as, message", [
    ({"text": ["a", "b"]}, ["sentence"],
     "x.parquet: row 1: no column 'sentence' (found: text); choose it with --column"),
    ({"text": [1, 2]}, ["text"], "x.parquet: row 1: column 'text' holds an int, not text"),
])
def test_parquet_errors_name_the_file_row_and_column(tmp_path, columns, read_as, message):
    pq.write_table(pa.table(columns), tmp_path / "x.parquet")
    with pytest.raises(InputError) as error:
        read_items(tmp_path / "x.parquet", read_as)
    assert str(error.value) == f"{tmp_path}/{message}"
    with pytest.raises(InputError, match="choose it with --id-column"):
        read_items(tmp_path / "x.parquet", ["text"], id_column="id")


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    (tmp_path / "x.parquet").write_text("sentence\tlabel\nhello\t1\n")
    with pytest.raises(InputError, match=r"x\.parquet: not a readable Parquet file"):
        read_text_examples(tmp_path / "x.parquet", "sentence", label_column="label")


def test_a_resumable_directory_keeps_finished_files_across_a_failure_and_replaces_the_old_whole(tmp_path, caplog):
    vectors = np.arange(12, dtype=np.float32).reshape(6, 2)
    out, partial = tmp_path / "out", tmp_path / ".out.partial"
    out.mkdir()
    (out / "part-00009.parquet").write_text("an earlier output")
    with pytest.raises(RuntimeError), resumable_directory(out, {"rows": 6}) as build:
        write_parquet(build / "part-00000.parquet", arrow_table({"line": [0, 1], "v": vectors[:2]}))
        (build / ".part-00001.parquet.x.tmp").write_text("a write cut short")
        raise RuntimeError("stopped")
    assert sorted(p.name for p in partial.iterdir()) == [".part-00001.parquet.x.tmp", "_resume.json",
                                                         "part-00000.parquet"]
    assert [p.name for p in out.iterdir()] == ["part-00009.parquet"]  # untouched until the end
    with resumable_directory(out, {"rows": 6}) as build:
        assert sorted(p.name for p in build.iterdir()) == ["_resume.json", "part-00000.parquet"]
        write_parquet(build / "part-00001.parquet", arrow_table({"line": [2, 3], "v": vectors[2:4]}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    table = pq.read_table(out)
    assert table.column("line").to_pylist() == [0, 1, 2, 3] and table.schema.field("v").type == pa.list_(pa.float32(), 2)
    # another run's leftovers are not mixed in
    with pytest.raises(RuntimeError), resumable_directory(out, {"rows": 6}) as build:
        write_parquet(build / "part-00000.parquet", arrow_table({"line": [0], "v": vectors[:1]}))
        raise RuntimeError("stopped")
    with caplog.at_level("WARNING"), resumable_directory(out, {"rows": 7}) as build:
        assert [p.name for p in build.iterdir()] == ["_resume.json"]
    assert "holds the unfinished output of another run: it is started afresh" in caplog.text


@pytest.fixture(scope="module")
def sst2_parquet(tmp_path_factory):
    """40 SST-2 sentences with ids, as one Parquet file and as a directory of four shards."""
    directory = tmp_path_factory.mktemp("sst2")
    columns = tsv_columns(fixture_data("sst2", "train.tsv"), limit=40)
    table = pa.table({"id": [f"sst2-{i}" for i in range(40)], "sentence": columns["sentence"],
                      "label": columns["label"]})
    pq.write_table(table, directory / "sst2.parquet")
    (directory / "shards").mkdir()
    for shard in range(4):
        pq.write_table(table.slice(10 * shard, 10), directory / "shards" / f"{shard}.parquet")
    return directory


@pytest.fixture(scope="module")
def reference_vectors(sst2_parquet) -> dict[str, np.ndarray]:
    from bertforge.pipelines import pipeline

    table = pq.read_table(sst2_parquet / "sst2.parquet")
    vectors = pipeline("sentence-embedding")(table.column("sentence").to_pylist())
    return dict(zip(table.column("id").to_pylist(), vectors))


def assert_same_vectors(table: pa.Table, id_column: str, reference: dict[str, np.ndarray]) -> None:
    ids = table.column(id_column).to_pylist()
    assert sorted(ids) == sorted(reference)
    got = np.stack(table.column("embedding").to_pylist())
    want = np.stack([reference[i] for i in ids])
    np.testing.assert_allclose(got, want, atol=1e-5)  # the values, not only their direction


def test_embed_writes_a_parquet_file_and_shards(tmp_path, sst2_parquet, reference_vectors):
    source = sst2_parquet / "sst2.parquet"
    result = run("embed", "--input", source, "--column", "sentence", "--output", tmp_path / "v.parquet")
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "v.parquet")
    assert table.column_names == ["row", "embedding"] and table.column("row").to_pylist() == list(range(1, 41))
    assert_same_vectors(table.append_column("id", pa.array([f"sst2-{i}" for i in range(40)])), "id",
                        reference_vectors)

    result = run("embed", "--input", source, "--column", "sentence", "--id-column", "id", "--output",
                 tmp_path / "shards", "--shard-rows", 15)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]
    table = pq.read_table(tmp_path / "shards")
    assert table.column("id").to_pylist() == [f"sst2-{i}" for i in range(40)]  # shards in input order
    assert_same_vectors(table, "id", reference_vectors)


def test_embed_stopped_midway_continues_with_the_shards_it_had_not_written(tmp_path, sst2_parquet, monkeypatch):
    from bertforge.pipelines.features import SentenceEmbeddingPipeline

    command = ["embed", "--input", sst2_parquet / "sst2.parquet", "--column", "sentence", "--id-column", "id",
               "--shard-rows", 15, "--output"]
    assert run(*command, tmp_path / "whole").exit_code == 0
    embed, calls = SentenceEmbeddingPipeline.__call__, []

    def stopped_on_the_second_shard(self, texts, **options):
        calls.append(texts[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return embed(self, texts, **options)

    monkeypatch.setattr(SentenceEmbeddingPipeline, "__call__", stopped_on_the_second_shard)
    stopped = run(*command, tmp_path / "stopped")
    assert stopped.exit_code != 0 and "stopped: 1 of 3 shard(s) are kept in" in stopped.output, stopped.output
    assert not (tmp_path / "stopped").exists()
    calls.clear()
    monkeypatch.setattr(SentenceEmbeddingPipeline, "__call__", lambda self, texts, **options: calls.append(texts[0])
                        or embed(self, texts, **options))
    result = run(*command, tmp_path / "stopped")
    assert result.exit_code == 0 and "in 3 Parquet file(s)" in result.output and "(1 kept from the interrupted run)" \
        in result.output, result.output
    assert len(calls) == 2  # the first shard was not embedded again
    assert pq.read_table(tmp_path / "stopped").equals(pq.read_table(tmp_path / "whole"))


@pytest.mark.parametrize("args, message", [
    (["x", "--level", "word", "--output", "v.parquet"], "holds sentence vectors only"),
    (["x", "--id-column", "id"], "--id-column names a column of the --input table"),
    (["--input", "in.parquet", "--ray", "auto", "--output", "out"], "--ray needs --id-column"),
    (["--input", "in.parquet", "--ray", "auto", "--id-column", "id", "--output", "v.parquet"],
     "--ray writes a directory of Parquet shards"),
    (["x", "--ray", "auto", "--output", "out"], "--ray reads an --input Parquet file or directory"),
    (["x", "--output", ".npy"], "/.npy: a suffix alone"),  # Python reads no suffix in it: was a directory
    (["--input", "in.parquet", "--ray", "auto", "--id-column", "id", "--output", "out", "--parallel-batches", "2"],
     "with --ray, --ray-actors sets how many embed at once"),
])
def test_embed_parquet_and_ray_mistakes_are_one_line(tmp_path, args, message):
    result = run("embed", *[tmp_path / a if a.endswith((".parquet", "out", ".npy")) else a for a in args])
    assert result.exit_code == 2 and "Traceback" not in result.output and message in result.output, result.output


def test_ray_auto_without_a_running_cluster_is_one_line(tmp_path, sst2_parquet, monkeypatch):
    """Before the module's cluster starts (tests run in file order): `--ray auto` finds no cluster. Ray looks
    for one among the machine's processes, so another job's cluster would be found: its two look-ups are made
    to find none, and Ray's own code raises its error."""
    ray = pytest.importorskip("ray", reason="pip install 'bertforge[ray]' (CI installs it: a skip fails there)")
    from ray._private import services

    assert not ray.is_initialized()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    def no_cluster():
        return frozenset()

    no_cluster.cache_clear = lambda: None  # as Ray's own function has
    monkeypatch.setattr(services, "find_gcs_addresses", no_cluster)
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)
    result = run("embed", "--ray", "auto", "--input", sst2_parquet / "shards", "--column", "sentence", "--id-column",
                 "id", "--output", tmp_path / "out")
    assert result.exit_code == 2 and result.output.startswith("error: --ray auto: no Ray cluster found (Could not "
                                                              "find any running Ray instance"), result.output
    assert "or give --ray local to start one for this run" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_ray_address_nothing_answers_at_is_one_line_at_once(tmp_path, sst2_parquet):
    """Before, Ray retried such an address for minutes, printing only its retries."""
    pytest.importorskip("ray", reason="pip install 'bertforge[ray]' (CI installs it: a skip fails there)")
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}", f"no-such-host.invalid:{port}"):
        result = run("embed", "--ray", address, "--input", sst2_parquet / "shards", "--column", "sentence",
                     "--id-column", "id", "--output", tmp_path / "out")
        assert result.exit_code == 2 and result.output.startswith(f"error: --ray {address}: nothing answers there ("), \
            result.output
        assert result.output.strip().endswith("or give --ray local to start one for this run"), result.output


# --- Ray ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of two CPUs, started by this process (and so ended with it)."""
    ray = pytest.importorskip("ray", reason="pip install 'bertforge[ray]' (CI installs it: a skip fails there)")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_the_map_batches_class_as_documented(ray_cluster, sst2_parquet, reference_vectors):
    from bertforge.pipelines.ray_embed import SentenceEmbedder

    # Four blocks, so that both actors embed: Ray reads small files like these shards in one task, one block.
    rows = ray_cluster.data.from_arrow([pq.read_table(shard) for shard in sorted((sst2_parquet / "shards").iterdir())])
    vectors = rows.map_batches(SentenceEmbedder, batch_format="pyarrow", batch_size=10,
                               fn_constructor_kwargs={"id_column": "id", "text_column": "sentence", "threads": 1},
                               compute=ray_cluster.data.ActorPoolStrategy(size=2), num_cpus=0.5)
    table = pa.concat_tables(ray_cluster.get(vectors.to_arrow_refs()))
    assert table.column_names == ["id", "embedding"]
    assert_same_vectors(table, "id", reference_vectors)


@pytest.mark.slow
def test_embed_on_ray_matches_one_process(tmp_path, ray_cluster, sst2_parquet, reference_vectors):
    # This process is the driver already connected to the cluster: `--ray auto` keeps that connection.
    result = run("embed", "--ray", "auto", "--ray-actors", 2, "--input", sst2_parquet / "shards", "--column",
                 "sentence", "--id-column", "id", "--output", tmp_path / "vectors")
    assert result.exit_code == 0, result.output
    assert "wrote 40 vector(s)" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors"]  # swapped in, nothing left beside it
    assert_same_vectors(pq.read_table(tmp_path / "vectors"), "id", reference_vectors)


@pytest.mark.slow
def test_mistakes_on_ray_are_one_line(tmp_path, ray_cluster, sst2_parquet):
    source = sst2_parquet / "shards"
    # Checked on the driver before any actor starts: in an actor Ray would keep only a traceback's text.
    result = run("embed", "--ray", "auto", "--model", tmp_path, "--input", source, "--column", "sentence",
                 "--id-column", "id", "--output", tmp_path / "out")
    assert result.exit_code == 2 and "no config.json (or Google's bert_config.json) there" in result.output, result.output
    result = run("embed", "--ray", "auto", "--input", source, "--column", "text", "--id-column", "id",
                 "--output", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "no column 'text' (found: id, sentence, label); choose it with --column" in result.output
    result = run("embed", "--ray", "auto", "--input", source, "--column", "label", "--id-column", "id",
                 "--output", tmp_path / "out")
    assert result.exit_code == 2 and "column 'label' holds int64 values, expected text" in result.output
    # Ray would wait for ever for a GPU the cluster does not have
    result = run("embed", "--ray", "auto", "--input", source, "--column", "sentence", "--id-column", "id",
                 "--output", tmp_path / "out", "--device", "cuda")
    assert result.exit_code == 2 and "--device cuda: the Ray cluster has no GPU" in result.output, result.output
    assert not (tmp_path / "out").exists()

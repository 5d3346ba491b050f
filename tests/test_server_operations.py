"""Running the server: what a request may cost (limits, answer size, memory under load), the
metrics' labels, and the `serve` command (start-up, API key, exposed host, bad directories)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from bertforge.model import BertConfig, BertForSequenceClassification
from bertforge.server import ServerSettings, background_server, create_app, load_served_model
from bertforge.tokenization import BertTokenizer
from server_helpers import call, wait_for

MAX_TEXTS, MAX_CHARS, MAX_RESULTS = 8, 4000, 40


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, default_model_dir, tiny_pretraining_checkpoint) -> dict[str, Path]:
    torch.manual_seed(0)
    sentiment = tmp_path_factory.mktemp("served") / "sentiment"
    BertForSequenceClassification(BertConfig.from_size("tiny", id2label={0: "neg", 1: "pos"})) \
        .save_pretrained(sentiment, tokenizer=BertTokenizer.from_pretrained())
    return {"minilm": default_model_dir, "pretrained": tiny_pretraining_checkpoint, "sentiment": sentiment}


@pytest.fixture(scope="module")
def models(model_dirs):
    return [load_served_model(name, model_dirs[name]) for name in ("minilm", "pretrained")]


@pytest.fixture(scope="module")
def server(models):
    settings = ServerSettings(max_texts=MAX_TEXTS, max_chars=MAX_CHARS, max_results=MAX_RESULTS)
    app = create_app(models, settings)
    with background_server(app) as url:
        yield url, app.state.batcher.runner.pid


def test_metrics_are_prometheus_text(server):
    url, _ = server
    call(url + "/v1/tokenize", {"input": "count me"})
    call(url + "/v1/tokenize", method="BREW")
    request = urllib.request.urlopen(url + "/metrics")
    assert request.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = request.read().decode()
    for family, kind in (("bertforge_requests_total", "counter"), ("bertforge_request_duration_seconds", "histogram"),
                         ("bertforge_batch_size", "histogram"), ("bertforge_queue_depth", "gauge")):
        assert f"# TYPE {family} {kind}" in text
    assert 'bertforge_requests_total{method="POST",endpoint="/v1/tokenize",status="200"}' in text
    assert 'bertforge_requests_total{method="other",endpoint="/v1/tokenize",status="405"}' in text
    assert "BREW" not in text  # the method label comes from a fixed set
    assert 'bertforge_request_duration_seconds_bucket{endpoint="/v1/tokenize",le="+Inf"}' in text
    assert "bertforge_queue_depth 0" in text


def test_metric_label_values_are_escaped():
    from bertforge.server.metrics import Metrics

    metrics = Metrics()
    metrics.observe_request("PURGE", 'a "quoted" \\ back\nslash', 200, 0.01)
    text = metrics.render()
    # the exposition format's escapes, written out: \" for a quote, \\ for a backslash, \n for a newline
    assert r'bertforge_requests_total{method="other",endpoint="a \"quoted\" \\ back\nslash",status="200"} 1' in text
    assert r'bertforge_request_duration_seconds_count{endpoint="a \"quoted\" \\ back\nslash"} 1' in text


def test_answers_over_max_response_bytes_are_refused(models):
    settings = ServerSettings(max_response_bytes=4000, inference="thread")  # the runner plays no part here
    with background_server(create_app(models, settings)) as url:
        status, body = call(url + "/v1/tokenize", {"input": "a few words"})
        assert status == 200 and body["results"][0]["tokens"][1] == "a"
        status, error = call(url + "/v1/tokenize", {"input": "many words " * 300})
        assert status == 413 and "limit is max_response_bytes=4000" in error["error"]["message"]
        assert error["error"]["limit"] == "max_response_bytes"
        status, error = call(url + "/v1/fill-mask", {"input": "word " * 300 + "[MASK]", "top_k": 50})
        assert status == 413 and "max_response_bytes=4000" in error["error"]["message"]  # refused before running


def rss_bytes(pid: int | str = "self") -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit status may wait for a reaper that never comes)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def child_pids(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set size from /proc")
def test_memory_stays_flat_under_repeated_heavy_requests(server):
    """Requests at the limits (the most texts, masks and candidates; the longest texts): after a
    warm-up, more of them must not keep growing the server (this process) or its inference process."""
    url, inference_pid = server
    text = ("[MASK] went up the hill and " + "the cat went up the hill and " * 140)[:MAX_CHARS]
    heavy = {"/v1/fill-mask": {"input": [text] * MAX_TEXTS, "top_k": MAX_RESULTS // MAX_TEXTS},
             "/v1/tokenize": {"input": [text] * MAX_TEXTS},
             "/v1/attention": {"input": text, "model": "minilm"}}

    def round_of_requests():
        for path, body in heavy.items():
            status, answer = call(url + path, body)
            assert status == 200, answer

    for _ in range(2):
        round_of_requests()
    before = [rss_bytes(), rss_bytes(inference_pid)]
    for _ in range(6):
        round_of_requests()
    for process, was, now in zip(("server", "inference process"), before, [rss_bytes(), rss_bytes(inference_pid)]):
        growth = (now - was) / 2**20
        assert growth < 64, f"the {process}'s resident memory grew by {growth:.0f} MiB over 6 rounds"


def test_serve_refuses_bad_settings_and_warns_when_exposed_without_a_key(tmp_path):
    from click.testing import CliRunner

    from bertforge.cli.main import cli
    from bertforge.errors import ConfigError

    with pytest.raises(ConfigError, match="'é' is not ASCII"):
        ServerSettings(api_key="clé")
    with pytest.raises(ConfigError, match="inference must be 'process' or 'thread', got 'gpu'"):
        ServerSettings(inference="gpu")
    with pytest.raises(ConfigError, match="max_texts must be at least 1, got 0"):
        ServerSettings(max_texts=0)
    missing = f"x={tmp_path / 'missing'}"  # fails at loading, after the start-up checks
    result = CliRunner().invoke(cli, ["serve", "--api-key", "clé", "--model", missing])
    assert result.exit_code == 2 and "--api-key" in result.output and "not ASCII" in result.output
    assert "no config.json" not in result.output  # refused before any model was loaded
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--model", missing])
    assert result.exit_code == 2 and "WARNING: serving on 0.0.0.0" in result.output and "WITHOUT an API key" in result.output
    for quiet in (["--host", "127.0.0.1"], ["--host", "::1"], ["--host", "0.0.0.0", "--api-key", "k"]):
        result = CliRunner().invoke(cli, ["serve", *quiet, "--model", missing])
        assert result.exit_code == 2 and "WARNING" not in result.output, quiet


def test_serve_command_starts_a_server_with_the_key_from_the_environment(model_dirs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "bertforge", "serve", "--model", f"tiny={model_dirs['sentiment']}",
               "--port", str(port), "--max-texts", "2", "--log-level", "warning"]
    process = subprocess.Popen(command, env={**os.environ, "BERTFORGE_API_KEY": "k"}, stderr=subprocess.PIPE,
                               text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if call(url + "/health")[0] == 200:
                    break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        key = {"Authorization": "Bearer k"}
        assert call(url + "/v1/classify", {"input": "fine"})[0] == 401
        status, body = call(url + "/v1/classify", {"input": "fine"}, headers=key)
        assert status == 200 and body["model"] == "tiny" and {r["label"] for r in body["results"][0]} == {"neg", "pos"}
        status, body = call(url + "/v1/classify", {"input": ["a", "b", "c"]}, headers=key)
        assert status == 413 and "max_texts=2" in body["error"]["message"]
        children = child_pids(process.pid)  # the inference process (and multiprocessing's resource tracker)
        assert children
    finally:
        process.kill()  # no chance to stop its children: they must end by themselves
        process.wait(30)
    wait_for(lambda: not any(map(running, children)), "the server's children to end")
    assert "tiny: BertForSequenceClassification" in process.stderr.read()


def test_serve_command_stopped_with_ctrl_c_ends_cleanly_with_its_children(model_dirs):
    """Ctrl-C reaches the terminal's whole process group, the inference process included: the server shuts
    down, stops its child itself, and exits 130 with no traceback from either."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "bertforge", "serve", "--model", f"tiny={model_dirs['sentiment']}",
               "--port", str(port)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: call_ok(f"http://127.0.0.1:{port}/health"), "the server to start", seconds=60)
        children = child_pids(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert f"serving on http://127.0.0.1:{port}" in stderr and stderr.rstrip().endswith("stopped")
    wait_for(lambda: not any(map(running, children)), "the server's children to end")


def call_ok(url: str) -> bool:
    try:
        return call(url)[0] == 200
    except OSError:
        return False


def test_serve_command_refuses_a_port_in_use_or_a_bad_host_before_loading_models(tmp_path):
    from click.testing import CliRunner

    from bertforge.cli.main import cli

    missing = f"x={tmp_path / 'missing'}"  # would fail at loading, after the socket is bound
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--port", str(port), "--model", missing])
    assert result.exit_code == 2 and (f"--port {port}: cannot listen on 127.0.0.1:{port} (Address already in use); "
                                      "another server listens there, choose another --port") in result.output
    assert "no config.json" not in result.output
    result = CliRunner().invoke(cli, ["serve", "--host", "no-such-host.invalid", "--api-key", "k", "--model", missing])
    assert result.exit_code == 2 and "--host no-such-host.invalid: not an address to listen on" in result.output


def test_serve_command_reports_bad_model_directories(tmp_path):
    from click.testing import CliRunner

    from bertforge.cli.main import cli

    result = CliRunner().invoke(cli, ["serve", "--model", f"x={tmp_path / 'missing'}"])
    assert result.exit_code == 2 and f"{tmp_path / 'missing'}: model directory not found" in result.output
    result = CliRunner().invoke(cli, ["serve", "--model", f"x={tmp_path}"])
    assert result.exit_code == 2 and f"{tmp_path}: no config.json (or Google's bert_config.json) there" in \
        result.output
    result = CliRunner().invoke(cli, ["serve", "--model", f"a={tmp_path}", "--model", f"a={tmp_path}"])
    assert result.exit_code == 2 and "given twice" in result.output
    result = CliRunner().invoke(cli, ["serve", "--device", "gpu7"])
    assert result.exit_code == 2 and "--device gpu7: not a torch device (use cpu, cuda or cuda:N)" in result.output


def test_a_checkpoint_with_heads_no_one_model_carries_serves_those_it_loads(tmp_path, caplog):
    """QA weights beside MLM weights: the server loads the masked-LM model, serves what it carries and says
    what it leaves out (it failed before, with an error listing question-answering as a task it could do);
    the QA pipeline still reads the folder's QA head."""
    from safetensors.torch import load_file, save_file

    from bertforge.model import BertForMaskedLM, BertForQuestionAnswering
    from bertforge.pipelines import pipeline

    torch.manual_seed(0)
    tokenizer, folder = BertTokenizer.from_pretrained(), tmp_path / "two-heads"
    BertForQuestionAnswering(BertConfig.from_size("tiny")).save_pretrained(folder, tokenizer=tokenizer)
    BertForMaskedLM(BertConfig.from_size("tiny")).save_pretrained(tmp_path / "mlm", tokenizer=tokenizer)
    mlm = {k: v for k, v in load_file(tmp_path / "mlm" / "model.safetensors").items() if k.startswith("cls.")}
    save_file({**load_file(folder / "model.safetensors"), **mlm}, folder / "model.safetensors")

    served = load_served_model("both", folder)
    assert "fill-mask" in served.tasks and "question-answering" not in served.tasks
    assert f"{folder}: its weights hold heads for question-answering, which BertForMaskedLM does not carry; " \
           f"it serves " in caplog.text
    assert served.run_fill_mask(["Paris is the [MASK] of France."], top_k=2)
    answer = pipeline("question-answering", model=folder)(question="Who?", context="Rollo led the Norse.")
    assert answer["answer"]


def test_serve_names_a_model_after_its_folder(monkeypatch, tiny_pretraining_checkpoint):
    """`serve --model .` was refused ("expected DIR or NAME=DIR": "." has no name), and a file of the folder
    named the model after itself ("config.json")."""
    from bertforge.cli.serve import parse_model_option

    folder = Path(tiny_pretraining_checkpoint)
    monkeypatch.chdir(folder)
    assert parse_model_option(".") == (folder.resolve().name, Path("."))
    assert parse_model_option(str(folder / "config.json")) == (folder.resolve().name, folder / "config.json")
    assert parse_model_option("mine=.") == ("mine", Path("."))
    assert parse_model_option("missing") == ("missing", Path("missing"))  # loading names it, after the checks

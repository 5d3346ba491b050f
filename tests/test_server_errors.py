"""`bertforge serve` refusing and failing cleanly: every kind of bad input gets a clear JSON error, a
request without the API key a 401; a request whose client left while it was queued is dropped; the
inference process answers as a thread does, a killed one gives a 503, and it ends with the server."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from bertforge.server import ServerSettings, background_server, create_app
from conftest import sst2_sentences
from server_fixtures import MAX_CHARS, MAX_TEXTS
from server_helpers import call, metric, wait_for

# The fixtures model_dirs, models and server (tests/server_fixtures.py), shared with tests/test_server.py.
pytest_plugins = ["server_fixtures"]


BAD_INPUTS = [
    # (name, path, body bytes, status, words the error message must contain)
    ("too many texts", "/v1/embeddings", json.dumps({"input": ["a"] * (MAX_TEXTS + 1)}), 413, "max_texts=8"),
    ("too many characters", "/v1/ner", json.dumps({"input": ["ok", "x" * (MAX_CHARS + 1)]}), 413, "max_chars=4000"),
    ("too many pairs", "/v1/next-sentence",
     json.dumps({"input": [{"text": "a", "text_pair": "b"}] * MAX_TEXTS}), 413, "max_texts"),
    ("body over the size limit", "/v1/embeddings", json.dumps({"input": "a" * 500_000}), 413, "max_body_bytes"),
    ("500 masks, top_k 50", "/v1/fill-mask", json.dumps({"input": " ".join(["[MASK]"] * 500), "top_k": 50}), 413,
     "500 [MASK] tokens; the limit is max_masks=4"),
    ("too many candidates", "/v1/fill-mask", json.dumps({"input": ["[MASK] and [MASK]"] * 7, "top_k": 3}), 413,
     "14 masks × top_k=3 = 42 candidates; the limit is max_results=40"),
    ("empty QA context", "/v1/qa", json.dumps({"input": [{"question": "who?", "context": "a"},
                                                        {"question": "who?", "context": " "}]}), 422,
     "input[1].context is empty"),
    ("QA context of zero-width characters", "/v1/qa",
     json.dumps({"input": [{"question": "who?", "context": "\u200b\u200b"}]}), 422, "input[0].context is empty"),
    # the pipeline would count the texts of the batch it ran, not the request's
    ("mask cut away by truncation", "/v1/fill-mask",
     json.dumps({"input": ["a [MASK] b", "c [MASK] d", "word " * 700 + "[MASK]"]}), 422,
     "input[2]: 1 of its 1 [MASK] tokens beyond max_length"),
    ("empty QA question", "/v1/qa", json.dumps({"input": {"question": "", "context": "a"}}), 422,
     "input.question is empty"),
    ("a long text named by its object and field", "/v1/qa",
     json.dumps({"input": [{"question": "q", "context": "c"}, {"question": "q", "context": "c" * (MAX_CHARS + 1)}]}),
     413, f"input[1].context has {MAX_CHARS + 1} characters"),
    ("blank text", "/v1/embeddings", json.dumps({"input": ["ok", "", " "]}), 422, "input[1] is empty"),
    ("blank second text of a pair", "/v1/classify", json.dumps({"input": ["fine", {"text": "a", "text_pair": " "}]}),
     422, "input[1].text_pair is empty"),
    # a lone surrogate is valid JSON but no text: the answers that echo it could not be encoded
    ("lone surrogate", "/v1/ner", json.dumps({"input": "Paris\ud800 London"}), 422,
     "input: character 6 is a lone surrogate U+D800, not text"),
    ("lone surrogate in a QA context", "/v1/qa", json.dumps({"input": {"question": "who?", "context": "Rollo\ud800."}}),
     422, "input.context: character 6 is a lone surrogate"),
    ("lone surrogate before a mask", "/v1/fill-mask", json.dumps({"input": "\ud800 [MASK]"}), 422,
     "input: character 1 is a lone surrogate"),
    ("malformed JSON", "/v1/embeddings", '{"input": ["a", }', 400, "malformed JSON"),
    ("JSON sent as a form", "/v1/embeddings", ('{"input": "hi"}', "application/x-www-form-urlencoded"), 415,
     "the body must be JSON, sent with 'Content-Type: application/json' (got application/x-www-form-urlencoded)"),
    ("non-UTF-8 body", "/v1/embeddings", b'{"input": "caf\xe9"}', 400, "not valid UTF-8"),
    # it was read as it came, and refused as "not valid UTF-8 (byte 1: invalid start byte)"
    ("compressed body", "/v1/embeddings", (gzip.compress(b'{"input": "hi"}'), "application/json",
                                           {"Content-Encoding": "gzip"}), 415,
     "Content-Encoding gzip: the body must be sent uncompressed"),
    ("empty body", "/v1/fill-mask", "", 422, "JSON object body is required"),
    ("JSON array body", "/v1/ner", "[]", 422, "valid dictionary"),
    ("number instead of text", "/v1/embeddings", json.dumps({"input": 42}), 422, "valid string"),
    # named as the request wrote it, not by pydantic's branches of the union (input.list[str].1)
    ("number in the list", "/v1/tokenize", json.dumps({"input": ["a", 3]}), 422,
     "input[1]: Input should be a valid string"),
    ("number as a QA context", "/v1/qa", json.dumps({"input": [{"question": "q", "context": 3}]}), 422,
     "input[0].context: Input should be a valid string"),
    ("empty list", "/v1/embeddings", json.dumps({"input": []}), 422, "at least 1 item"),
    ("missing field", "/v1/qa", json.dumps({"input": {"question": "who?"}}), 422, "context"),
    ("unknown field", "/v1/fill-mask", json.dumps({"input": "a [MASK]", "topk": 3}), 422, "topk"),
    ("top_k out of range", "/v1/fill-mask", json.dumps({"input": "a [MASK]", "top_k": 0}), 422, "top_k"),
    ("string top_k", "/v1/fill-mask", json.dumps({"input": "a [MASK]", "top_k": "3"}), 422, "top_k"),
    ("no mask", "/v1/fill-mask", json.dumps({"input": ["a [MASK]", "no mask here"]}), 422, "input[1]: no [MASK]"),
    ("unknown model", "/v1/embeddings", json.dumps({"input": "a", "model": "gpt-9"}), 404,
     "unknown model 'gpt-9'; loaded: minilm, pretrained, sentiment, ner, qa"),
    ("model without the task", "/v1/ner", json.dumps({"input": "a", "model": "minilm"}), 400, "models that do: ner"),
    ("wrong method", "/v1/embeddings", None, 405, "Method Not Allowed"),
    ("unknown path", "/v2/nothing", None, 404, "Not Found"),
]


@pytest.mark.parametrize("name,path,body,status,words", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gets_a_clear_json_error(server, name, path, body, status, words):
    url, _ = server
    body, content_type, *headers = body if isinstance(body, tuple) else (body, "application/json")
    raw = body.encode() if isinstance(body, str) else body
    got, answer = call(url + path, raw=raw, method="GET" if body is None else "POST",
                       headers={"Content-Type": content_type, **(headers[0] if headers else {})})
    assert got == status, answer
    assert answer["error"]["code"] == status and words in answer["error"]["message"], answer
    if status == 404 and "model" in words:
        assert answer["error"]["loaded"] == ["minilm", "pretrained", "sentiment", "ner", "qa"]


SINGLE_INPUTS = [
    # (path, one input sent alone, status, message, param): named `input`, as sent, not `input[0]`
    ("/v1/embeddings", " ", 422, "input is empty", "input"),
    ("/v1/tokenize", "a\ud800", 422, "input: character 2 is a lone surrogate U+D800, not text", "input"),
    ("/v1/ner", "x" * (MAX_CHARS + 1), 413, f"input has {MAX_CHARS + 1} characters; the limit is max_chars=4000",
     "input"),
    ("/v1/fill-mask", "no mask here", 422, "input: no [MASK] token to fill: 'no mask here'", "input"),
    ("/v1/fill-mask", "[MASK] " * 5, 413, "input has 5 [MASK] tokens; the limit is max_masks=4", "input"),
    ("/v1/fill-mask", "word " * 700 + "[MASK]", 422, "input: 1 of its 1 [MASK] tokens beyond max_length", "input"),
    ("/v1/next-sentence", {"text": "a", "text_pair": " "}, 422, "input.text_pair is empty", "input.text_pair"),
    ("/v1/classify", "", 422, "input is empty", "input"),
    ("/v1/classify", {"text": "\u200b", "text_pair": "b"}, 422, "input.text is empty", "input.text"),
    ("/v1/qa", {"question": "who?", "context": " "}, 422, "input.context is empty", "input.context"),
]


@pytest.mark.parametrize("path,given,status,message,param", SINGLE_INPUTS,
                         ids=[f"{case[0]} {case[3][:40]}" for case in SINGLE_INPUTS])
def test_a_single_input_is_named_input_and_one_of_a_list_by_its_index(server, path, given, status, message, param):
    url, _ = server
    got, answer = call(url + path, {"input": given})
    assert got == status and answer["error"]["message"].startswith(message), answer
    assert answer["error"]["param"] == param, answer
    got, answer = call(url + path, {"input": [given]})
    listed = "input[0]" + message[len("input"):]
    assert got == status and answer["error"]["message"].startswith(listed), answer
    assert answer["error"]["param"] == "input[0]" + param[len("input"):], answer


def test_the_inference_process_answers_as_a_thread_does_and_ends_with_the_server(models):
    """The default runs the models in a child process: the same answers as on a thread of the server,
    a model's error comes back as the usual JSON error, a killed child gives a 503 that says so, and the
    child ends when the server stops."""
    texts = sst2_sentences(3)
    requests = [("/v1/embeddings", {"input": texts, "model": "minilm"}),
                ("/v1/fill-mask", {"input": "the cat sat on the [MASK] .", "top_k": 3}),
                ("/v1/ner", {"input": texts[:2]}),
                ("/v1/qa", {"input": [{"question": "who sat?", "context": "the cat sat on the mat ."}]}),
                ("/v1/attention", {"input": texts[0], "model": "minilm", "layer": 99})]
    answers = {}
    for inference in ("process", "thread"):
        app = create_app(models, ServerSettings(inference=inference))
        with background_server(app) as url:
            answers[inference] = [call(url + path, body) for path, body in requests]
            pid = getattr(app.state.batcher.runner, "pid", None)
            if inference == "process":
                assert pid != os.getpid() and Path(f"/proc/{pid}").exists()
                assert call(url + "/health")[0] == 200
                os.kill(pid, signal.SIGKILL)  # as the kernel's out-of-memory killer would
                status, body = call(url + "/v1/embeddings", {"input": "anyone there?"})
                assert status == 503 and "the inference process has stopped" in body["error"]["message"], body
                status, body = call(url + "/health")  # so that a supervisor restarts it
                assert status == 503 and body["status"] == "inference process stopped", body
        if inference == "process":
            assert not Path(f"/proc/{pid}").exists(), "the inference process outlived its server"
    assert answers["process"] == answers["thread"]
    assert [status for status, _ in answers["process"]] == [200, 200, 200, 200, 422]
    assert "layer must be in 0..5" in answers["process"][-1][1]["error"]["message"]


def test_request_cancelled_while_queued_is_dropped_and_server_stays_up(models, monkeypatch):
    # On an inference thread, whose model a test can hold: the first request below then holds the
    # batcher's one slot, so the second stays queued until its client has gone.
    app = create_app(models, ServerSettings(inference="thread"))
    model = next(m for m in models if m.name == "minilm")
    reached, release, embed = threading.Event(), threading.Event(), model.run_embeddings

    def held_embeddings(texts):
        reached.set()
        release.wait(60)
        return embed(texts)

    monkeypatch.setattr(model, "run_embeddings", held_embeddings)
    with background_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        first = []
        waiting = threading.Thread(target=lambda: first.append(call(url + "/v1/embeddings", {"input": "first"})))
        waiting.start()
        wait_for(reached.is_set, "the first request to reach the model")
        body = json.dumps({"input": ["a sentence that will never be embedded"] * 4}).encode()
        try:
            with socket.create_connection((host, int(port))) as client:
                client.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                wait_for(lambda: metric(url, "bertforge_queue_depth") == 4, "the request to be queued")
            wait_for(lambda: metric(url, "bertforge_requests_cancelled_total") == 1, "the cancellation")
        finally:
            release.set()
            waiting.join(60)
        assert first[0][0] == 200
        assert call(url + "/health")[0] == 200
        assert call(url + "/v1/embeddings", {"input": "still serving"})[0] == 200
        assert metric(url, "bertforge_batch_size_sum") == 2  # the cancelled inputs never ran


def test_api_key_guards_everything_but_health_and_batching_off_gives_same_vectors(models, server):
    url, _ = server
    settings = ServerSettings(api_key="s3cret", batching=False, inference="thread")
    with background_server(create_app(models, settings)) as guarded:
        assert call(guarded + "/health")[0] == 200
        for path in ("/v1/models", "/metrics", "/docs", "/openapi.json"):
            assert call(guarded + path)[0] == 401
        status, answer = call(guarded + "/v1/embeddings", {"input": "hi"})
        assert status == 401 and "API key" in answer["error"]["message"]
        assert call(guarded + "/v1/embeddings", {"input": "hi"}, headers={"Authorization": "Bearer wrong"})[0] == 401
        status, body = call(guarded + "/v1/embeddings", {"input": "hi"}, headers={"Authorization": "Bearer s3cret"})
        assert status == 200
        assert call(guarded + "/v1/models", headers={"X-API-Key": "s3cret"})[0] == 200
    batched = call(url + "/v1/embeddings", {"input": "hi"})[1]
    np.testing.assert_allclose(body["data"][0]["embedding"], batched["data"][0]["embedding"], atol=1e-6)

"""`bertforge serve` over real HTTP: a uvicorn server on a free loopback port, every endpoint,
results checked against transformers / sentence-transformers, and every kind of bad input."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from bertforge.model import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
                             BertForTokenClassification)
from bertforge.server import ServerSettings, background_server, create_app, load_served_model
from bertforge.tokenization import BertTokenizer
from conftest import sst2_sentences
from server_helpers import call, metric, wait_for

NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "B-ORG", 6: "I-ORG"}
MAX_TEXTS, MAX_CHARS, MAX_MASKS, MAX_RESULTS = 8, 4000, 4, 40


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, default_model_dir, tiny_pretraining_checkpoint) -> dict[str, Path]:
    """The MiniLM encoder, a random transformers pre-training checkpoint and random bertforge task models."""
    tokenizer = BertTokenizer.from_pretrained()
    root = tmp_path_factory.mktemp("served")
    torch.manual_seed(0)
    tasks = {"sentiment": BertForSequenceClassification(BertConfig.from_size("tiny", id2label={0: "neg", 1: "pos"})),
             "ner": BertForTokenClassification(BertConfig.from_size("tiny", id2label=NER_LABELS)),
             "qa": BertForQuestionAnswering(BertConfig.from_size("tiny"))}
    for name, model in tasks.items():
        model.save_pretrained(root / name, tokenizer=tokenizer)
    return {"minilm": default_model_dir, "pretrained": tiny_pretraining_checkpoint,
            **{name: root / name for name in tasks}}


@pytest.fixture(scope="module")
def models(model_dirs):
    return [load_served_model(name, directory) for name, directory in model_dirs.items()]


@pytest.fixture(scope="module")
def server(models):
    app = create_app(models, ServerSettings(max_texts=MAX_TEXTS, max_chars=MAX_CHARS, max_masks=MAX_MASKS,
                                            max_results=MAX_RESULTS, max_wait_ms=20))
    with background_server(app) as url:
        yield url, app


def test_health_models_docs(server):
    url, _ = server
    assert call(url + "/health") == (200, {"status": "ok", "models": ["minilm", "pretrained", "sentiment", "ner", "qa"],
                                           "queue_depth": 0})
    status, listing = call(url + "/v1/models")
    capabilities = {m["id"]: set(m["capabilities"]) for m in listing["data"]}
    encoder = {"embeddings", "tokenize", "attention"}
    assert capabilities == {"minilm": encoder, "pretrained": encoder | {"fill-mask", "next-sentence"},
                            "sentiment": encoder | {"classify"}, "ner": encoder | {"ner"}, "qa": encoder | {"qa"}}
    status, docs = call(url + "/docs")
    assert status == 200 and "swagger" in docs.lower()
    status, schema = call(url + "/openapi.json")
    assert {"/v1/embeddings", "/v1/fill-mask", "/v1/next-sentence", "/v1/classify", "/v1/ner", "/v1/qa",
            "/v1/attention", "/v1/tokenize", "/health", "/metrics", "/v1/models"} <= set(schema["paths"])
    status, page = call(url + "/")
    assert status == 200 and "<title>bertforge</title>" in page


def test_embeddings_are_openai_shaped_and_equal_sentence_transformers(server, default_model_dir):
    from sentence_transformers import SentenceTransformer

    url, _ = server
    texts = sst2_sentences(5)
    status, body = call(url + "/v1/embeddings", {"input": texts, "model": "minilm"})
    assert status == 200, body
    assert body["object"] == "list" and body["model"] == "minilm"
    assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", i) for i in range(len(texts))]
    reference = SentenceTransformer(str(default_model_dir), device="cpu").encode(texts)
    np.testing.assert_allclose(np.array([d["embedding"] for d in body["data"]]), reference, atol=1e-5)
    tokens = sum(len(BertTokenizer.from_pretrained()(t)["input_ids"]) for t in texts)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}

    status, single = call(url + "/v1/embeddings", {"input": texts[0], "encoding_format": "base64", "user": "x"})
    assert status == 200 and single["model"] == "minilm"  # the first model that embeds is the default
    vector = np.frombuffer(base64.b64decode(single["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, reference[0], atol=1e-5)


def flat(candidates: list) -> list[dict]:
    """Fill-mask output of one text as one list (several masks give a list per mask)."""
    return [c for row in candidates for c in row] if isinstance(candidates[0], list) else candidates


def test_concurrent_requests_are_batched_without_changing_results(server):
    url, _ = server
    texts = sst2_sentences(24)[8:]
    alone = [call(url + "/v1/embeddings", {"input": t})[1]["data"][0]["embedding"] for t in texts[:3]]
    batches_before, inputs_before = metric(url, "bertforge_batch_size_count"), metric(url, "bertforge_batch_size_sum")
    results: dict[int, list] = {}

    def client(i):
        results[i] = call(url + "/v1/embeddings", {"input": texts[i]})[1]["data"][0]["embedding"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batches = metric(url, "bertforge_batch_size_count") - batches_before
    inputs = metric(url, "bertforge_batch_size_sum") - inputs_before
    assert inputs == len(texts) and batches < len(texts), (batches, inputs)  # some requests shared a model call
    # padding to a longer neighbour changes nothing beyond float noise
    np.testing.assert_allclose(np.array([results[i] for i in range(3)]), np.array(alone), atol=1e-5)


def test_fill_mask_and_next_sentence_match_transformers(server, tiny_pretraining_checkpoint):
    from transformers import BertForPreTraining, BertTokenizerFast
    from transformers import pipeline as hf_pipeline

    url, _ = server
    reference = BertForPreTraining.from_pretrained(str(tiny_pretraining_checkpoint)).eval()
    tokenizer = BertTokenizerFast.from_pretrained(str(tiny_pretraining_checkpoint))
    texts = ["Paris is the [MASK] of France.", "The [MASK] sat on the [MASK]."]
    status, body = call(url + "/v1/fill-mask", {"input": texts, "top_k": 3})
    assert status == 200 and body["model"] == "pretrained", body
    single, double = body["results"]
    assert len(single) == 3 and len(double) == 2 and all(len(c) == 3 for c in double)
    fill_mask = hf_pipeline("fill-mask", model=str(tiny_pretraining_checkpoint), top_k=3)
    for got, expected in ((single, fill_mask(texts[0])), (double, fill_mask(texts[1]))):
        assert [(c["token"], c["token_str"], c["sequence"]) for c in flat(got)] == \
            [(c["token"], c["token_str"], c["sequence"]) for c in flat(expected)]
        np.testing.assert_allclose([c["score"] for c in flat(got)], [c["score"] for c in flat(expected)], rtol=1e-4)

    pair = ("I went to the store.", "I bought a gallon of milk.")
    status, body = call(url + "/v1/next-sentence", {"input": {"text": pair[0], "text_pair": pair[1]}})
    assert status == 200, body
    with torch.no_grad():
        expected = reference(**tokenizer(*pair, return_tensors="pt")).seq_relationship_logits.softmax(-1)[0, 0]
    assert body["results"][0]["is_next"] == pytest.approx(float(expected), abs=1e-5)
    assert body["results"][0]["is_next"] + body["results"][0]["not_next"] == pytest.approx(1)


def test_classify_ner_qa_match_transformers(server, model_dirs):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, BertTokenizerFast
    from transformers import pipeline as hf_pipeline

    url, _ = server
    tokenizer = BertTokenizerFast.from_pretrained(str(model_dirs["minilm"]))
    texts = sst2_sentences(3)
    status, body = call(url + "/v1/classify", {"input": texts + [{"text": "a cat", "text_pair": "a dog"}]})
    assert status == 200 and body["model"] == "sentiment", body
    classifier = AutoModelForSequenceClassification.from_pretrained(str(model_dirs["sentiment"])).eval()
    with torch.no_grad():
        probs = classifier(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    for result, row in zip(body["results"], probs):
        expected = sorted(zip(("neg", "pos"), row.tolist()), key=lambda item: -item[1])
        assert [r["label"] for r in result] == [label for label, _ in expected]
        np.testing.assert_allclose([r["score"] for r in result], [p for _, p in expected], atol=1e-5)

    text = "Jim Henson was a puppeteer from Greenville, Mississippi, working for Disney."
    status, body = call(url + "/v1/ner", {"input": [text]})
    assert status == 200, body
    tagger = hf_pipeline("token-classification", model=str(model_dirs["ner"]), aggregation_strategy="first")
    expected = [(e["entity_group"], e["start"], e["end"]) for e in tagger(text)]
    assert expected and [(e["entity_group"], e["start"], e["end"]) for e in body["results"][0]] == expected
    assert all(e["word"] == text[e["start"]:e["end"]] for e in body["results"][0])

    # One window: the answer is the span with the largest start + end logit over every valid pair
    # (in the context, end ≥ start, at most 30 tokens), searched exhaustively on transformers' logits.
    question, context = "Where was Jim Henson from?", "Jim Henson was a puppeteer from Greenville, Mississippi."
    status, body = call(url + "/v1/qa", {"input": [{"question": question, "context": context}]})
    assert status == 200, body
    answer = body["results"][0]
    reader = AutoModelForQuestionAnswering.from_pretrained(str(model_dirs["qa"])).eval()
    encoded = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")[0]
    with torch.no_grad():
        out = reader(**encoded)
    in_context = torch.tensor([s == 1 for s in encoded.sequence_ids(0)])
    sums = out.start_logits[0][:, None] + out.end_logits[0][None, :]
    length = torch.arange(len(in_context))[None, :] - torch.arange(len(in_context))[:, None]
    valid = in_context[:, None] & in_context[None, :] & (length >= 0) & (length < 30)
    start, end = divmod(int(sums.masked_fill(~valid, -torch.inf).argmax()), len(in_context))
    assert (answer["start"], answer["end"]) == (int(offsets[start][0]), int(offsets[end][1]))
    assert answer["answer"] == context[answer["start"]:answer["end"]]


def test_every_endpoint_answers_as_its_pipeline(server, model_dirs):
    """The same inputs through HTTP and through `bertforge.pipeline(task, model=dir)`: the same answers
    (scores equal up to float noise from sharing micro-batches with other inputs)."""
    from bertforge.pipelines import pipeline
    from bertforge.tasks.squad import encode_windows

    url, _ = server
    texts = sst2_sentences(4)

    def same(got, expected):
        """Equal structures; floats within 1e-5."""
        if isinstance(expected, float):
            assert got == pytest.approx(expected, abs=1e-5)
        elif isinstance(expected, dict):
            assert set(got) == set(expected)
            for key in expected:
                same(got[key], expected[key])
        elif isinstance(expected, (list, tuple)):
            assert len(got) == len(expected)
            for g, e in zip(got, expected, strict=True):
                same(g, e)
        else:
            assert got == expected

    for name in ("minilm", "pretrained"):
        status, body = call(url + "/v1/embeddings", {"input": texts, "model": name})
        assert status == 200, body
        expected = pipeline("sentence-embedding", model=model_dirs[name])(texts)
        np.testing.assert_allclose(np.array([d["embedding"] for d in body["data"]]), expected, atol=1e-5)

    masked = ["The [MASK] of France is Paris.", "A [MASK] and a [MASK] went up the hill.", "Just [MASK]."]
    status, body = call(url + "/v1/fill-mask", {"input": masked, "top_k": 4})
    assert status == 200, body
    same(body["results"], pipeline("fill-mask", model=model_dirs["pretrained"])(masked, top_k=4))

    pairs = [(texts[0], texts[1]), (texts[2], "Then it rained.")]
    status, body = call(url + "/v1/next-sentence", {"input": [{"text": a, "text_pair": b} for a, b in pairs]})
    assert status == 200, body
    same(body["results"], pipeline("next-sentence", model=model_dirs["pretrained"])(pairs))

    status, body = call(url + "/v1/classify", {"input": [texts[0], {"text": texts[1], "text_pair": texts[2]}, texts[3]]})
    assert status == 200, body
    classify = pipeline("text-classification", model=model_dirs["sentiment"])
    same(body["results"], [classify(texts[0], top_k=None), classify(texts[1], text_pair=texts[2], top_k=None),
                           classify(texts[3], top_k=None)])

    sentences = ["Jim Henson was a puppeteer from Greenville, Mississippi.", texts[0]]
    status, body = call(url + "/v1/ner", {"input": sentences})
    assert status == 200, body
    same(body["results"], pipeline("token-classification", model=model_dirs["ner"])(sentences))

    qa = pipeline("question-answering", model=model_dirs["qa"])
    long_context = " ".join(sst2_sentences(200))[:MAX_CHARS]
    windows = encode_windows(["what was the film like?"], [long_context], qa.tokenizer)
    assert len(windows) >= 3  # the answer is searched across several overlapping windows
    items = [("what was the film like?", long_context), ("Where was Jim Henson from?", sentences[0])]
    status, body = call(url + "/v1/qa", {"input": [{"question": q, "context": c} for q, c in items]})
    assert status == 200, body
    same(body["results"], qa(question=[q for q, _ in items], context=[c for _, c in items]))
    assert all(r["answer"] == c[r["start"]:r["end"]] for r, (_, c) in zip(body["results"], items))

    text = "The animal didn't cross the street because it was too tired."
    status, body = call(url + "/v1/attention", {"input": text, "model": "minilm"})
    assert status == 200, body
    maps = pipeline("attention", model=model_dirs["minilm"], max_length=128)(text)
    assert body["tokens"] == maps.tokens and body["truncated"] is False
    np.testing.assert_allclose(np.array(body["attentions"]), maps.weights, atol=6e-5)  # rounded to 4 decimals

    status, body = call(url + "/v1/tokenize", {"input": texts[:2], "model": "qa"})
    assert status == 200, body
    tokenizer = qa.tokenizer
    for result, t in zip(body["results"], texts):
        encoded = tokenizer(t, return_offsets_mapping=True)
        assert result == {"tokens": tokenizer.convert_ids_to_tokens(encoded["input_ids"]),
                          "input_ids": encoded["input_ids"], "offsets": [list(o) for o in encoded["offset_mapping"]]}


def test_attention_and_tokenize(server, default_model_dir):
    from transformers import BertModel, BertTokenizerFast

    url, _ = server
    text = "The animal didn't cross the street because it was too tired."
    status, body = call(url + "/v1/attention", {"input": text, "model": "minilm"})
    assert status == 200, body
    maps = np.array(body["attentions"])
    tokenizer = BertTokenizerFast.from_pretrained(str(default_model_dir))
    assert body["tokens"] == tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    assert maps.shape == (6, 12, len(body["tokens"]), len(body["tokens"]))
    np.testing.assert_allclose(maps.sum(-1), 1, atol=1e-3)
    reference = BertModel.from_pretrained(str(default_model_dir), attn_implementation="eager").eval()
    with torch.no_grad():
        expected = reference(**tokenizer(text, return_tensors="pt"), output_attentions=True).attentions
    np.testing.assert_allclose(maps[3, 5], expected[3][0, 5].numpy(), atol=1e-4)
    status, one = call(url + "/v1/attention", {"input": text, "layer": 3, "head": 5})
    assert status == 200 and np.array(one["attentions"]).shape == (1, 1, maps.shape[2], maps.shape[3])
    np.testing.assert_allclose(np.array(one["attentions"])[0, 0], maps[3, 5])
    status, error = call(url + "/v1/attention", {"input": text, "layer": 6})
    assert status == 422 and "layer must be in 0..5" in error["error"]["message"] and error["error"]["param"] == "layer"

    status, body = call(url + "/v1/tokenize", {"input": ["Hello, wordpieces!", text]})
    assert status == 200
    for result, t in zip(body["results"], ["Hello, wordpieces!", text]):
        encoded = tokenizer(t, return_offsets_mapping=True)
        assert result["input_ids"] == encoded["input_ids"]
        assert result["tokens"] == tokenizer.convert_ids_to_tokens(encoded["input_ids"])
        assert [tuple(o) for o in result["offsets"]] == [tuple(o) for o in encoded["offset_mapping"]]


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
     "input[0].question is empty"),
    ("a long text named by its object and field", "/v1/qa",
     json.dumps({"input": [{"question": "q", "context": "c"}, {"question": "q", "context": "c" * (MAX_CHARS + 1)}]}),
     413, f"input[1].context has {MAX_CHARS + 1} characters"),
    ("blank text", "/v1/embeddings", json.dumps({"input": ["ok", "", " "]}), 422, "input[1] is empty"),
    ("blank second text of a pair", "/v1/classify", json.dumps({"input": ["fine", {"text": "a", "text_pair": " "}]}),
     422, "input[1].text_pair is empty"),
    # a lone surrogate is valid JSON but no text: the answers that echo it could not be encoded
    ("lone surrogate", "/v1/ner", json.dumps({"input": "Paris\ud800 London"}), 422,
     "input[0]: character 6 is a lone surrogate U+D800, not text"),
    ("lone surrogate in a QA context", "/v1/qa", json.dumps({"input": {"question": "who?", "context": "Rollo\ud800."}}),
     422, "input[0].context: character 6 is a lone surrogate"),
    ("lone surrogate before a mask", "/v1/fill-mask", json.dumps({"input": "\ud800 [MASK]"}), 422,
     "input[0]: character 1 is a lone surrogate"),
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

"""`bertforge serve` over real HTTP: a uvicorn server on a free loopback port, every endpoint's
answers checked against transformers / sentence-transformers and against `bertforge.pipeline`, and
concurrent requests batched without changing them."""

from __future__ import annotations

import base64
import threading

import numpy as np
import pytest
import torch

from bertforge.tokenization import BertTokenizer
from conftest import sst2_sentences
from server_fixtures import MAX_CHARS
from server_helpers import call, metric

# The fixtures model_dirs, models and server (tests/server_fixtures.py), shared with tests/test_server_errors.py.
pytest_plugins = ["server_fixtures"]


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

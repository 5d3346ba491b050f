"""The HTTP API (FastAPI): one endpoint per task, the web page at `/`, `/health` and `/metrics`.

Every inference endpoint checks the request against the limits (limits.py), queues its inputs
for the dynamic batcher and answers with what the model's pipeline returns (models.py), run in a
child process of the server's by default (inference.py). Errors come back as JSON in the OpenAI
shape (errors.py).
"""

from __future__ import annotations

import asyncio
import base64
from importlib import resources

import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from bertforge.server.batching import Batcher
from bertforge.server.errors import ApiError, install_error_handlers
from bertforge.server.gate import CLIENT_CLOSED, Gate
from bertforge.server.inference import ModelCall, make_runner
from bertforge.server.limits import ServerSettings, check_fill_mask, check_texts, encode_answer
from bertforge.server.metrics import Metrics
from bertforge.server.models import ServedModel
from bertforge.server.schemas import (AttentionRequest, ClassifyRequest, EmbeddingsRequest, FillMaskRequest,
                                      NerRequest, NextSentenceRequest, QARequest, TokenizeRequest)


def as_list(value) -> tuple[list, bool]:
    """The request's inputs as a list, and whether it sent one input alone (its errors name `input`, not
    `input[0]`)."""
    return (value, False) if isinstance(value, list) else ([value], True)


def create_app(models: list[ServedModel], settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    if not models:
        raise ValueError("create_app needs at least one model")
    served = {m.name: m for m in models}
    metrics = Metrics()
    # the models run with the thread count of this process at the time (`bertforge serve --threads`)
    runner = make_runner(settings.inference, served, torch.get_num_threads(), settings.max_batch_size)
    batcher = Batcher(metrics, runner, settings.max_batch_size, settings.max_wait_ms, settings.batching,
                      settings.max_queue)
    metrics.queue_depth = lambda: batcher.queue_depth

    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="bertforge", version="0.1.0", lifespan=lifespan,
                  description="BERT models over HTTP: embeddings (OpenAI-compatible), fill-mask, next-sentence, "
                              "classification, NER, question answering, attention maps and tokenization.")
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings
    install_error_handlers(app)

    def pick(name: str | None, task: str) -> ServedModel:
        if name is not None:
            if name not in served:
                raise ApiError(404, "model_not_found", f"unknown model {name!r}; loaded: {', '.join(served)}",
                               "model", loaded=list(served))
            if task not in served[name].tasks:
                able = [m.name for m in models if task in m.tasks]
                raise ApiError(400, "unsupported_task", f"model {name!r} ({served[name].architecture}) does not do "
                               f"{task}; models that do: {', '.join(able) or 'none'}", "model")
            return served[name]
        for model in models:
            if task in model.tasks:
                return model
        raise ApiError(404, "model_not_found", f"no loaded model does {task}; loaded: "
                       + ", ".join(f"{m.name} ({m.architecture})" for m in models), "model", loaded=list(served))

    async def until_disconnect(request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def run_batched(request: Request, run: ModelCall, payloads: list, lengths: list[int]):
        """The batched results, or None when the client went away first (its inputs are dropped)."""
        work = asyncio.ensure_future(batcher.submit(run, payloads, lengths))
        gone = asyncio.ensure_future(until_disconnect(request))
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if work.done():
            return work.result()
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        metrics.observe_cancelled()
        return None

    async def answer(payload: dict | None) -> Response:
        if payload is None:
            return Response(status_code=CLIENT_CLOSED)
        return await asyncio.to_thread(encode_answer, settings, payload)

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(resources.files("bertforge.server").joinpath("static/index.html").read_text("utf-8"))

    @app.get("/health", tags=["service"])
    async def health():
        if not runner.alive:  # a supervisor or load balancer should restart or bypass this server
            return JSONResponse({"status": "inference process stopped", "models": list(served),
                                 "queue_depth": batcher.queue_depth}, status_code=503)
        return {"status": "ok", "models": list(served), "queue_depth": batcher.queue_depth}

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", tags=["service"])
    async def list_models():
        limits = {name: getattr(settings, name) for name in ("max_texts", "max_chars", "max_masks", "max_results",
                                                             "max_response_bytes")}
        return {"object": "list", "data": [m.describe() for m in models], "limits": limits}

    @app.post("/v1/embeddings", tags=["inference"])
    async def embeddings(body: EmbeddingsRequest, request: Request):
        """OpenAI-compatible sentence embeddings."""
        model = pick(body.model, "embeddings")
        texts, single = as_list(body.input)
        check_texts(settings, texts, single=single)
        results = await run_batched(request, ModelCall(model.name, "run_embeddings"), texts, [len(t) for t in texts])
        if results is None:
            return await answer(None)
        data = []
        for i, (vector, _) in enumerate(results):
            encoded = base64.b64encode(vector.astype("<f4").tobytes()).decode() \
                if body.encoding_format == "base64" else vector.tolist()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(count for _, count in results)
        return await answer({"object": "list", "data": data, "model": model.name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.post("/v1/fill-mask", tags=["inference"])
    async def fill_mask(body: FillMaskRequest, request: Request):
        """Candidates for each [MASK]: Hugging Face's fill-mask output for each input text."""
        model = pick(body.model, "fill-mask")
        texts, single = as_list(body.input)
        check_texts(settings, texts, single=single)
        check_fill_mask(settings, texts, body.top_k, model.pipelines["fill-mask"], single)
        results = await run_batched(request, ModelCall(model.name, "run_fill_mask", (("top_k", body.top_k),)), texts,
                                    [len(t) for t in texts])
        return await answer(None if results is None else {"model": model.name, "results": results})

    @app.post("/v1/next-sentence", tags=["inference"])
    async def next_sentence(body: NextSentenceRequest, request: Request):
        """Probability that `text_pair` follows `text` (BERT's next-sentence head)."""
        model = pick(body.model, "next-sentence")
        given, single = as_list(body.input)
        pairs = [(p.text, p.text_pair) for p in given]
        check_texts(settings, pairs, ("text", "text_pair"), single)
        results = await run_batched(request, ModelCall(model.name, "run_next_sentence"), pairs,
                                    [len(a) + len(b) for a, b in pairs])
        return await answer(None if results is None else {"model": model.name, "results": results})

    @app.post("/v1/classify", tags=["inference"])
    async def classify(body: ClassifyRequest, request: Request):
        """Every label's probability, best first, from a fine-tuned sequence classifier (texts or pairs)."""
        model = pick(body.model, "classify")
        inputs, single = as_list(body.input)
        given = [x if isinstance(x, str) else (x.text, x.text_pair) for x in inputs]
        check_texts(settings, given, ("text", "text_pair"), single)
        items = [(x, None) if isinstance(x, str) else x for x in given]
        results = await run_batched(request, ModelCall(model.name, "run_classify"), items,
                                    [len(a) + len(b or "") for a, b in items])
        return await answer(None if results is None else {"model": model.name, "results": results})

    @app.post("/v1/ner", tags=["inference"])
    async def ner(body: NerRequest, request: Request):
        """Named entities with character offsets (a fine-tuned token classifier), over the whole text: one
        longer than the model's length is read in windows overlapping by 128 word pieces (the pipeline's
        `stride=128`)."""
        model = pick(body.model, "ner")
        texts, single = as_list(body.input)
        check_texts(settings, texts, single=single)
        results = await run_batched(request, ModelCall(model.name, "run_ner"), texts, [len(t) for t in texts])
        return await answer(None if results is None else {"model": model.name, "results": results})

    @app.post("/v1/qa", tags=["inference"])
    async def qa(body: QARequest, request: Request):
        """The answer span in each context (a fine-tuned extractive question-answering model)."""
        model = pick(body.model, "qa")
        given, single = as_list(body.input)
        items = [(x.question, x.context) for x in given]
        check_texts(settings, items, ("question", "context"), single)
        results = await run_batched(request, ModelCall(model.name, "run_qa"), items,
                                    [len(q) + len(c) for q, c in items])
        return await answer(None if results is None else {"model": model.name, "results": results})

    @app.post("/v1/attention", tags=["inference"])
    async def attention(body: AttentionRequest, request: Request):
        """Attention weights of every layer and head (or the one asked for) over the text's tokens."""
        model = pick(body.model, "attention")
        check_texts(settings, [body.input], single=True)
        problem = model.check_attention(body.layer, body.head)
        if problem is not None:
            raise ApiError(422, "invalid_request_error", problem[1], problem[0])
        result = await batcher.call(ModelCall(model.name, "run_attention"), body.input, body.layer, body.head)
        return await answer({"model": model.name, **result})

    @app.post("/v1/tokenize", tags=["inference"])
    async def tokenize(body: TokenizeRequest):
        """WordPiece tokens, ids and character offsets."""
        model = pick(body.model, "tokenize")
        texts, single = as_list(body.input)
        check_texts(settings, texts, single=single)
        results = await asyncio.to_thread(model.run_tokenize, texts)
        return await answer({"model": model.name, "results": results})

    app.add_middleware(Gate, settings=settings, metrics=metrics, endpoints={route.path for route in app.routes})
    return app

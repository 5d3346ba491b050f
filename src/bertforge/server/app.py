"""The HTTP API (FastAPI): one endpoint per task, the web page at `/`, `/health` and `/metrics`.

Errors always come back as JSON in the OpenAI shape, `{"error": {"message", "type", "param",
"code"}}`, with the HTTP status that says whose fault it was: 400 unreadable body, 401 API key,
404 unknown model, 413 a size limit, 422 well-formed but invalid input, 503 queue full.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Literal, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from bertforge.errors import BertforgeError
from bertforge.server.batching import Batcher, QueueFullError
from bertforge.server.metrics import Metrics
from bertforge.server.models import ServedModel

log = logging.getLogger(__name__)

PUBLIC_PATHS = {"/health", "/"}  # the page holds no data; its API calls carry the key
CLIENT_CLOSED = 499  # nginx's status for "client closed the request": only ever seen in metrics


@dataclass
class ServerSettings:
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    batching: bool = True
    api_key: str | None = None
    max_texts: int = 64  # per request
    max_chars: int = 5000  # per text
    max_queue: int = 4096  # inputs waiting for the model, all requests together

    @property
    def max_body_bytes(self) -> int:
        # every text at the limit, fully \u-escaped (6 bytes a character), plus room for the JSON around it
        return 2 * self.max_texts * self.max_chars * 6 + 65536


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, param: str | None = None, **extra):
        super().__init__(message)
        self.status, self.kind, self.message, self.param, self.extra = status, kind, message, param, extra

    def response(self) -> JSONResponse:
        return error_response(self.status, self.kind, self.message, self.param, **self.extra)


def error_response(status: int, kind: str, message: str, param: str | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status, **extra}},
                        status_code=status)


# ---- request bodies ------------------------------------------------------------------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Texts = Union[StrictStr, Annotated[list[StrictStr], Field(min_length=1)]]


class TextPair(Strict):
    text: StrictStr
    text_pair: StrictStr


class QAInput(Strict):
    question: StrictStr
    context: StrictStr


class EmbeddingsRequest(BaseModel):
    # OpenAI clients send fields we do not use (user, dimensions...): accepted and ignored.
    input: Texts
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"


class FillMaskRequest(Strict):
    input: Texts
    model: StrictStr | None = None
    top_k: StrictInt = Field(5, ge=1, le=50)


class NextSentenceRequest(Strict):
    input: Union[TextPair, Annotated[list[TextPair], Field(min_length=1)]]
    model: StrictStr | None = None


class ClassifyRequest(Strict):
    input: Union[StrictStr, TextPair, Annotated[list[Union[StrictStr, TextPair]], Field(min_length=1)]]
    model: StrictStr | None = None


class NerRequest(Strict):
    input: Texts
    model: StrictStr | None = None


class QARequest(Strict):
    input: Union[QAInput, Annotated[list[QAInput], Field(min_length=1)]]
    model: StrictStr | None = None


class AttentionRequest(Strict):
    input: StrictStr
    model: StrictStr | None = None
    layer: StrictInt | None = None
    head: StrictInt | None = None


class TokenizeRequest(Strict):
    input: Texts
    model: StrictStr | None = None


# ---- the gate: body checks, API key, metrics -------------------------------------------------
class Gate:
    """Pure ASGI middleware (it must not hide client disconnects from the endpoints): checks the
    API key, reads the body within the size limit and checks it is UTF-8, and records metrics."""

    def __init__(self, app, settings: ServerSettings, metrics: Metrics, endpoints: set[str]):
        self.app, self.settings, self.metrics, self.endpoints = app, settings, metrics, endpoints

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [CLIENT_CLOSED]

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_and_record)
        finally:
            path = scope["path"] if scope["path"] in self.endpoints else "other"
            self.metrics.observe_request(scope["method"], path, status[0], time.perf_counter() - started)

    async def _handle(self, scope, receive, send):
        if self.settings.api_key and scope["path"] not in PUBLIC_PATHS and not self._authorised(scope):
            return await error_response(401, "authentication_error", "missing or wrong API key: send "
                                        "'Authorization: Bearer KEY' or 'X-API-Key: KEY'")(scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        body, limit = bytearray(), self.settings.max_body_bytes
        too_large = error_response(413, "limit_exceeded", f"request body over {limit} bytes (max_body_bytes, from "
                                   f"max_texts={self.settings.max_texts} and max_chars={self.settings.max_chars})",
                                   limit="max_body_bytes")
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > limit:  # refused before reading any of it
            return await too_large(scope, receive, send)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                return await too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError as e:
            return await error_response(400, "invalid_request_error", f"request body is not valid UTF-8 "
                                        f"(byte {e.start}: {e.reason})")(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: wait for the client to go away

        await self.app(scope, replay, send)

    def _authorised(self, scope) -> bool:
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key", b"").decode("latin-1")
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        return hmac.compare_digest(given.encode(), self.settings.api_key.encode())


# ---- the app -------------------------------------------------------------------------------
def create_app(models: list[ServedModel], settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    if not models:
        raise ValueError("create_app needs at least one model")
    served = {m.name: m for m in models}
    metrics = Metrics()
    batcher = Batcher(metrics, settings.max_batch_size, settings.max_wait_ms, settings.batching, settings.max_queue)
    metrics.queue_depth = lambda: batcher.queue_depth

    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="bertforge", version="0.1.0", lifespan=lifespan,
                  description="BERT models over HTTP: embeddings (OpenAI-compatible), fill-mask, next-sentence, "
                              "classification, NER, question answering, attention maps and tokenization.")
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            detail = errors[0].get("ctx", {}).get("error", "")
            return error_response(400, "invalid_request_error", f"malformed JSON body: {detail}".rstrip(": "))
        if errors[0]["loc"] == ("body",) and errors[0]["type"] == "missing":
            return error_response(422, "invalid_request_error", "a JSON object body is required")
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors[:5]]
        first = ".".join(str(p) for p in errors[0]["loc"][1:]) or None
        return error_response(422, "invalid_request_error", "; ".join(problems), first)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return error_response(exc.status_code, "invalid_request_error", str(exc.detail))

    @app.exception_handler(BertforgeError)
    async def bertforge_error(request, exc: BertforgeError):
        return error_response(422, "invalid_request_error", str(exc))

    @app.exception_handler(QueueFullError)
    async def queue_full(request, exc: QueueFullError):
        return error_response(503, "server_busy", f"server busy: {exc}; retry later")

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

    def check_limits(texts: list[str], param: str = "input") -> None:
        if len(texts) > settings.max_texts:
            raise ApiError(413, "limit_exceeded", f"{len(texts)} texts in {param!r}; the limit is "
                           f"max_texts={settings.max_texts}", param, limit="max_texts", max_texts=settings.max_texts)
        for i, text in enumerate(texts):
            if len(text) > settings.max_chars:
                raise ApiError(413, "limit_exceeded", f"{param}[{i}] has {len(text)} characters; the limit is "
                               f"max_chars={settings.max_chars}", f"{param}[{i}]", limit="max_chars",
                               max_chars=settings.max_chars)

    async def until_disconnect(request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def run_batched(request: Request, key: tuple, run, payloads: list, lengths: list[int]):
        """The batched results, or None when the client went away first (its inputs are dropped)."""
        work = asyncio.ensure_future(batcher.submit(key, run, payloads, lengths))
        gone = asyncio.ensure_future(until_disconnect(request))
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if work.done():
            return work.result()
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        metrics.observe_cancelled()
        return None

    def closed() -> Response:
        return Response(status_code=CLIENT_CLOSED)

    def as_list(value) -> list:
        return value if isinstance(value, list) else [value]

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(resources.files("bertforge.server").joinpath("static/index.html").read_text("utf-8"))

    @app.get("/health", tags=["service"])
    async def health():
        return {"status": "ok", "models": list(served), "queue_depth": batcher.queue_depth}

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", tags=["service"])
    async def list_models():
        return {"object": "list", "data": [m.describe() for m in models],
                "limits": {"max_texts": settings.max_texts, "max_chars": settings.max_chars}}

    @app.post("/v1/embeddings", tags=["inference"])
    async def embeddings(body: EmbeddingsRequest, request: Request):
        """OpenAI-compatible sentence embeddings."""
        model = pick(body.model, "embeddings")
        texts = as_list(body.input)
        check_limits(texts)
        results = await run_batched(request, (model.name, "embeddings"), model.run_embeddings, texts,
                                    [len(t) for t in texts])
        if results is None:
            return closed()
        data = []
        for i, (vector, _) in enumerate(results):
            encoded = base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode() \
                if body.encoding_format == "base64" else vector.tolist()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(count for _, count in results)
        # JSONResponse directly: FastAPI's generic encoder walks every float, on the event loop
        return JSONResponse({"object": "list", "data": data, "model": model.name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.post("/v1/fill-mask", tags=["inference"])
    async def fill_mask(body: FillMaskRequest, request: Request):
        """Candidates for each [MASK]: Hugging Face's fill-mask output for each input text."""
        model = pick(body.model, "fill-mask")
        texts = as_list(body.input)
        check_limits(texts)
        for i, text in enumerate(texts):
            try:
                model.check_fill_mask(text)
            except BertforgeError as e:
                raise ApiError(422, "invalid_request_error", f"input[{i}]: {e}", f"input[{i}]") from None
        results = await run_batched(request, (model.name, "fill-mask", body.top_k),
                                    lambda batch: model.run_fill_mask(batch, body.top_k), texts,
                                    [len(t) for t in texts])
        return closed() if results is None else {"model": model.name, "results": results}

    @app.post("/v1/next-sentence", tags=["inference"])
    async def next_sentence(body: NextSentenceRequest, request: Request):
        """Probability that `text_pair` follows `text` (BERT's next-sentence head)."""
        model = pick(body.model, "next-sentence")
        pairs = [(p.text, p.text_pair) for p in as_list(body.input)]
        check_limits([t for pair in pairs for t in pair])
        results = await run_batched(request, (model.name, "next-sentence"), model.run_next_sentence, pairs,
                                    [len(a) + len(b) for a, b in pairs])
        return closed() if results is None else {"model": model.name, "results": results}

    @app.post("/v1/classify", tags=["inference"])
    async def classify(body: ClassifyRequest, request: Request):
        """Label probabilities from a fine-tuned sequence classifier (single texts or pairs)."""
        model = pick(body.model, "classify")
        items = [(x, None) if isinstance(x, str) else (x.text, x.text_pair) for x in as_list(body.input)]
        check_limits([t for item in items for t in item if t is not None])
        results = await run_batched(request, (model.name, "classify"), model.run_classify, items,
                                    [len(a) + len(b or "") for a, b in items])
        return closed() if results is None else {"model": model.name, "results": results}

    @app.post("/v1/ner", tags=["inference"])
    async def ner(body: NerRequest, request: Request):
        """Named entities with character offsets (a fine-tuned token classifier)."""
        model = pick(body.model, "ner")
        texts = as_list(body.input)
        check_limits(texts)
        results = await run_batched(request, (model.name, "ner"), model.run_ner, texts, [len(t) for t in texts])
        return closed() if results is None else {"model": model.name, "results": results}

    @app.post("/v1/qa", tags=["inference"])
    async def qa(body: QARequest, request: Request):
        """The answer span in each context (a fine-tuned extractive question-answering model)."""
        model = pick(body.model, "qa")
        items = [(x.question, x.context) for x in as_list(body.input)]
        check_limits([t for item in items for t in item])
        results = await run_batched(request, (model.name, "qa"), model.run_qa, items,
                                    [len(q) + len(c) for q, c in items])
        return closed() if results is None else {"model": model.name, "results": results}

    @app.post("/v1/attention", tags=["inference"])
    async def attention(body: AttentionRequest, request: Request):
        """Attention weights of every layer and head (or the one asked for) over the text's tokens."""
        model = pick(body.model, "attention")
        check_limits([body.input])
        result = await batcher.call(model.run_attention, body.input, body.layer, body.head)
        return JSONResponse({"model": model.name, **result})

    @app.post("/v1/tokenize", tags=["inference"])
    async def tokenize(body: TokenizeRequest):
        """WordPiece tokens, ids and character offsets."""
        model = pick(body.model, "tokenize")
        texts = as_list(body.input)
        check_limits(texts)
        results = await asyncio.to_thread(model.run_tokenize, texts)
        return {"model": model.name, "results": results}

    app.add_middleware(Gate, settings=settings, metrics=metrics, endpoints={route.path for route in app.routes})
    return app

"""Errors as JSON in the OpenAI shape, `{"error": {"message", "type", "param", "code"}}`, with the
HTTP status that says whose fault it was: 400 unreadable body, 401 API key, 404 unknown model,
413 a size limit, 422 well-formed but invalid input, 503 queue full or the inference process gone."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bertforge.errors import BertforgeError
from bertforge.server.batching import QueueFullError
from bertforge.server.inference import InferenceProcessGone


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, param: str | None = None, **extra):
        super().__init__(message)
        self.status, self.kind, self.message, self.param, self.extra = status, kind, message, param, extra

    def response(self) -> JSONResponse:
        return error_response(self.status, self.kind, self.message, self.param, **self.extra)


def limit_exceeded(message: str, limit: str, value: int, param: str | None = None) -> ApiError:
    """413 naming the limit (and its value) that the request went over."""
    return ApiError(413, "limit_exceeded", message, param, limit=limit, **{limit: value})


def error_response(status: int, kind: str, message: str, param: str | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status, **extra}},
                        status_code=status)


def _place(loc: tuple) -> str:
    """A validation error's place as the request wrote it (input[1].text), without the names pydantic gives
    the branches of a union (str, list[str], TextPair)."""
    place = ""
    for part in loc[1:]:
        if isinstance(part, int):
            place += f"[{part}]"
        elif part.isidentifier() and part not in ("str", "int", "float", "bool") and not part[:1].isupper():
            place += f".{part}" if place else part
    return place or "body"


def install_error_handlers(app: FastAPI) -> None:
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
        # The deepest place first: of a union's branches, the one that got furthest names the culprit.
        places = list(dict.fromkeys((_place(e["loc"]), e["msg"]) for e in sorted(errors, key=lambda e: -len(e["loc"]))))
        problems = [f"{place}: {message}" for place, message in places[:5]]
        return error_response(422, "invalid_request_error", "; ".join(problems), places[0][0])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return error_response(exc.status_code, "invalid_request_error", str(exc.detail))

    @app.exception_handler(BertforgeError)
    async def bertforge_error(request, exc: BertforgeError):
        return error_response(422, "invalid_request_error", str(exc))

    @app.exception_handler(QueueFullError)
    async def queue_full(request, exc: QueueFullError):
        return error_response(503, "server_busy", f"server busy: {exc}; retry later")

    @app.exception_handler(InferenceProcessGone)
    async def inference_gone(request, exc: InferenceProcessGone):
        return error_response(503, "inference_unavailable", "the inference process has stopped (killed, or out of "
                              "memory?); restart the server")

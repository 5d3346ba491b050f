"""The gate in front of every endpoint: API key, body size and encoding, and request metrics."""

from __future__ import annotations

import hmac
import time

from bertforge.server.errors import error_response
from bertforge.server.limits import ServerSettings
from bertforge.server.metrics import Metrics

PUBLIC_PATHS = {"/health", "/"}  # the page holds no data; its API calls carry the key
CLIENT_CLOSED = 499  # nginx's status for "client closed the request": only ever seen in metrics


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
        media_type = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type != b"application/json" and scope["path"] in self.endpoints:
            # FastAPI would read any other body as no JSON at all and blame the fields
            return await error_response(415, "invalid_request_error", "the body must be JSON, sent with "
                                        "'Content-Type: application/json' (got "
                                        f"{media_type.decode('latin-1') or 'no Content-Type'})")(scope, receive, send)
        encoding = dict(scope["headers"]).get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"", b"identity") and scope["path"] in self.endpoints:
            # the body would be read as it came, and a compressed one blamed for not being UTF-8
            return await error_response(415, "invalid_request_error", f"Content-Encoding "
                                        f"{encoding.decode('latin-1')}: the body must be sent uncompressed"
                                        )(scope, receive, send)
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
        # HTTP headers are latin-1; the key is ASCII (ServerSettings refuses any other), so the bytes compare.
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key", b"")
        authorization = headers.get(b"authorization", b"")
        if authorization.lower().startswith(b"bearer "):
            given = authorization[7:].strip()
        return hmac.compare_digest(given, self.settings.api_key.encode("ascii"))

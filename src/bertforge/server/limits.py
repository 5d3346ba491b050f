"""What one request may cost: the server's limits, checked before any work is queued, and the
size of every answer, checked before it is sent. Every refusal is a 413 naming its limit."""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi.responses import Response

from bertforge.errors import ConfigError, first_non_text
from bertforge.server.errors import ApiError, limit_exceeded
from bertforge.tokenization.basic import has_text

CANDIDATE_OVERHEAD = 100  # bytes of a fill-mask candidate besides its sequence: score, token, token_str, keys


@dataclass
class ServerSettings:
    max_batch_size: int = 32
    max_wait_ms: float = 0.0  # collect what is queued and go (docs/benchmarks.md, forty-second session)
    batching: bool = True
    api_key: str | None = None
    max_texts: int = 64  # per request
    max_chars: int = 5000  # per text
    max_queue: int = 4096  # inputs waiting for the model, all requests together
    max_masks: int = 20  # [MASK] tokens in one fill-mask text
    max_results: int = 1000  # fill-mask candidates in one answer: masks of all its texts × top_k
    max_response_bytes: int = 32 * 2**20  # the JSON of one answer
    inference: str = "process"  # where the models run: "process" (a child of their own) or "thread" (inference.py)

    def __post_init__(self):
        # Clients send the key in an HTTP header, whose bytes are latin-1: a non-ASCII key would
        # reach us as other characters than the ones typed, so it could never match.
        if self.api_key is not None and not self.api_key.isascii():
            bad = next(ch for ch in self.api_key if not ch.isascii())
            raise ConfigError(f"--api-key (or BERTFORGE_API_KEY): {bad!r} is not ASCII; HTTP headers carry "
                              "ASCII keys only, so choose one of letters, digits and punctuation")
        if self.inference not in ("process", "thread"):
            raise ConfigError(f"inference must be 'process' or 'thread', got {self.inference!r}")
        for name in ("max_batch_size", "max_texts", "max_chars", "max_queue", "max_masks", "max_results",
                     "max_response_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def max_body_bytes(self) -> int:
        # every text at the limit, fully \u-escaped (6 bytes a character), plus room for the JSON around it
        return 2 * self.max_texts * self.max_chars * 6 + 65536


def input_place(i: int, single: bool) -> str:
    """How the request wrote its i-th input: `input` where it sent one input alone, not a list."""
    return "input" if single else f"input[{i}]"


def check_texts(settings: ServerSettings, items: list, fields: tuple[str, ...] = (), single: bool = False) -> None:
    """Before the model runs: the request's texts within the limits, none blank, each valid UTF-8 (a lone
    surrogate would fail later, in the answer that echoes it). `items` are the texts of `input` or, with
    `fields`, its objects as tuples of texts (None where an optional one is absent), and `single` says the
    request sent one input, not a list, so that a message names the text as the request wrote it: input,
    input.field, input[i], input[i].field."""
    named = []
    for i, item in enumerate(items):
        place = input_place(i, single)
        if isinstance(item, str):
            named.append((place, item))
        else:
            named += [(f"{place}.{field}", text) for field, text in zip(fields, item) if text is not None]
    if len(named) > settings.max_texts:
        counted = f"{len(named)} texts" + (f" ({len(items)} items)" if len(named) != len(items) else "")
        raise limit_exceeded(f"{counted} in 'input'; the limit is max_texts={settings.max_texts}", "max_texts",
                             settings.max_texts, "input")
    for where, text in named:
        if len(text) > settings.max_chars:
            raise limit_exceeded(f"{where} has {len(text)} characters; the limit is max_chars={settings.max_chars}",
                                 "max_chars", settings.max_chars, where)
        if not has_text(text):  # as the pipelines judge it: spaces or zero-width characters alone are empty
            raise ApiError(422, "invalid_request_error", f"{where} is empty", where)
        found = first_non_text(text)
        if found is not None:
            raise ApiError(422, "invalid_request_error", f"{where}: character {found[0]} is a {found[1]}, not text",
                           where)


def check_fill_mask(settings: ServerSettings, texts: list[str], top_k: int, pipe, single: bool = False) -> None:
    """Masks per text, candidates per answer, and the answer's size, before the model runs: each
    candidate repeats its whole text, so texts × masks × top_k is what a request costs. Then the
    fill-mask pipeline's own check (`pipe.first_unfillable`), so that the error names the input (`single`:
    as check_texts)."""
    mask_token = pipe.tokenizer.mask_token
    masks = [text.count(mask_token) for text in texts]
    for i, count in enumerate(masks):  # a text with none is the pipeline's to name, below
        if count > settings.max_masks:
            where = input_place(i, single)
            raise limit_exceeded(f"{where} has {count} {mask_token} tokens; the limit is "
                                 f"max_masks={settings.max_masks}", "max_masks", settings.max_masks, where)
    results = sum(masks) * top_k
    if results > settings.max_results:
        raise limit_exceeded(f"{sum(masks)} masks × top_k={top_k} = {results} candidates; the limit is "
                             f"max_results={settings.max_results}", "max_results", settings.max_results, "top_k")
    problem = pipe.first_unfillable(texts)
    if problem is not None:
        where = input_place(problem[0], single)
        raise ApiError(422, "invalid_request_error", f"{where}: {problem[1]}", where)
    # A decoded sequence is at most about twice its text (spaces around punctuation).
    size = sum(count * top_k * (2 * len(text.encode()) + CANDIDATE_OVERHEAD) for text, count in zip(texts, masks))
    if size > settings.max_response_bytes:
        raise limit_exceeded(f"the answer would take about {size} bytes (every candidate repeats its text); the "
                             f"limit is max_response_bytes={settings.max_response_bytes}", "max_response_bytes",
                             settings.max_response_bytes)


def encode_answer(settings: ServerSettings, payload: dict) -> Response:
    """The JSON answer, refused when it is over max_response_bytes. Called off the event loop: a
    large answer takes a while to encode."""
    body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    if len(body) > settings.max_response_bytes:
        raise limit_exceeded(f"the answer is {len(body)} bytes; the limit is max_response_bytes="
                             f"{settings.max_response_bytes}: send fewer or shorter inputs", "max_response_bytes",
                             settings.max_response_bytes)
    return Response(body, media_type="application/json")

"""The web server's bounds on what one visitor may ask of it, in one place.

The page and its API (`/ask`, `/batch`) check the same limits with the same functions, so a
request refused on one is refused on the other with the same line. docs/serving.md holds them
as a table (`LIMITS` below; a test keeps the two in step). Raw HTTP calls to the API
(`POST /gradio_api/call/ask`) are refused with HTTP 400 and `{"error": line}` before they are
queued (`ApiBounds`); gradio_client's calls get the same line as an error from the endpoint.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
from collections.abc import Callable

from qa.assistant import MAX_QUESTION_CHARS
from qa.documents import ARTICLE_CAP
from qa.errors import InputError
from qa.extraction import SOURCE_CAP
from qa.upload_guard import ASGIApp, Receive, Scope, Send, replaying

log = logging.getLogger("qa.web")

MAX_TOP_K = 5
MAX_BATCH_BYTES = 2 * 1024 * 1024
MAX_BATCH_QUESTIONS = 1000
MAX_INDEX_SECONDS = 180.0  # a 1 MB article takes ~110 s on 2 idle cores; a slower server refuses it
INDEX_SECONDS_ENV = "QA_MAX_INDEX_SECONDS"
INDEX_QUEUE = 2  # visitors' articles waiting to be indexed, besides the one being indexed
BATCH_QUEUE = 4  # question files waiting, besides the one being answered
QUEUE_SIZE = 256  # requests of any kind waiting in Gradio's queue
# Bulk work holds the models for this much at a time (see qa.lanes), ~0.1 s each on 2 cores, so
# that a question waits little for it: a question takes ~0.2 s there.
EMBED_SLICE = 2  # chunks of a visitor's article (1 chunk: ~50 ms; 2: 5% less time per chunk than 1)
READ_SLICE = 1  # (question, passage) pairs of a batch read at once
BATCH_SLICE = 8  # questions of a batch answered (retrieved, read pair by pair, decided) at once

# (input, limit, where it applies): docs/serving.md shows these rows.
LIMITS: list[tuple[str, str, str]] = [
    ("question", f"{MAX_QUESTION_CHARS} characters", "Ask tab, `/ask`, each question of a batch"),
    ("top-k (answers per question)", f"1 to {MAX_TOP_K}", "Settings slider, `/ask`, `/batch`"),
    ("questions file", f"{MAX_BATCH_BYTES // (1024 * 1024)} MB", "Batch tab, `/batch`"),
    ("questions in one file", f"{MAX_BATCH_QUESTIONS:,}", "Batch tab, `/batch`"),
    (
        "pasted or uploaded article",
        f"{ARTICLE_CAP} of text ({SOURCE_CAP} for a web page or PDF file)",
        "Your article tab",
    ),
    (
        "time to index an article",
        f"{MAX_INDEX_SECONDS:g} s (estimated first; `{INDEX_SECONDS_ENV}`)",
        "Your article tab",
    ),
    ("articles being indexed", f"1 at a time, {INDEX_QUEUE} waiting", "Your article tab"),
    ("question files being answered", f"1 at a time, {BATCH_QUEUE} waiting", "Batch tab, `/batch`"),
    ("requests waiting in all", f"{QUEUE_SIZE}", "everything"),
]


class Busy(InputError):
    """A lane's queue is full: refused at once (HTTP 429 for a raw call), to be tried again later."""


def max_index_seconds() -> float:
    """The server's limit on the time to index a visitor's article (`QA_MAX_INDEX_SECONDS`)."""
    raw = os.environ.get(INDEX_SECONDS_ENV, "").strip()
    if not raw:
        return MAX_INDEX_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise InputError(f"{INDEX_SECONDS_ENV} must be a number of seconds above 0, got {raw!r}")
    return value


def check_top_k(top_k: object) -> int:
    """Gradio sliders and API clients send numbers as floats or strings; only whole numbers count."""
    wanted = f"a whole number from 1 to {MAX_TOP_K}"
    try:
        value = float(top_k)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputError(f"top-k must be {wanted}, got {top_k!r}") from exc
    if not value.is_integer() or not 1 <= value <= MAX_TOP_K:
        raise InputError(f"top-k must be {wanted}, got {top_k!r}")
    return int(value)


def check_batch_size(name: str, size: int) -> None:
    if size > MAX_BATCH_BYTES:
        raise InputError(
            f"{name} is larger than {MAX_BATCH_BYTES // (1024 * 1024)} MB, this server's limit; "
            "split it, or use qa batch"
        )


def check_batch_count(name: str, count: int) -> None:
    if count > MAX_BATCH_QUESTIONS:
        raise InputError(
            f"{name} has {count:,} questions; this server answers at most {MAX_BATCH_QUESTIONS:,} at once "
            "(split it, or use qa batch)"
        )


# --- raw HTTP calls ------------------------------------------------------------------------------

_CALL = re.compile(r"/gradio_api/(?:call|run)/([A-Za-z0-9_-]+)/?$")


class ApiBounds:
    """ASGI middleware: a raw call to a named endpoint whose arguments break a bound gets HTTP 400
    and one line, before it is queued. `checks` maps an endpoint's name to a function that takes
    its arguments (as the request lists them) and raises InputError."""

    def __init__(self, app: ASGIApp, checks: dict[str, Callable[..., object]]) -> None:
        self.app = app
        self.checks = checks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _CALL.search(scope.get("path", "")) if scope["type"] == "http" else None
        check = self.checks.get(match.group(1)) if match and scope["method"] == "POST" else None
        if check is None:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # the upload guard in front has bounded the body already
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = refusal(body, check)
        if problem is not None:
            log.info("refused a call to %s: %s", scope["path"], problem)
            await reply(send, 429 if isinstance(problem, Busy) else 400, str(problem))
            return
        await self.app(scope, replaying(body, receive), send)


def refusal(body: bytes, check: Callable[..., object]) -> InputError | None:
    """The error that refuses a call's arguments (its message is the line), or None when they are within bounds (or not
    readable as arguments at all: Gradio answers those itself)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    try:
        inspect.signature(check).bind(*data)
    except TypeError:
        return None  # too many or too few arguments: Gradio's own message says which
    try:
        check(*data)
    except InputError as exc:
        return exc
    return None


async def reply(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

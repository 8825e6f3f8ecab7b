"""The server reads only files that were uploaded to it.

Gradio's API routes take file arguments as `{"path": ..., "meta": {"_type": "gradio.FileData"}}`
and, depending on the Gradio version, copy whatever path or URL they name into the cache before
the handler runs (a path on the server, a file in the working folder, a URL to fetch). Checking
the path in the handler is then too late: it sees the cached copy. So the check sits in front of
Gradio, on the raw request: every file argument must name a file that this server's own upload
route received (Gradio records those in `Blocks.upload_file_set`); anything else, and any URL,
is refused with one line before Gradio touches it. The handlers check the same predicate again,
for the page's own components and for a file argument sent without Gradio's `meta` marker.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

from qa.documents import MAX_ARTICLE_BYTES

log = logging.getLogger("qa.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The page's and the API's requests are a question, a top-k and a file reference (a few KB), or a
# pasted article: up to MAX_ARTICLE_BYTES of text, JSON-escaped (a newline takes two bytes). The room
# above that lets a somewhat bigger paste reach the page's handler, which names the article cap.
MAX_BODY_BYTES = 4 * MAX_ARTICLE_BYTES
NOT_UPLOADED = "that file was not uploaded to this server; send the file itself (gradio_client.handle_file)"


def is_url(path: str) -> bool:
    return "://" in path or path.startswith("//")


class UploadedFiles:
    """Whether a path names a file this server's upload route received (Gradio's own record)."""

    def __init__(self, uploaded: Callable[[], Iterable[str]]) -> None:
        self._uploaded = uploaded

    def __call__(self, path: object) -> bool:
        if not isinstance(path, (str, os.PathLike)):
            return False
        text = os.fspath(path)
        if not isinstance(text, str) or not text or is_url(text):
            return False
        real = os.path.realpath(text)  # `..`, symlinks and other spellings of one file are one file
        return any(os.path.realpath(p) == real for p in self._uploaded())


def file_arguments(value: Any) -> Iterator[dict[str, Any]]:
    """Every Gradio file argument (a dict marked `gradio.FileData`) anywhere in a request body."""
    if isinstance(value, dict):
        meta = value.get("meta")
        if isinstance(meta, dict) and meta.get("_type") == "gradio.FileData":
            yield value
            return
        for v in value.values():
            yield from file_arguments(v)
    elif isinstance(value, list):
        for v in value:
            yield from file_arguments(v)


def refusal(body: bytes, uploaded: Callable[[object], bool]) -> str | None:
    """Why a request body must not reach Gradio, or None when it may."""
    try:
        payload = json.loads(body) if body.strip() else None
    except ValueError:
        return None  # not JSON: Gradio refuses it itself, and it carries no file argument
    for arg in file_arguments(payload):
        path = arg.get("path")
        if (isinstance(path, str) and is_url(path)) or (isinstance(arg.get("url"), str) and not path):
            return "files are not fetched from URLs; send the file itself (gradio_client.handle_file)"
        if not uploaded(path):
            return NOT_UPLOADED
    return None


class UploadGuard:
    """ASGI middleware: POST bodies (other than the upload route's own) may name only uploaded files."""

    def __init__(self, app: ASGIApp, uploaded: Callable[[object], bool], max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.uploaded = uploaded
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/").endswith("/upload"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _reply(send, 413, f"the request is larger than {self.max_body // 1024} KB")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = refusal(body, self.uploaded)
        if problem is not None:
            log.warning("refused a request to %s: %s", scope["path"], problem)
            await _reply(send, 400, problem)
            return
        await self.app(scope, replaying(body, receive), send)


async def _reply(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read (whole, once), then the client's own."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

"""`qa ask --article https://…`: an article fetched from the web, then read as a saved file would be.

One GET, with a time limit for the whole download and a size cap (the same as for a saved page or
PDF), read in pieces so a huge or endless answer is cut off without being held. What it is (a web
page, a PDF, plain text) comes from the server's Content-Type, else the address, else the bytes.
Without a network it fails at once, in one line: a name that does not resolve is reported as such.
The web page never fetches: a visitor could make the server reach addresses only it can see.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from qa.errors import InputError
from qa.extraction import MAX_SOURCE_BYTES, what_it_is
from qa.version import package_version

FETCH_TIMEOUT_S = 20.0
_PIECE = 64 * 1024


def fetch(url: str, timeout: float = FETCH_TIMEOUT_S, max_bytes: int = MAX_SOURCE_BYTES) -> tuple[bytes, str, str]:
    """The bytes at `url` (http or https), a name for them (from the address, with the suffix that
    says how to read them) and the address they came from after redirects."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InputError(f"--article {url} is not a web address; give http(s)://host/path, or a file")
    raw, content_type, final = _download(url, timeout, max_bytes)
    return raw, article_name(final, content_type, raw), final


def _download(url: str, timeout: float, max_bytes: int) -> tuple[bytes, str, str]:
    request = urllib.request.Request(url, headers={"User-Agent": f"article-qa/{package_version()}"})
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise _too_big(url, max_bytes)
            pieces: list[bytes] = []
            size = 0
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError
                piece = response.read(_PIECE)
                if not piece:
                    break
                size += len(piece)
                if size > max_bytes:
                    raise _too_big(url, max_bytes)
                pieces.append(piece)
            return b"".join(pieces), response.headers.get_content_type(), response.geturl()
    except urllib.error.HTTPError as exc:
        raise InputError(
            f"{url} answered HTTP {exc.code} {exc.reason}; check the address, or save the page and give the file"
        ) from exc
    except urllib.error.URLError as exc:
        raise InputError(f"cannot fetch {url}: {_why(exc.reason, url)}") from exc
    except TimeoutError as exc:
        raise InputError(
            f"cannot fetch {url}: no complete answer within {timeout:.0f} s; try again, or save the page "
            "and give the file"
        ) from exc
    except (OSError, ValueError) as exc:  # a connection reset mid-download, a malformed answer
        raise InputError(f"cannot fetch {url}: {_why(exc, url)}") from exc


def _why(reason: object, url: str) -> str:
    host = urlsplit(url).hostname
    if isinstance(reason, socket.gaierror):
        return f"the name {host} does not resolve (no network here?); save the page and give the file instead"
    if isinstance(reason, ConnectionRefusedError):
        return f"{host} refused the connection; check the address, or save the page and give the file"
    if isinstance(reason, TimeoutError):
        return "it did not answer in time; try again, or save the page and give the file"
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return f"{text}; check the address and the network, or save the page and give the file"


def _too_big(url: str, max_bytes: int) -> InputError:
    return InputError(
        f"{url} is larger than {max_bytes / 1024 / 1024:.0f} MB, the limit for one web page or PDF; "
        "save the article alone and give the file"
    )


def article_name(url: str, content_type: str, raw: bytes) -> str:
    """A name for citations, from the address, with the suffix that says how to read it."""
    parts = urlsplit(url)
    stem = PurePosixPath(parts.path).name or (parts.hostname or "article")
    kind = {"text/html": ".html", "application/xhtml+xml": ".html", "application/pdf": ".pdf", "text/plain": ".txt"}
    suffix = kind.get(content_type)
    if suffix is None:
        lower = stem.lower()
        if lower.endswith((".pdf", ".html", ".htm", ".txt", ".md")):
            return stem
        suffix = ".pdf" if what_it_is(raw) == "a PDF" else ".html"
    if stem.lower().endswith(suffix) or (suffix == ".html" and stem.lower().endswith(".htm")):
        return stem
    return f"{stem}{suffix}"

"""Reading articles: every .txt/.md/.html/.pdf file in a folder is a document.

A .txt/.md file is read as UTF-8 exactly as it is. A saved web page (.html/.htm) or a PDF is
turned into its article's text by `qa.extraction`; that text is the document, and the index
stores it (`stored`), so an unchanged file (the same bytes) is never extracted again and its
offsets never move. A file that cannot give an article is skipped with one line naming it and
what to do, and the rest of the folder is read; only a folder with no readable article is an error.

One article can also be given on its own, as text (`Assistant.from_text`, the page's *Your
article*) or as one file (`qa ask --article FILE` or URL, an upload): it is checked here, capped at
MAX_ARTICLE_BYTES of text (MAX_SOURCE_BYTES for a page or PDF), and read exactly as a folder's
article is, so its offsets and answers are the ones the same file in a folder gets.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO

from qa.errors import DocumentError, InputError
from qa.extraction import (
    HTML_SUFFIXES,
    MAX_SOURCE_BYTES,
    PDF_SUFFIXES,
    SOURCE_CAP,
    TEXT_SUFFIXES,
    extract,
    is_extracted,
    too_big_source,
)
from qa.files import first_bad_char, printable
from qa.types import Document

SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + PDF_SUFFIXES
KINDS = ".txt, .md, .html or .pdf"
# One article given as text is indexed in memory, per request (a page's visitor, a command): the cap
# keeps that to seconds of embedding and a few MB; a bigger text belongs in the articles folder.
MAX_ARTICLE_BYTES = 1024 * 1024
ARTICLE_CAP = "1 MB"
STDIN = "-"
STDIN_NAME = "stdin"


def seeds_dir(path: str | Path | None = None) -> Path:
    from qa.settings import default_seeds

    return Path(path) if path is not None else default_seeds()


def document_paths(folder: Path) -> list[Path]:
    if not folder.exists():
        raise DocumentError(f"articles folder {folder} does not exist; pass --seeds DIR (or set QA_SEEDS)")
    if not folder.is_dir():
        raise DocumentError(f"{folder} is not a folder; pass a folder of {KINDS} articles to --seeds")
    paths = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not paths:
        raise DocumentError(f"articles folder {folder} has no {KINDS} files; add articles to it")
    return paths


def read_document(path: Path, doc_id: str, stored: Mapping[str, Document] | None = None) -> Document:
    """One article file as a Document; a page or PDF whose bytes `stored` already has is not extracted again."""
    try:
        size = path.stat().st_size
        if size > MAX_SOURCE_BYTES:
            raise DocumentError(
                f"{path} is {size / 1024 / 1024:.0f} MB, over the {SOURCE_CAP} limit for one article; "
                "split it into several files, or keep only the article's text"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"cannot read {path} ({exc.strerror}); check the file's permissions") from exc
    sha = hashlib.sha256(raw).hexdigest()
    if is_extracted(path.name):
        known = (stored or {}).get(doc_id)
        if known is not None and known.sha256 == sha:
            return Document(doc_id, str(path), known.text, sha, known.title, known.date, known.url)
        found = extract(raw, str(path))
        return Document(doc_id, str(path), found.text, sha, found.title, found.date, found.url)
    try:
        # newline handling is off: offsets must index the file's text as it is (CRLF kept).
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{path} is not UTF-8 (bad byte at position {exc.start}); convert it, e.g. iconv -t UTF-8"
        ) from exc
    if not text.strip():
        raise DocumentError(f"{path} is empty; add text to it or remove it from the folder")
    return Document(doc_id=doc_id, path=str(path), text=text, sha256=sha)


def load_documents(
    folder: str | Path | None = None,
    stored: Mapping[str, Document] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Document]:
    """Every article of the folder. A file that cannot be read is skipped, with its one line sent to
    `log` (stderr by default); when none can be read, the first file's line is the error."""
    folder = seeds_dir(folder)
    docs: list[Document] = []
    problems: list[str] = []
    for p in document_paths(folder):
        try:
            docs.append(read_document(p, p.relative_to(folder).as_posix(), stored))
        except DocumentError as exc:
            problems.append(str(exc))
    if not docs:
        more = f" (and {len(problems) - 1} more file(s) like it)" if len(problems) > 1 else ""
        raise DocumentError(f"no article in {folder} can be read: {problems[0]}{more}")
    say = log or (lambda msg: print(msg, file=sys.stderr))
    for problem in problems:
        say(f"Skipped: {problem}")
    return docs


def article_document(text: object, name: str) -> Document:
    """One article given as text, checked, as the Document a folder holding it as `name` would give.

    Raises one InputError naming the problem and the fix: not text, over the cap, a lone surrogate
    (text that cannot be UTF-8), NUL characters (a binary file), or nothing but whitespace.
    """
    name = printable(name).strip() if isinstance(name, str) else ""
    if not name:
        raise InputError("the article needs a name (its citations name it), e.g. pasted.txt")
    if not isinstance(text, str):
        raise InputError(f"the article {name} must be text, got {type(text).__name__}")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ARTICLE_BYTES:
        raise too_big(name)
    bad = first_bad_char(text)
    if bad is not None:
        raise InputError(
            f"the article {name} is not UTF-8 text (a lone surrogate at character {bad + 1}); save it as UTF-8"
        )
    if "\x00" in text:
        raise InputError(f"the article {name} holds NUL characters, so it is a binary file; give plain text")
    if not text.strip():
        raise InputError(f"the article {name} is empty; give the text of an article")
    raw = text.encode("utf-8")
    return Document(doc_id=name, path=name, text=text, sha256=hashlib.sha256(raw).hexdigest())


def too_big(name: str) -> InputError:
    return InputError(
        f"the article {name} is larger than {ARTICLE_CAP}, the limit for one article given on its own; "
        "split it, or put it in an articles folder (--seeds) and run qa index"
    )


def article_from_bytes(raw: bytes, name: str, url: str | None = None) -> Document:
    """An article file's bytes (an upload, --article FILE or URL), read as a folder's article is:
    a .txt/.md decoded, a web page or PDF extracted (`url`: where it was fetched from)."""
    if is_extracted(name):
        if len(raw) > MAX_SOURCE_BYTES:
            raise too_big_source(name, len(raw))
        found = extract(raw, name, url)
        document = article_document(found.text, name)
        return replace(
            document, sha256=hashlib.sha256(raw).hexdigest(), title=found.title, date=found.date, url=found.url
        )
    if len(raw) > MAX_ARTICLE_BYTES:
        raise too_big(name)
    try:
        text = raw.decode("utf-8")  # strict, BOM and CRLF kept: offsets index the file's text as it is
    except UnicodeDecodeError as exc:
        raise InputError(
            f"the article {name} is not UTF-8 text (bad byte at position {exc.start}; a binary file?); "
            "give a plain-text article, converted if need be (iconv -t UTF-8), or save it as .html or .pdf"
        ) from exc
    return article_document(text, name)


def read_cap(name: str) -> int:
    """How many bytes an article file of this name may have when given on its own."""
    return MAX_SOURCE_BYTES if is_extracted(name) else MAX_ARTICLE_BYTES


def read_article(source: str | Path, stdin: IO[str] | None = None) -> Document:
    """The one article `qa ask/batch --article` names: a file, an http(s) URL, or '-' for standard input.

    At most the cap + 1 bytes are read, so a huge file (or an endless pipe) is refused without
    reading it all.
    """
    if str(source) == STDIN:
        stream = stdin or sys.stdin
        buffer = getattr(stream, "buffer", None)
        raw = buffer.read(MAX_ARTICLE_BYTES + 1) if buffer is not None else stream.read().encode("utf-8")
        return article_from_bytes(raw, STDIN_NAME)
    if is_web_address(str(source)):
        from qa.fetching import fetch

        raw, name, url = fetch(str(source))
        return article_from_bytes(raw, name, url=url)
    path = Path(source)
    try:
        if path.is_dir():
            raise InputError(f"--article {source} is a folder; give one article file (a folder of articles: --seeds)")
        with path.open("rb") as f:
            raw = f.read(read_cap(path.name) + 1)
    except FileNotFoundError as exc:
        raise InputError(f"--article {source} does not exist; check the path") from exc
    except OSError as exc:
        raise InputError(f"cannot read --article {source} ({exc.strerror}); check the file's permissions") from exc
    return article_from_bytes(raw, path.name)


def is_web_address(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))

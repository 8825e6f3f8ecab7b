"""Reading articles: every .txt/.md file in a folder is a document, read as UTF-8 as is."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from qa.errors import DocumentError
from qa.types import Document

SEEDS_ENV = "QA_SEEDS"
DEFAULT_SEEDS = "seeds"
SUFFIXES = (".txt", ".md")


def seeds_dir(path: str | Path | None = None) -> Path:
    return Path(path if path is not None else os.environ.get(SEEDS_ENV) or DEFAULT_SEEDS)


def document_paths(folder: Path) -> list[Path]:
    if not folder.exists():
        raise DocumentError(f"articles folder {folder} does not exist; pass --seeds DIR (or set {SEEDS_ENV})")
    if not folder.is_dir():
        raise DocumentError(f"{folder} is not a folder; pass a folder of .txt/.md articles to --seeds")
    paths = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not paths:
        raise DocumentError(f"articles folder {folder} has no .txt or .md files; add plain-text articles to it")
    return paths


def read_document(path: Path, doc_id: str) -> Document:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"cannot read {path} ({exc.strerror}); check the file's permissions") from exc
    try:
        # newline handling is off: offsets must index the file's text as it is (CRLF kept).
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{path} is not UTF-8 (bad byte at position {exc.start}); convert it, e.g. iconv -t UTF-8"
        ) from exc
    if not text.strip():
        raise DocumentError(f"{path} is empty; add text to it or remove it from the folder")
    return Document(doc_id=doc_id, path=str(path), text=text, sha256=hashlib.sha256(raw).hexdigest())


def load_documents(folder: str | Path | None = None) -> list[Document]:
    folder = seeds_dir(folder)
    return [read_document(p, p.relative_to(folder).as_posix()) for p in document_paths(folder)]


def read_text_file(path: Path, what: str, hint: str) -> str:
    """A user's input file (questions, gold answers) as text, or one InputError naming the fix.

    `utf-8-sig` drops the byte-order mark spreadsheet programs put in front of CSV files.
    """
    from qa.errors import InputError

    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise InputError(f"{what} {path} does not exist; {hint}") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path} is a folder; {hint}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text; save it as UTF-8") from exc
    except OSError as exc:
        raise InputError(f"cannot read {what} {path} ({exc.strerror})") from exc

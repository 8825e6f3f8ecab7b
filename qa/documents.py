"""Reading articles: every .txt/.md file in a folder is a document, read as UTF-8 as is."""

from __future__ import annotations

import hashlib
from pathlib import Path

from qa.errors import DocumentError
from qa.types import Document

SUFFIXES = (".txt", ".md")


def seeds_dir(path: str | Path | None = None) -> Path:
    from qa.settings import default_seeds

    return Path(path) if path is not None else default_seeds()


def document_paths(folder: Path) -> list[Path]:
    if not folder.exists():
        raise DocumentError(f"articles folder {folder} does not exist; pass --seeds DIR (or set QA_SEEDS)")
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

"""Reading articles: every .txt/.md file in a folder is a document, read as UTF-8 as is.

One article can also be given on its own, as text (`Assistant.from_text`, the page's *Your
article*) or as one file (`qa ask --article FILE`, an upload): it is checked here, capped at
MAX_ARTICLE_BYTES, and read exactly as a folder's article is (strict UTF-8, nothing normalised),
so its offsets and answers are the ones the same file in a folder gets.
"""

from __future__ import annotations

import codecs
import hashlib
import shlex
import sys
from pathlib import Path
from typing import IO

from qa.errors import DocumentError, InputError
from qa.files import first_bad_char, printable
from qa.types import Document

SUFFIXES = (".txt", ".md")
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
        q = shlex.quote(str(path))
        fix = convert_hint(raw, f" {q} > {q}.utf8 && mv {q}.utf8 {q}", "e.g. iconv -t UTF-8")
        raise DocumentError(f"{path} is not UTF-8 (bad byte at position {exc.start}{fix}") from exc
    if not text.strip():
        raise DocumentError(f"{path} is empty; add text to it or remove it from the folder")
    return Document(doc_id=doc_id, path=str(path), text=text, sha256=hashlib.sha256(raw).hexdigest())


def load_documents(folder: str | Path | None = None) -> list[Document]:
    folder = seeds_dir(folder)
    return [read_document(p, p.relative_to(folder).as_posix()) for p in document_paths(folder)]


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


def article_from_bytes(raw: bytes, name: str, path: str | None = None) -> Document:
    """An article file's bytes (an upload, --article FILE), decoded as a folder's article is.

    `path`: the file as the user named it, for the command that converts it (else `name`; standard
    input has none)."""
    if len(raw) > MAX_ARTICLE_BYTES:
        raise too_big(name)
    try:
        text = raw.decode("utf-8")  # strict, BOM and CRLF kept: offsets index the file's text as it is
    except UnicodeDecodeError as exc:
        given = Path(path or name)
        converted = given.with_name(f"{given.stem}.utf8{given.suffix or '.txt'}")
        args = "" if name == STDIN_NAME else f" {shlex.quote(str(given))} > {shlex.quote(str(converted))}"
        fix = convert_hint(raw, args, None)
        raise InputError(f"the article {name} is not UTF-8 text (bad byte at position {exc.start}{fix}") from exc
    return article_document(text, name)


def convert_hint(raw: bytes, iconv_args: str, unknown: str | None) -> str:
    """The end of a "not UTF-8 (bad byte at position N" message: the encoding the bytes look like
    and the iconv command that converts them; `unknown` (else "a binary file?") when none fits."""
    encoding = guess_encoding(raw)
    if encoding is None:
        return (
            f"); convert it, {unknown}"
            if unknown
            else "; a binary file?); give a plain-text article, converted if need be (iconv -t UTF-8)"
        )
    shown = {"LATIN1": "Latin-1", "CP1252": "Windows-1252"}.get(encoding, encoding)
    return f"; it looks like {shown}); convert it: iconv -f {encoding} -t UTF-8{iconv_args}"


def guess_encoding(raw: bytes) -> str | None:
    """The encoding of bytes that are not UTF-8, as iconv names it, or None (binary, or no idea).

    Western European text (the usual case) is told by its shape: the bytes over 0x7F are accented
    letters inside words of ASCII letters. A detector (charset-normalizer or chardet), when one is
    installed, guesses the rest; on a few accented letters alone both guess wrongly (cp1006 for
    "Café"), hence the shape first.
    """
    head = raw[:65536]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    if b"\x00" in head:
        return None
    high = [i for i, b in enumerate(head) if b > 0x7F]
    in_words = sum(
        any(0 <= j < len(head) and chr(head[j]).isalpha() and head[j] < 0x80 for j in (i - 1, i + 1)) for i in high
    )
    if high and 2 * in_words >= len(high):
        return "CP1252" if any(0x80 <= head[i] <= 0x9F for i in high) else "LATIN1"
    guessed = _detected_encoding(head)
    if guessed is None:
        return None
    try:
        name = codecs.lookup(guessed).name
    except LookupError:
        return None
    return name.upper().replace("_", "-").replace("ISO8859-", "ISO-8859-")


def _detected_encoding(raw: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        try:
            import chardet
        except ImportError:
            return None
        return chardet.detect(raw).get("encoding")
    best = from_bytes(raw).best()
    return best.encoding if best is not None else None


def read_article(source: str | Path, stdin: IO[str] | None = None) -> Document:
    """The one article `qa ask/batch --article` names: a file, or '-' for standard input.

    At most MAX_ARTICLE_BYTES + 1 bytes are read, so a huge file (or an endless pipe) is refused
    without reading it all.
    """
    if str(source) == STDIN:
        stream = stdin or sys.stdin
        buffer = getattr(stream, "buffer", None)
        raw = buffer.read(MAX_ARTICLE_BYTES + 1) if buffer is not None else stream.read().encode("utf-8")
        return article_from_bytes(raw, STDIN_NAME)
    path = Path(source)
    try:
        if path.is_dir():
            raise InputError(f"--article {source} is a folder; give one article file (a folder of articles: --seeds)")
        with path.open("rb") as f:
            raw = f.read(MAX_ARTICLE_BYTES + 1)
    except FileNotFoundError as exc:
        raise InputError(f"--article {source} does not exist; check the path") from exc
    except OSError as exc:
        raise InputError(f"cannot read --article {source} ({exc.strerror}); check the file's permissions") from exc
    return article_from_bytes(raw, path.name, str(source))

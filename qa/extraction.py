"""Articles as people have them: a saved web page (.html) or a PDF, turned into the article's text.

The text extracted here IS the document: every citation is `text[start:end]` of it, the page shows
it, and `qa index` stores it beside the chunks, so its offsets never move (a newer extractor,
or another version of a library, cannot shift them under an index). A web page goes through
trafilatura, which keeps the article and drops the menus, ads, scripts, comments and footers
around it; a PDF's text layer is read with pypdf, its lines joined back into paragraphs and the
headers and footers that repeat on every page dropped. Both libraries were chosen by measuring
them on saved pages and PDFs (`benchmarks/extraction.py`, docs/articles.md).

Each file that cannot give an article (no article text, no text layer, encrypted, broken, too big,
binary under a page's name) raises one DocumentError naming the file and what to do.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from dataclasses import dataclass

from qa.errors import DocumentError

TEXT_SUFFIXES = (".txt", ".md")
HTML_SUFFIXES = (".html", ".htm")
PDF_SUFFIXES = (".pdf",)
# A saved page is mostly scripts and styles, a PDF mostly fonts and images: far more bytes than text.
# 20 MB holds any single news article saved either way; the extracted text has the article cap.
MAX_SOURCE_BYTES = 20 * 1024 * 1024
SOURCE_CAP = "20 MB"
# Fewer letters than this in a PDF's text: a scanned image, with at most a stray page number.
MIN_ARTICLE_CHARS = 40
# A page whose text has no line of this many words is a page of links, a consent wall or an app
# shell (trafilatura then returns every link's text), not an article.
MIN_SENTENCE_WORDS = 8

_MAGIC = (
    (b"%PDF-", "a PDF"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (a .docx or .epub?)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xd0\xcf\x11\xe0", "an old Word or Excel file"),
)


@dataclass(frozen=True)
class Extracted:
    """An article's text and, where its file says them, its title, date (YYYY-MM-DD) and URL."""

    text: str
    title: str | None = None
    date: str | None = None
    url: str | None = None


def kind_of(name: str) -> str:
    """'html', 'pdf' or 'text', by the file name's suffix."""
    lower = name.lower()
    if lower.endswith(HTML_SUFFIXES):
        return "html"
    if lower.endswith(PDF_SUFFIXES):
        return "pdf"
    return "text"


def is_extracted(name: str) -> bool:
    return kind_of(name) != "text"


def what_it_is(raw: bytes) -> str | None:
    """What binary data is, by its first bytes (None: not a format we know)."""
    head = raw[:1024].lstrip()
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    return None


def too_big_source(name: str, size: int) -> DocumentError:
    return DocumentError(
        f"{name} is {size / 1024 / 1024:.0f} MB, over the {SOURCE_CAP} limit for a web page or PDF; "
        "save the article alone (print it to PDF, or copy its text into a .txt file)"
    )


def extract(raw: bytes, name: str, url: str | None = None) -> Extracted:
    """The article in a web page's or a PDF's bytes (by `name`'s suffix); `url`: where it was fetched."""
    if len(raw) > MAX_SOURCE_BYTES:
        raise too_big_source(name, len(raw))
    kind = kind_of(name)
    if kind == "html":
        return extract_html(raw, name, url)
    if kind == "pdf":
        return extract_pdf(raw, name, url)
    raise ValueError(f"{name} is not a web page or a PDF")


# --- web pages ----------------------------------------------------------------------------------


def extract_html(raw: bytes, name: str, url: str | None = None) -> Extracted:
    what = what_it_is(raw)
    if what is not None or b"\x00" in raw[:8192]:
        hint = "rename it to .pdf" if what == "a PDF" else "save the web page itself (.html), or the article as .txt"
        raise DocumentError(f"{name} is not a web page: it holds {what or 'binary data'}; {hint}")
    import trafilatura

    _quiet("trafilatura", "htmldate", "courlan")
    try:
        found = trafilatura.bare_extraction(
            raw,
            url=url,
            with_metadata=True,
            include_comments=False,  # readers' comments are not the article
            include_tables=True,
            include_images=False,
            deduplicate=False,
        )
    except Exception as exc:  # lxml or trafilatura on a page they cannot parse
        raise DocumentError(f"{name} could not be read as a web page ({type(exc).__name__}); save it again") from exc
    text = _paragraphs(getattr(found, "text", None) or "")
    if not any(len(line.split()) >= MIN_SENTENCE_WORDS for line in text.split("\n")):
        raise DocumentError(
            f"{name} has no article text (a page of links, a consent or login wall, or a page its scripts "
            "fill in?); save the page once the article shows, or copy the article's text into a .txt file"
        )
    title = _clean(getattr(found, "title", None))
    if title and not text.startswith(title):
        text = f"{title}\n{text}"  # the headline is part of the article, and can be asked about
    return Extracted(text, title, _clean(getattr(found, "date", None)), _clean(getattr(found, "url", None)) or url)


def _paragraphs(text: str) -> str:
    """One paragraph a line, as the bundled .txt articles are; spaces inside a line as they were."""
    lines = (line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return "\n".join(line for line in lines if line)


def _clean(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())
    return value or None


def _quiet(*loggers: str) -> None:
    # They log every page they find little in at WARNING/ERROR; the one line we raise says it better.
    for name in loggers:
        logging.getLogger(name).setLevel(logging.CRITICAL)


# --- PDFs ---------------------------------------------------------------------------------------


def extract_pdf(raw: bytes, name: str, url: str | None = None) -> Extracted:
    if not raw.lstrip()[:1024].startswith(b"%PDF-") and b"%PDF-" not in raw[:1024]:
        what = what_it_is(raw)
        looks = what or ("a web page" if b"<html" in raw[:4096].lower() else "something else")
        raise DocumentError(f"{name} is not a PDF (it is {looks}); give the PDF itself, or rename the file")
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    _quiet("pypdf")
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):  # "": only an owner password, readable as it is
            raise FileNotDecryptedError("a password is needed")
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata or {}
    except FileNotDecryptedError as exc:
        raise DocumentError(
            f"{name} is encrypted with a password; save a copy without it (e.g. qpdf --decrypt "
            f"--password=PASSWORD {name} out.pdf) or give the article as text"
        ) from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise DocumentError(f"{name} is a broken PDF ({reason}); download or export it again") from exc
    except Exception as exc:  # pypdf raises many kinds on damaged files; one line, never a traceback
        if "crypt" in type(exc).__name__.lower() or "AES" in str(exc):
            raise DocumentError(
                f"{name} is encrypted in a way that needs a library this install lacks ({exc}); "
                "save a copy without encryption, or give the article as text"
            ) from exc
        raise DocumentError(f"{name} is a broken PDF ({type(exc).__name__}); download or export it again") from exc
    text = join_pages(pages)
    if sum(c.isalpha() for c in text) < MIN_ARTICLE_CHARS:
        raise DocumentError(
            f"{name} has no text layer (a scanned image?); run OCR on it first "
            f"(e.g. ocrmypdf {name} ocr.pdf) or give the article as text"
        )
    return Extracted(text, _pdf_title(info), _pdf_date(info), url)


def _pdf_title(info: object) -> str | None:
    title = _clean(info.get("/Title") if hasattr(info, "get") else None)
    # Office and print dialogs write file names and tool names as the title: not a headline.
    if title is None or re.search(r"\.(docx?|pdf|html?|txt)$|^Microsoft Word|^untitled", title, re.IGNORECASE):
        return None
    return title


def _pdf_date(info: object) -> str | None:
    raw = info.get("/CreationDate") if hasattr(info, "get") else None
    m = re.match(r"(?:D:)?(\d{4})(\d{2})(\d{2})", str(raw or ""))
    return f"{m.group(1)}-{m.group(2)}-{m.group(3)}" if m else None


# Typeset PDFs keep "fi", "fl", "ff"… as one glyph: "ﬁrst" would match no question's "first".
_LIGATURES = re.compile("[\ufb00-\ufb06]")
_PAGE_NUMBER = re.compile(r"^(page\s*)?\d+(\s*(/|of)\s*\d+)?$", re.IGNORECASE)


def join_pages(pages: list[str]) -> str:
    """A PDF's pages as one article: headers, footers and page numbers dropped, lines joined into paragraphs.

    A PDF stores lines, not paragraphs: a line wrapped by the layout is joined to the next with a
    space (after a hyphen, with none: "long-" + "range"), and a paragraph (or a heading) ends at a
    blank line or at a line well short of the page's width.
    """
    pages = [_LIGATURES.sub(lambda m: unicodedata.normalize("NFKC", m.group()), page) for page in pages]
    lines_of = [[line.strip() for line in page.replace("\r\n", "\n").replace("\r", "\n").split("\n")] for page in pages]
    repeated = _repeated_edges(lines_of)
    lines: list[str] = []
    for page in lines_of:
        for line in page:
            if _PAGE_NUMBER.match(line) or _shape(line) in repeated:
                continue
            lines.append(line)
    width = max((len(line) for line in lines), default=0)
    paragraphs: list[str] = []
    current = ""
    for line in lines:
        if not line:
            if current:
                paragraphs.append(current)
            current = ""
            continue
        if not current:
            current = line
        elif current.endswith("-") and not current.endswith(" -"):
            current += line
        else:
            current += " " + line
        if len(line) < 0.8 * width and not line.endswith("-"):  # a paragraph's last line, or a heading
            paragraphs.append(current)
            current = ""
    if current:
        paragraphs.append(current)
    return "\n".join(" ".join(p.split()) for p in paragraphs)


def _shape(line: str) -> str:
    return re.sub(r"\d+", "#", line)


def _repeated_edges(pages: list[list[str]]) -> set[str]:
    """The lines (digits aside) that open or close at least half of several pages: headers and footers."""
    if len(pages) < 2:
        return set()
    counts: dict[str, int] = {}
    for page in pages:
        content = [line for line in page if line]
        for line in {*content[:2], *content[-2:]}:
            counts[_shape(line)] = counts.get(_shape(line), 0) + 1
    return {shape for shape, n in counts.items() if n >= max(2, (len(pages) + 1) // 2)}

"""What the web page does, as plain functions: take the assistant and input, return what to show.

No Gradio here: `qa.web` lays the page out and wires these to its components and API
endpoints; the handlers are tested as plain functions. Every library error becomes a one-line
message, never a traceback, and the page keeps working afterwards.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.batch import answer_items, detect_format, parse_questions, write_records
from qa.documents import KINDS, MAX_ARTICLE_BYTES, SUFFIXES, article_document, article_from_bytes, read_cap, too_big
from qa.errors import InputError, QAError
from qa.extraction import too_big_source
from qa.files import decode_bytes
from qa.limits import check_batch_count, check_batch_size, check_top_k
from qa.settings import PORT_ENV, check_min_confidence
from qa.types import RECORD_FIELDS, Answer, Document, Result
from qa.upload_guard import NOT_UPLOADED

if TYPE_CHECKING:
    from qa.assistant import Assistant

log = logging.getLogger("qa.web")

ALL_ARTICLES = "All articles"
ANSWER_LABEL = "answer"
UPLOAD_SUFFIXES = (".csv", ".jsonl", ".json", ".txt")
# Visitors' own articles held at once (each up to 1 MB of text plus its vectors, ~10 MB at the cap).
MAX_SESSION_ARTICLES = 32
PASTED_NAME = "pasted.txt"
PASTED_HTML = "pasted.html"

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~$])")
_MD_LIST_START = re.compile(r"^(\s*)(?:([-+])|(\d+)([.)]))(?=\s)")


def md_escape(text: str) -> str:
    """Article text shown as Markdown must read literally (no emphasis, links, lists, math or HTML)."""
    flat = _MD_SPECIAL.sub(r"\\\1", text).replace("\r", " ").replace("\n", " ")
    return _MD_LIST_START.sub(
        lambda m: m.group(1) + (f"\\{m.group(2)}" if m.group(2) else f"{m.group(3)}\\{m.group(4)}"), flat
    )


def error_message(exc: BaseException) -> str:
    return f"**Cannot answer:** {md_escape(str(exc))}"


def unexpected_message(exc: BaseException) -> str:
    # The details go to the server's log; the person asking gets one line and a working page.
    log.exception("unexpected error in a web handler")
    return f"**Something went wrong** ({md_escape(type(exc).__name__)}); please try again."


def parse_top_k(top_k: object) -> int:
    """The page's and the API's top-k, within the server's bound (qa.limits)."""
    return check_top_k(top_k)


def resolve_doc(doc: str | None) -> str | None:
    """The article choice as the assistant takes it: None means all articles."""
    if doc is None or not str(doc).strip() or doc == ALL_ARTICLES:
        return None
    return str(doc)


def highlight_value(document: Document, answer: Answer | None) -> dict[str, Any]:
    """The article for `gr.HighlightedText`, with the answer marked at its exact character offsets."""
    if answer is None:
        return {"text": document.text, "entities": []}
    if document.text[answer.start : answer.end] != answer.text:
        # A highlight that is not exactly the cited text would mislead; refuse rather than show it.
        raise RuntimeError(f"answer offsets {answer.start}-{answer.end} do not match its text in {document.doc_id}")
    return {
        "text": document.text,
        "entities": [{"start": answer.start, "end": answer.end, "entity": ANSWER_LABEL}],
    }


def passage_rows(result: Result) -> list[list[Any]]:
    """[rank, score, doc_id, chunk_id, start, end, text] for each retrieved passage."""
    return [
        [p.rank, p.score, p.chunk.doc_id, p.chunk.chunk_id, p.chunk.start, p.chunk.end, p.chunk.text]
        for p in result.passages
    ]


def answer_rows(answers: list[Answer], first: int = 1) -> list[list[Any]]:
    """[n, text, score, doc_id, chunk_id, start, end, sentence] for each answer, numbered from `first`."""
    return [
        [n, a.text, a.score, a.doc_id, a.chunk_id, a.start, a.end, a.sentence] for n, a in enumerate(answers, first)
    ]


def passages_markdown(rows: list[list[Any]]) -> str:
    return "\n\n".join(
        f"**{rank}.** score {score:.4f} · {md_escape(doc_id)} · chunk {chunk_id} · characters {start}-{end}\n\n"
        f"> {md_escape(text)}"
        for rank, score, doc_id, chunk_id, start, end, text in rows
    )


def answers_markdown(rows: list[list[Any]]) -> str:
    return "\n\n".join(
        f"**{n}. {md_escape(text)}** · confidence {score:.2f} · {md_escape(doc_id)} · chunk {chunk_id} · "
        f"characters {start}-{end}\n\n> {md_escape(sentence)}"
        for n, text, score, doc_id, chunk_id, start, end, sentence in rows
    )


def sentence_markdown(answer: Answer) -> str:
    """The cited sentence with the answer in bold, at its offsets (plain when the span leaves the sentence)."""
    i, j = answer.start - answer.sentence_start, answer.end - answer.sentence_start
    s = answer.sentence
    if not (0 <= i < j <= len(s)) or s[i:j] != answer.text:
        return md_escape(s)
    return f"{md_escape(s[:i])}**{md_escape(s[i:j])}**{md_escape(s[j:])}"


@dataclass(frozen=True)
class AskView:
    """What the Ask tab shows for one question."""

    status: str
    citation: str = ""
    highlight: dict[str, Any] | None = None  # a gr.HighlightedText value, or None to clear it
    highlight_label: str = "The article"
    others: list[list[Any]] = field(default_factory=list)  # the answers after the first (top-k > 1)
    passages: list[list[Any]] = field(default_factory=list)
    abstained: bool = False
    result: dict[str, Any] | None = None  # Result.to_dict(), as `qa ask --json` prints it
    # When it abstained: the best guess, its confidence, its citation and the passage it comes
    # from (Markdown the page shows greyed, apart from the answer's place); "" when there is none.
    guess: str = ""


def render_result(documents: dict[str, Document], result: Result) -> AskView:
    if result.error is not None:
        return AskView(status=f"**Cannot answer:** {md_escape(result.error)}", result=result.to_dict())
    passages = passage_rows(result)
    best = result.answer
    note = f"\n\n*{md_escape(result.note)}*" if result.note else ""  # e.g. that the reader reads English
    if best is None:
        top = result.passages[0].chunk.doc_id if result.passages else None
        if result.guess is None:
            status = (
                "### The article does not say.\n"
                f"Nothing in the passages closest to the question answers it. They are listed below.{note}"
            )
        else:
            status = (
                "### The article does not say clearly.\n"
                "No answer in the article is confident enough, so none is given; the best guess is "
                f"below, with the passage it comes from. The closest passages are listed below.{note}"
            )
        return AskView(
            status=status,
            highlight=highlight_value(documents[top], None) if top else None,
            highlight_label=f"The article ({top}): nothing highlighted" if top else "The article",
            passages=passages,
            abstained=True,
            result=result.to_dict(),
            guess=guess_markdown(documents, result),
        )
    source = f" · {md_escape(best.source())}" if best.source() else ""  # a page's or PDF's title, date, URL
    citation = (
        f"> {sentence_markdown(best)}\n\n"
        f"**{md_escape(best.doc_id)}** · chunk {best.chunk_id} · characters {best.start}-{best.end}{source}"
    )
    return AskView(
        status=f"### {md_escape(best.text)}\nconfidence **{best.score:.2f}**{note}",
        citation=citation,
        highlight=highlight_value(documents[best.doc_id], best),
        highlight_label=f"The article ({best.doc_id}), with the answer highlighted",
        others=answer_rows(result.answers[1:], first=2),
        passages=passages,
        result=result.to_dict(),
    )


def guess_markdown(documents: dict[str, Document], result: Result) -> str:
    """The best guess below the min confidence: never shown as an answer, always with its confidence,
    its exact place, its sentence and the passage it comes from."""
    g = result.guess
    if g is None:
        return ""
    if documents[g.doc_id].text[g.start : g.end] != g.text:
        raise RuntimeError(f"guess offsets {g.start}-{g.end} do not match its text in {g.doc_id}")
    lines = [
        f"**Best guess** (confidence {g.score:.2f}; not an answer): {md_escape(g.text)}",
        f"{md_escape(g.doc_id)} · chunk {g.chunk_id} · characters {g.start}-{g.end}",
        f"> {sentence_markdown(g)}",
    ]
    at = [p for p in result.passages if (p.chunk.doc_id, p.chunk.chunk_id) == (g.doc_id, g.chunk_id)]
    if at:
        c = at[0].chunk
        lines.append(f"Closest passage (characters {c.start}-{c.end}):\n\n> {md_escape(c.text)}")
    return "\n\n".join(lines)


def parse_min_confidence(value: object) -> float | None:
    """The page's slider or an API client's number; empty means the calibration's own choice."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return check_min_confidence(value)


def ask_handler(
    assistant: Assistant,
    question: str | None,
    top_k: object = 1,
    doc: str | None = None,
    min_confidence: object = None,
) -> AskView:
    """Answer one question for the page; bad input becomes a message, never an exception."""
    try:
        result = assistant.ask(
            question or "",
            top_k=parse_top_k(top_k),
            doc_id=resolve_doc(doc),
            min_confidence=parse_min_confidence(min_confidence),
        )
        return render_result(assistant.documents, result)
    except QAError as exc:
        return AskView(status=error_message(exc))
    except Exception as exc:
        return AskView(status=unexpected_message(exc))


@dataclass(frozen=True)
class BatchView:
    """What the Batch tab shows for one upload."""

    status: str
    rows: list[list[Any]] = field(default_factory=list)  # RECORD_FIELDS order, None shown as ""
    files: list[str] = field(default_factory=list)  # the results to download (.csv and .jsonl)
    records: list[dict[str, Any]] = field(default_factory=list)


def upload_path(upload: object) -> tuple[Path, str] | None:
    """The server-side path and the original file name of an upload, whatever shape Gradio gave it."""
    if upload is None:
        return None
    if isinstance(upload, (str, Path)):
        return Path(upload), Path(upload).name
    if isinstance(upload, dict):
        path, name = upload.get("path"), upload.get("orig_name")
    else:
        path, name = getattr(upload, "path", None), getattr(upload, "orig_name", None)
    if not path:
        return None
    return Path(path), str(name or Path(path).name)


def check_uploaded(path: Path, uploaded: Callable[[object], bool] | None) -> None:
    """Read only files uploaded to this server: an API client must not name any other file on it.

    `uploaded` is the server's record of its uploads (`qa.upload_guard.UploadedFiles`); None
    (plain function calls, the tests) reads any path.
    """
    if uploaded is not None and not uploaded(path):
        raise InputError(NOT_UPLOADED)


def read_upload(path: Path, name: str) -> list[Any]:
    if Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
        raise InputError(
            f"{name} is not a CSV, JSONL or TXT file; upload questions as .csv (with a 'question' column), "
            ".jsonl (one JSON object with a 'question' per line) or .txt (one question per line)"
        )
    fmt = detect_format(name)
    try:
        check_batch_size(name, path.stat().st_size)  # before reading it
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the upload {name} ({exc.strerror}); upload it again") from exc
    check_batch_size(name, len(raw))
    items = parse_questions(decode_bytes(raw), fmt)
    if not items:
        raise InputError(f"{name} has no questions in it")
    check_batch_count(name, len(items))
    return items


def write_downloads(records: list[dict[str, Any]], stem: str, out_dir: Path | None = None) -> list[str]:
    # A fresh folder per request, so two people batching at once never overwrite each other's results.
    folder = Path(tempfile.mkdtemp(prefix="qa-batch-", dir=out_dir))
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "questions"
    paths = []
    for fmt in ("csv", "jsonl"):
        path = folder / f"{safe}-answers.{fmt}"
        with path.open("w", encoding="utf-8", newline="") as f:
            write_records(records, f, fmt)
        paths.append(str(path))
    return paths


def batch_summary(name: str, records: list[dict[str, Any]]) -> str:
    answered = sum(1 for r in records if r["answer"] is not None)
    errors = [r for r in records if r["error"]]
    lines = [
        f"**{len(records)} questions** from {md_escape(name)}: {answered} answered, "
        f"{len(records) - answered - len(errors)} abstained (the article does not say), {len(errors)} with errors."
    ]
    for r in errors[:5]:
        lines.append(f"- id {md_escape(str(r['id']))}: {md_escape(str(r['error']))}")
    if len(errors) > 5:
        lines.append(f"- … and {len(errors) - 5} more (see the error column)")
    return "\n".join(lines)


def read_checked_upload(
    upload: object, uploaded: Callable[[object], bool] | None, missing: str
) -> tuple[list[Any], str]:
    """The questions of an uploaded file (page or API) and its name; only files `uploaded` accepts."""
    found = upload_path(upload)
    if found is None:
        raise InputError(missing)
    path, name = found
    check_uploaded(path, uploaded)
    return read_upload(path, name), name


def batch_handler(
    assistant: Assistant,
    upload: object,
    top_k: object = 1,
    doc: str | None = None,
    out_dir: Path | None = None,
    uploaded: Callable[[object], bool] | None = None,
    min_confidence: object = None,
    answer: Callable[..., list[dict[str, Any]]] = answer_items,
) -> BatchView:
    """Answer an uploaded questions file; a bad row keeps its place with an error, a bad file gets a message.

    With `uploaded`, only files it accepts are read (the server passes its record of uploads).
    `answer` is `qa.batch.answer_items` or one that runs it the server's way (`qa.lanes.sliced`).
    """
    try:
        items, name = read_checked_upload(upload, uploaded, "upload a .csv, .jsonl or .txt file of questions first")
        records = answer(
            assistant,
            items,
            top_k=parse_top_k(top_k),
            doc_id=resolve_doc(doc),
            min_confidence=parse_min_confidence(min_confidence),
        )
        files = write_downloads(records, Path(name).stem, out_dir)
    except QAError as exc:
        return BatchView(status=error_message(exc))
    except Exception as exc:
        return BatchView(status=unexpected_message(exc))
    rows = [["" if r[k] is None else r[k] for k in RECORD_FIELDS] for r in records]
    return BatchView(status=batch_summary(name, records), rows=rows, files=files, records=records)


# --- a visitor's own article -----------------------------------------------------------------


class SessionArticles:
    """Each browser session's own article, as an Assistant over it (indexed in memory).

    Keyed by Gradio's session hash: one tab's article is never another's. Bounded, because every
    visitor may add one: at most `capacity` are held, and adding one more drops the least recently
    used (its tab is told so when it next asks). The page also drops a session's article when the
    tab closes (Gradio's unload event). Nothing is written anywhere.
    """

    def __init__(self, capacity: int = MAX_SESSION_ARTICLES) -> None:
        self.capacity = capacity
        self._held: OrderedDict[str, Assistant] = OrderedDict()
        self._lock = threading.Lock()  # Gradio runs handlers on several threads

    def get(self, session: str | None) -> Assistant | None:
        if not session:
            return None
        with self._lock:
            own = self._held.get(session)
            if own is not None:
                self._held.move_to_end(session)
            return own

    def put(self, session: str, assistant: Assistant) -> None:
        with self._lock:
            self._held[session] = assistant
            self._held.move_to_end(session)
            while len(self._held) > self.capacity:
                self._held.popitem(last=False)

    def drop(self, session: str | None) -> None:
        with self._lock:
            if session:
                self._held.pop(session, None)

    def __len__(self) -> int:
        return len(self._held)


@dataclass(frozen=True)
class ArticleView:
    """What the page shows after the visitor chooses which articles to ask."""

    status: str
    own: str | None = None  # the name of this session's own article, None for the server's articles
    min_confidence: float | None = None  # the slider's new starting value; None leaves it as it is


def asking_markdown(own: str | None) -> str:
    """The line above the tabs that says which articles the questions go to."""
    if own is None:
        return "Asking **the server's articles**. To ask your own, add it in the *Your article* tab."
    return (
        f"Asking **your article** {md_escape(own)} (in this browser tab only; *Use the server's articles* "
        "in the *Your article* tab goes back)."
    )


def read_article_upload(upload: object, uploaded: Callable[[object], bool] | None) -> Document:
    """An uploaded article (.txt/.md, or a saved web page or PDF, extracted), checked as `qa ask
    --article` checks its file; only real uploads."""
    found = upload_path(upload)
    if found is None:
        raise InputError(f"paste an article or upload a {KINDS} file first")
    path, name = found
    check_uploaded(path, uploaded)
    name = Path(name).name
    if Path(name).suffix.lower() not in SUFFIXES:
        raise InputError(f"{name} is not a {KINDS} file; upload the article as text, a saved web page or a PDF")
    try:
        size = path.stat().st_size
        if size > read_cap(name):
            raise too_big(name) if read_cap(name) == MAX_ARTICLE_BYTES else too_big_source(name, size)
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the upload {name} ({exc.strerror}); upload it again") from exc
    return article_from_bytes(raw, name)


def looks_like_html(text: str | None) -> bool:
    head = (text or "").lstrip()[:200].lower()
    return head.startswith(("<!doctype html", "<html"))


def use_article_handler(
    server: Assistant,
    store: SessionArticles,
    session: str | None,
    text: str | None,
    upload: object = None,
    current: str | None = None,
    uploaded: Callable[[object], bool] | None = None,
    index: Callable[[Document], Assistant] | None = None,
) -> ArticleView:
    """Index the visitor's article (the uploaded file if there is one, else the pasted text) in memory,
    for this session only, with the server's loaded models; a bad one leaves `current` in use.
    `index` indexes the checked article (the server's bounded way, `qa.web`); by default, at once."""
    try:
        if not session:
            raise InputError("this page keeps your article per browser tab; reload the page and add it again")
        if upload_path(upload) is not None:
            document = read_article_upload(upload, uploaded)
        elif looks_like_html(text):
            # A page's source pasted (view-source, copy): its article, as if the page were uploaded.
            document = article_from_bytes((text or "").encode("utf-8", "surrogatepass"), PASTED_HTML)
        else:
            document = article_document(text or "", PASTED_NAME)
        own = (index or (lambda d: index_article(server, d)))(document)
        store.put(session, own)
    except QAError as exc:
        still = f"your article {md_escape(current)}" if current else "the server's articles"
        return ArticleView(f"**Cannot use this article:** {md_escape(str(exc))} (still asking {still})", own=current)
    except Exception as exc:
        return ArticleView(status=unexpected_message(exc), own=current)
    chunks = len(own.index.chunks)
    return ArticleView(
        status=(
            f"Using **your article** {md_escape(document.doc_id)}: {len(document.text):,} characters, "
            f"{chunks} chunk{'s' if chunks != 1 else ''}, indexed in memory for this browser tab only. "
            "Ask about it in the *Ask* and *Batch* tabs."
        ),
        own=document.doc_id,
        min_confidence=own.min_confidence,
    )


def index_article(server: Assistant, document: Document, embedder: Any = None) -> Assistant:
    """An assistant over the visitor's article, indexed now with the server's loaded models (or
    `embedder`), so that its first question is as quick as the server's."""
    from qa.assistant import Assistant

    own = Assistant.from_document(
        document,
        reader=server.reader,
        embedder=embedder if embedder is not None else server.embedder,
        settings=server.settings,
        log=server.log,
    )
    return own.warm_up()


def use_server_handler(server: Assistant, store: SessionArticles, session: str | None) -> ArticleView:
    """Back to the server's articles: the session's own article is dropped."""
    store.drop(session)
    return ArticleView(
        status="Asking the server's articles again; your article was dropped.",
        own=None,
        min_confidence=server.min_confidence,
    )


@dataclass(frozen=True)
class Visit:
    """One browser tab asking: the server's assistant, the store of visitors' articles, the tab's
    session, and the name of the article the tab asks (None: the server's articles)."""

    server: Assistant
    store: SessionArticles
    session: str | None
    own: str | None = None

    def assistant(self) -> Assistant:
        """The assistant this tab asks: its own article's when it added one, else the server's."""
        if self.own is None:
            return self.server
        held = self.store.get(self.session)
        if held is None:
            raise InputError(
                f"your article {self.own} is no longer held (the server keeps {self.store.capacity} visitors' "
                "articles, dropping the least recently used); add it again in the Your article tab, or use the "
                "server's articles"
            )
        return held

    def doc(self, doc: str | None) -> str | None:
        """The article choice, which is among the server's articles: none while the tab asks its own."""
        return doc if self.own is None else None


def session_ask_handler(
    visit: Visit, question: str | None, top_k: object = 1, doc: str | None = None, min_confidence: object = None
) -> AskView:
    """`ask_handler` over the articles this tab asks: its own article, else the server's."""
    try:
        assistant = visit.assistant()
    except QAError as exc:
        return AskView(status=error_message(exc))
    return ask_handler(assistant, question, top_k, visit.doc(doc), min_confidence)


def session_batch_handler(
    visit: Visit, upload: object, top_k: object = 1, doc: str | None = None, **options: Any
) -> BatchView:
    """`batch_handler` (with its options: out_dir, uploaded, min_confidence) over the articles this tab asks."""
    try:
        assistant = visit.assistant()
    except QAError as exc:
        return BatchView(status=error_message(exc))
    return batch_handler(assistant, upload, top_k, visit.doc(doc), **options)


def check_port(host: str, port: int) -> None:
    """Refuse a port in use (or an address that is not this machine's) now, not after the models
    have loaded for seconds; bound as Gradio's server binds it (SO_REUSEADDR: a port whose last
    connections are closing is free)."""
    import socket

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise unservable(host, port) from exc


def unservable(host: str, port: int) -> InputError:
    return InputError(
        f"cannot serve on {host}:{port}: the port is taken or the address is not this machine's; "
        f"pass a free --port (or set {PORT_ENV}) or another --host"
    )

"""The web page (`qa serve`): ask the articles in a browser, over the same Python API as the CLI.

The handlers are plain module-level functions that take the assistant explicitly and return
plain values (`AskView`, `BatchView`), so they are tested without a server; `build_app` only
wires them to Gradio components. Every library error becomes a one-line message on the page,
never a traceback, and the page keeps working afterwards.

Gradio is imported here and nowhere else; the CLI imports this module only for `qa serve`,
so `qa ask` never pays for it.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from gradio.utils import get_upload_folder

from qa.batch import answer_items, detect_format, parse_questions, write_records
from qa.errors import InputError, QAError
from qa.files import decode_bytes
from qa.types import RECORD_FIELDS, Answer, Document, Result

if TYPE_CHECKING:
    from qa.assistant import Assistant

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
ALL_ARTICLES = "All articles"
ANSWER_LABEL = "answer"
MAX_TOP_K = 5
# The page is shared by everyone who opens it; one upload must not hold the model for long.
MAX_BATCH_QUESTIONS = 1000
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
UPLOAD_SUFFIXES = (".csv", ".jsonl", ".json", ".txt")
# The model is used by one request at a time: the reader's fast tokenizer is not safe to
# share between threads, and on a small CPU machine parallel runs only slow each other down.
# Gradio's queue lets many people wait for this slot, each getting their own answer.
CONCURRENCY_ID = "assistant"

EXAMPLES: dict[str, list[str]] = {
    "pentagon-ukraine-long-range-strikes.txt": [
        "Who devised the process to evaluate requests for long-range missile strikes?",
        "Who holds the ultimate authority on deploying ATACMS?",
        "Where did Trump meet Putin on August 15th?",
        "Which newspaper's report cites an unnamed US official?",
        "When did the Biden administration permit Ukraine to use ATACMS?",
        "Who won the 2018 FIFA World Cup?",  # not in the article: shows the abstention
    ]
}

CSS = """
#article { font-size: 1.02rem; line-height: 1.65; }
/* Gradio lays highlighted text out as flex items broken anywhere, even mid-word; an article
   should flow like a paragraph, wrapping between words, with the answer inline in it. */
#article .textfield { display: block !important; }
#article .token-container { display: inline !important; }
#article .line-break { display: block !important; }
#article .textfield, #article .text { word-break: normal !important; overflow-wrap: break-word; }
/* Svelte leaves whitespace text nodes around each token; at size 0 they add no stray spaces,
   so the colour goes on the answer's own text rather than on its (zero-size) token. */
#article .token-container, #article .token { font-size: 0; }
#article .text { font-size: 1.02rem; }
#article .token.highlighted { background: none !important; margin: 0 !important; padding: 0 !important; }
#article .token.highlighted .text {
  background: #fde047; color: #111; border-radius: 2px; box-shadow: 0 0 0 1px #fde047;
}
#status h3 { margin: 0.2rem 0; }
"""

INTRO = """\
# Ask the article
Answers are exact spans of the article, with their citation: the span is highlighted where it
stands in the text. When no answer is confident enough, the page says so rather than guess.
"""

BATCH_HELP = """\
Upload a file of questions and get one answer per question, in order:
**.csv** with a `question` column (and an optional `id`), **.jsonl** with one
`{"id": ..., "question": ...}` object per line, or **.txt** with one question per line.
The table and the downloads have the same columns as `qa batch`.
"""

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


def parse_top_k(top_k: object, limit: int | None = MAX_TOP_K) -> int:
    """Gradio sliders and API clients send numbers as floats or strings; only whole numbers count."""
    wanted = f"a whole number from 1 to {limit}" if limit else "a whole number of at least 1"
    try:
        value = float(top_k)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputError(f"top-k must be {wanted}, got {top_k!r}") from exc
    if not value.is_integer() or value < 1 or (limit is not None and value > limit):
        raise InputError(f"top-k must be {wanted}, got {top_k!r}")
    return int(value)


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


def render_result(documents: dict[str, Document], result: Result) -> AskView:
    if result.error is not None:
        return AskView(status=f"**Cannot answer:** {md_escape(result.error)}", result=result.to_dict())
    passages = passage_rows(result)
    best = result.answer
    if best is None:
        top = result.passages[0].chunk.doc_id if result.passages else None
        return AskView(
            status=(
                "### The article does not say.\n"
                "No answer in the article is confident enough, so none is given. "
                "The closest passages are listed below."
            ),
            highlight=highlight_value(documents[top], None) if top else None,
            highlight_label=f"The article ({top}): nothing highlighted" if top else "The article",
            passages=passages,
            abstained=True,
            result=result.to_dict(),
        )
    citation = (
        f"> {sentence_markdown(best)}\n\n"
        f"**{md_escape(best.doc_id)}** · chunk {best.chunk_id} · characters {best.start}-{best.end}"
    )
    return AskView(
        status=f"### {md_escape(best.text)}\nconfidence **{best.score:.2f}**",
        citation=citation,
        highlight=highlight_value(documents[best.doc_id], best),
        highlight_label=f"The article ({best.doc_id}), with the answer highlighted",
        others=answer_rows(result.answers[1:], first=2),
        passages=passages,
        result=result.to_dict(),
    )


def ask_handler(assistant: Assistant, question: str | None, top_k: object = 1, doc: str | None = None) -> AskView:
    """Answer one question for the page; bad input becomes a message, never an exception."""
    try:
        result = assistant.ask(question or "", top_k=parse_top_k(top_k), doc_id=resolve_doc(doc))
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


def check_uploaded(path: Path, upload_root: Path | None) -> None:
    """Read only files uploaded to this server: an API client must not name any other file on it."""
    if upload_root is not None and not path.resolve().is_relative_to(upload_root.resolve()):
        raise InputError("that file was not uploaded to this server; send the file itself (gradio_client.handle_file)")


def read_upload(path: Path, name: str) -> list[Any]:
    if Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
        raise InputError(
            f"{name} is not a CSV, JSONL or TXT file; upload questions as .csv (with a 'question' column), "
            ".jsonl (one JSON object with a 'question' per line) or .txt (one question per line)"
        )
    fmt = detect_format(name)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the upload {name} ({exc.strerror}); upload it again") from exc
    if len(raw) > MAX_UPLOAD_BYTES:
        raise InputError(f"{name} is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB; split it, or use qa batch")
    items = parse_questions(decode_bytes(raw), fmt)
    if not items:
        raise InputError(f"{name} has no questions in it")
    if len(items) > MAX_BATCH_QUESTIONS:
        raise InputError(
            f"{name} has {len(items)} questions; the page answers at most {MAX_BATCH_QUESTIONS} at once "
            "(use qa batch for more)"
        )
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


def read_checked_upload(upload: object, upload_root: Path | None, missing: str) -> tuple[list[Any], str]:
    """The questions of an uploaded file (page or API) and its name; only files under `upload_root`."""
    found = upload_path(upload)
    if found is None:
        raise InputError(missing)
    path, name = found
    check_uploaded(path, upload_root)
    return read_upload(path, name), name


def batch_handler(
    assistant: Assistant,
    upload: object,
    top_k: object = 1,
    doc: str | None = None,
    out_dir: Path | None = None,
    upload_root: Path | None = None,
) -> BatchView:
    """Answer an uploaded questions file; a bad row keeps its place with an error, a bad file gets a message.

    With `upload_root`, only files under it are read (the server passes Gradio's upload folder).
    """
    try:
        items, name = read_checked_upload(upload, upload_root, "upload a .csv, .jsonl or .txt file of questions first")
        records = answer_items(assistant, items, top_k=parse_top_k(top_k), doc_id=resolve_doc(doc))
        files = write_downloads(records, Path(name).stem, out_dir)
    except QAError as exc:
        return BatchView(status=error_message(exc))
    except Exception as exc:
        return BatchView(status=unexpected_message(exc))
    rows = [["" if r[k] is None else r[k] for k in RECORD_FIELDS] for r in records]
    return BatchView(status=batch_summary(name, records), rows=rows, files=files, records=records)


# --- the named API endpoints (gradio_client) --------------------------------------------------


def api_ask(assistant: Assistant, question: str, top_k: int = 1, doc_id: str | None = None) -> dict[str, Any]:
    """`/ask`: the same JSON object as `qa ask --json`; bad input is an error with a one-line message."""
    try:
        return assistant.ask(question, top_k=parse_top_k(top_k, None), doc_id=resolve_doc(doc_id)).to_dict()
    except QAError as exc:
        raise gr.Error(str(exc), print_exception=False) from exc


def api_batch(
    assistant: Assistant,
    file: object,
    top_k: int = 1,
    doc_id: str | None = None,
    upload_root: Path | None = None,
) -> list[dict[str, Any]]:
    """`/batch`: one record per question (the columns of `qa batch`), in the file's order."""
    try:
        items, _ = read_checked_upload(file, upload_root, "send a .csv, .jsonl or .txt file of questions")
        return answer_items(assistant, items, top_k=parse_top_k(top_k, None), doc_id=resolve_doc(doc_id))
    except QAError as exc:
        raise gr.Error(str(exc), print_exception=False) from exc


# --- the page ---------------------------------------------------------------------------------


def build_app(assistant: Assistant) -> gr.Blocks:
    """The page and its API endpoints over `assistant`; nothing is launched or loaded here."""
    doc_ids = sorted(assistant.documents)
    examples = [q for d in doc_ids for q in EXAMPLES.get(d, [])]
    model_events: dict[str, Any] = {"concurrency_id": CONCURRENCY_ID, "concurrency_limit": 1}
    # Gradio checks that a component's file input was uploaded, but passes gr.api's FileData
    # through as given: without this, a client could have /batch read any .txt on the server.
    uploads = Path(get_upload_folder())
    # Results to download live as long as the server (the handler below holds the folder), then go.
    downloads_dir = tempfile.TemporaryDirectory(prefix="qa-serve-")

    with gr.Blocks(
        title="article-qa: ask the article",
        analytics_enabled=False,
        delete_cache=(3600, 3600),  # uploads and served copies older than an hour
    ) as app:
        gr.Markdown(INTRO)
        with gr.Accordion("Settings", open=False), gr.Row():
            top_k = gr.Slider(1, MAX_TOP_K, value=1, step=1, label="Answers to show (top-k)", elem_id="top-k")
            doc = gr.Dropdown(
                [ALL_ARTICLES, *doc_ids],
                value=ALL_ARTICLES,
                label="Article",
                visible=len(doc_ids) > 1,  # one article: nothing to choose
                elem_id="doc",
            )

        with gr.Tabs():
            with gr.Tab("Ask", id="ask"):
                with gr.Row(equal_height=True):
                    question = gr.Textbox(
                        label="Question",
                        placeholder="Ask something the article says, then press Enter",
                        lines=1,
                        max_lines=1,
                        scale=5,
                        autofocus=True,
                        elem_id="question",
                    )
                    ask_button = gr.Button("Ask", variant="primary", scale=1, elem_id="ask-button")
                if examples:
                    gr.Examples(examples, inputs=[question], label="Examples (click one, then Ask)")
                status = gr.Markdown(elem_id="status")
                citation = gr.Markdown(elem_id="citation")
                article = gr.HighlightedText(
                    label="The article",
                    show_legend=False,
                    show_inline_category=False,
                    combine_adjacent=False,
                    color_map={ANSWER_LABEL: "#facc15"},
                    interactive=False,
                    visible=False,
                    elem_id="article",
                )
                with gr.Accordion("Other answers", open=True, visible=False, elem_id="others-box") as others_box:
                    others = gr.Markdown(elem_id="others")
                with gr.Accordion("Retrieved passages", open=False, elem_id="passages-box") as passages_box:
                    passages = gr.Markdown(elem_id="passages")

            with gr.Tab("Batch", id="batch"):
                gr.Markdown(BATCH_HELP)
                upload = gr.File(label="Questions file (.csv, .jsonl or .txt)", type="filepath", elem_id="upload")
                batch_button = gr.Button("Answer all", variant="primary", elem_id="batch-button")
                batch_status = gr.Markdown(elem_id="batch-status")
                table = gr.Dataframe(
                    headers=list(RECORD_FIELDS),
                    interactive=False,
                    wrap=True,
                    # Fit all of `qa batch`'s columns on screen; the long ones wrap.
                    column_widths=["5%", "17%", "12%", "6%", "6%", "7%", "11%", "6%", "19%", "11%"],
                    elem_id="batch-table",
                )
                downloads = gr.File(
                    label="Download the results", file_count="multiple", interactive=False, elem_id="downloads"
                )

        def on_ask(q: str, k: float, d: str) -> tuple[Any, ...]:
            view = ask_handler(assistant, q, k, d)
            return (
                view.status,
                view.citation,
                gr.update(value=view.highlight, label=view.highlight_label, visible=view.highlight is not None),
                gr.update(visible=bool(view.others)),
                answers_markdown(view.others),
                # An abstention's evidence is its closest passages: show them without a click.
                gr.update(open=view.abstained),
                passages_markdown(view.passages),
            )

        gr.on(
            triggers=[ask_button.click, question.submit],
            fn=on_ask,
            inputs=[question, top_k, doc],
            outputs=[status, citation, article, others_box, others, passages_box, passages],
            api_visibility="private",  # gradio_client uses /ask below, which returns plain JSON
            show_progress="minimal",
            **model_events,
        )

        def on_batch(f: str | None, k: float, d: str) -> tuple[Any, ...]:
            view = batch_handler(assistant, f, k, d, out_dir=Path(downloads_dir.name), upload_root=uploads)
            return view.status, view.rows or None, view.files or None

        batch_button.click(
            on_batch,
            inputs=[upload, top_k, doc],
            outputs=[batch_status, table, downloads],
            api_visibility="private",
            **model_events,
        )

        def ask(question: str, top_k: int = 1, doc_id: str | None = None) -> dict:
            """Answer one question: the same JSON object as `qa ask --json`."""
            return api_ask(assistant, question, top_k, doc_id)

        def batch(file: gr.FileData, top_k: int = 1, doc_id: str | None = None) -> list[dict]:
            """Answer a .csv, .jsonl or .txt file of questions: one record each, the columns of `qa batch`."""
            return api_batch(assistant, file, top_k, doc_id, upload_root=uploads)

        gr.api(ask, api_name="ask", **model_events)
        gr.api(batch, api_name="batch", **model_events)

    app.queue(default_concurrency_limit=1, max_size=256)
    return app


def serve(assistant: Assistant, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, block: bool = True) -> gr.Blocks:
    """Load the models, then serve the page at http://host:port; blocks until Ctrl+C unless `block` is False."""
    assistant.log("Loading the articles, the index and the models…")
    assistant.warm_up()
    app = build_app(assistant)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            show_error=False,
            max_file_size=MAX_UPLOAD_BYTES,
            css=CSS,
            footer_links=["api"],
            quiet=True,  # Gradio's own banner suggests share links; say where the page is instead
        )
    except OSError as exc:
        raise InputError(
            f"cannot serve on {host}:{port}: the port is taken or the address is not this machine's; "
            "pass a free --port (or set QA_PORT) or another --host"
        ) from exc
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    where = "" if shown == host else f" (listening on {host})"
    assistant.log(f"The page is at http://{shown}:{port}{where}; its API is /ask and /batch. Ctrl+C stops it.")
    if block:
        app.block_thread()  # returns on Ctrl+C, after closing the server
    return app

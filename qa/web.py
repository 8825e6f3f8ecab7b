"""The web page (`qa serve`): its layout, its API endpoints and the server, over the same Python API as the CLI.

What the page does lives in `qa.handlers` (plain functions returning `AskView`/`BatchView`);
this module lays out the Gradio components, wires them to the handlers, and turns library
errors into Gradio's one-line errors for API clients.

Gradio is imported here and nowhere else; the CLI imports this module only for `qa serve`,
so `qa ask` never pays for it.
"""

from __future__ import annotations

import contextlib
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gradio as gr
from starlette.middleware import Middleware

from qa.assistant import check_doc_id, check_question
from qa.batch import answer_items
from qa.documents import ARTICLE_CAP
from qa.errors import QAError
from qa.extraction import MAX_SOURCE_BYTES, SOURCE_CAP
from qa.handlers import (
    ALL_ARTICLES,
    ANSWER_LABEL,
    ArticleView,
    BatchView,
    SessionArticles,
    Visit,
    answers_markdown,
    asking_markdown,
    check_port,
    error_message,
    parse_min_confidence,
    parse_top_k,
    passages_markdown,
    read_checked_upload,
    resolve_doc,
    session_ask_handler,
    session_batch_handler,
    unservable,
    use_article_handler,
    use_server_handler,
)
from qa.lanes import IndexLane, Lane, ModelGate, batch_lane, install, sliced
from qa.limits import MAX_BATCH_BYTES, MAX_TOP_K, QUEUE_SIZE, ApiBounds, check_top_k
from qa.settings import DEFAULT_HOST, DEFAULT_PORT
from qa.types import RECORD_FIELDS, Document
from qa.upload_guard import UploadedFiles, UploadGuard

if TYPE_CHECKING:
    from qa.assistant import Assistant


# The loaded models are one, and on a small CPU machine parallel runs only slow each other down:
# qa.lanes.ModelGate lets one model user run at a time, questions first. Each kind of event has its
# own Gradio lane, so a question never queues behind a batch or an article being indexed;
# questions wait for the gate in arrival order.
ASK_EVENTS: dict[str, Any] = {"concurrency_id": "ask", "concurrency_limit": 4}
# The bulk lanes' jobs enter their handlers at once: the lane runs one, keeps BATCH_QUEUE or
# INDEX_QUEUE waiting (showing each its place) and refuses the rest there and then.
BATCH_EVENTS: dict[str, Any] = {"concurrency_id": "batch", "concurrency_limit": None}
INDEX_EVENTS: dict[str, Any] = {"concurrency_id": "index", "concurrency_limit": None}


# Gradio gives each event a tracker of its own where a handler's default is a gr.Progress.
PROGRESS = gr.Progress()


class Lanes:
    """The server's model gate and its bulk lanes: one set per page."""

    def __init__(self) -> None:
        self.gate = ModelGate()
        self.index = IndexLane()
        self.batch: Lane = batch_lane()


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
/* The best guess when it abstains: greyed, so that it never reads as an answer. */
#guess, #guess * { color: #6b7280 !important; }
#guess blockquote { border-left-color: #d1d5db !important; }
"""

INTRO = """\
# Ask the article
Answers are exact spans of the article, with their citation: the span is highlighted where it
stands in the text. When no answer is confident enough, the page says so, and shows its best
guess greyed, with its confidence and the passage it comes from — never as an answer.
"""

CONFIDENCE_HELP = (
    "The assistant answers only when the estimated probability that its answer is right "
    "(SQuAD F1 of at least 0.5 against a careful reader's answer) reaches this value."
)

BATCH_HELP = """\
Upload a file of questions and get one answer per question, in order:
**.csv** with a `question` column (and an optional `id`), **.jsonl** with one
`{"id": ..., "question": ...}` object per line, or **.txt** with one question per line.
The table and the downloads have the same columns as `qa batch`.
"""

OWN_HELP = """\
Paste an article, or upload one as a **.txt** or **.md** file (UTF-8, up to {cap}), a saved web page
(**.html**) or a **.pdf** (up to {source_cap}; its article's text is what you ask), and click
*Use this article* (an uploaded file is used when there is one). It is indexed in memory for this
browser tab only: other visitors keep asking the server's articles, nothing is saved on the server,
and it is dropped when you close the tab or click *Use the server's articles*. The *Ask* and
*Batch* tabs then answer from it.
"""

# --- the named API endpoints (gradio_client) --------------------------------------------------


def api_ask(
    assistant: Assistant,
    question: str,
    top_k: int = 1,
    doc_id: str | None = None,
    min_confidence: float | None = None,
    gate: ModelGate | None = None,
) -> dict[str, Any]:
    """`/ask`: the same JSON object as `qa ask --json`; bad input is an error with a one-line message."""
    try:
        check_ask(assistant, question, top_k, doc_id)
        with gate.hold() if gate is not None else contextlib.nullcontext():
            return assistant.ask(
                question,
                top_k=parse_top_k(top_k),
                doc_id=resolve_doc(doc_id),
                min_confidence=parse_min_confidence(min_confidence),
            ).to_dict()
    except QAError as exc:
        raise gr.Error(str(exc), print_exception=False) from exc


def api_batch(
    assistant: Assistant,
    file: object,
    top_k: int = 1,
    doc_id: str | None = None,
    uploaded: Callable[[object], bool] | None = None,
    min_confidence: float | None = None,
    lanes: Lanes | None = None,
) -> list[dict[str, Any]]:
    """`/batch`: one record per question (the columns of `qa batch`), in the file's order."""
    try:
        items = check_batch(assistant, uploaded, file, top_k, doc_id)
        with lanes.batch.turn() if lanes is not None else contextlib.nullcontext():
            return (sliced(lanes.gate, answer_items) if lanes is not None else answer_items)(
                assistant,
                items,
                top_k=parse_top_k(top_k),
                doc_id=resolve_doc(doc_id),
                min_confidence=parse_min_confidence(min_confidence),
            )
    except QAError as exc:
        raise gr.Error(str(exc), print_exception=False) from exc


def check_ask(assistant: Assistant, question: object = None, top_k: object = 1, doc_id: object = None) -> None:
    """`/ask`'s arguments within the server's bounds (qa.limits), as the page checks them; raises InputError."""
    check_top_k(top_k)  # in the page's order, so that the first problem named is the same
    check_question(question)
    check_doc_id(resolve_doc(doc_id), assistant.documents)  # type: ignore[arg-type]


def check_batch(
    assistant: Assistant,
    uploaded: Callable[[object], bool] | None,
    file: object = None,
    top_k: object = 1,
    doc_id: object = None,
) -> list[Any]:
    """`/batch`'s arguments within the server's bounds, as the page checks them: the file's questions."""
    items, _ = read_checked_upload(file, uploaded, "send a .csv, .jsonl or .txt file of questions")
    check_top_k(top_k)
    check_doc_id(resolve_doc(doc_id), assistant.documents)  # type: ignore[arg-type]
    return items


# --- the page ---------------------------------------------------------------------------------


def build_app(
    assistant: Assistant,
    downloads_dir: Path | None = None,
    articles: SessionArticles | None = None,
    lanes: Lanes | None = None,
) -> gr.Blocks:
    """The page and its API endpoints over `assistant`; nothing is launched or loaded here.

    Batch results to download go to `downloads_dir`, which its owner removes; without one, to a
    folder of the page's own, removed when the page is garbage-collected or Python exits.
    Visitors' own articles are held in `articles` (a bounded store of the page's own by default).
    The API endpoints always ask the server's articles. Questions, batches and visitors' articles
    share the models through `lanes` (qa.lanes; the page's own by default).
    """
    doc_ids = sorted(assistant.documents)
    # Only files that came in through the upload route are read (see qa.upload_guard); `app` is
    # bound below, before any request can arrive.
    uploaded = UploadedFiles(lambda: app.upload_file_set)
    own_downloads = tempfile.TemporaryDirectory(prefix="qa-serve-") if downloads_dir is None else None
    out_dir: Path = Path(own_downloads.name) if own_downloads is not None else downloads_dir
    held = articles if articles is not None else SessionArticles()
    lanes = lanes if lanes is not None else Lanes()
    install(assistant, lanes.gate)  # the reader is shared through the gate

    with gr.Blocks(
        title="article-qa: ask the article",
        analytics_enabled=False,
        delete_cache=(3600, 3600),  # uploads and served copies older than an hour
    ) as app:
        gr.Markdown(INTRO)
        # The name of this tab's own article while it asks one (None: the server's articles). The
        # article itself is in `held`, which is bounded; this says what the tab expects, so that a
        # dropped article is reported rather than silently replaced by the server's.
        page = SimpleNamespace(own=gr.State(None), asking=gr.Markdown(asking_markdown(None), elem_id="asking"))
        _settings_row(page, assistant, doc_ids)
        with gr.Tabs():
            _ask_tab(page, [q for d in doc_ids for q in EXAMPLES.get(d, [])])
            _batch_tab(page)
            _own_tab(page)
        _wire_ask(page, assistant, held, lanes.gate)
        _wire_batch(page, assistant, held, out_dir, uploaded, lanes)
        _wire_own(app, page, assistant, held, uploaded, several=len(doc_ids) > 1, lanes=lanes)
        _api(assistant, uploaded, lanes)

    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    if own_downloads is not None:
        weakref.finalize(app, own_downloads.cleanup)  # the folder lives exactly as long as the page
    return app


def _settings_row(page: SimpleNamespace, assistant: Assistant, doc_ids: list[str]) -> None:
    with gr.Accordion("Settings", open=False), gr.Row():
        page.top_k = gr.Slider(1, MAX_TOP_K, value=1, step=1, label="Answers to show (top-k)", elem_id="top-k")
        page.min_confidence = gr.Slider(
            0.0,
            1.0,
            value=round(assistant.min_confidence, 2),
            step=0.01,
            label="Minimum confidence",
            info=CONFIDENCE_HELP,
            elem_id="min-confidence",
        )
        page.doc = gr.Dropdown(
            [ALL_ARTICLES, *doc_ids],
            value=ALL_ARTICLES,
            label="Article",
            visible=len(doc_ids) > 1,  # one article: nothing to choose
            elem_id="doc",
        )


def _ask_tab(page: SimpleNamespace, examples: list[str]) -> None:
    with gr.Tab("Ask", id="ask"):
        with gr.Row(equal_height=True):
            page.question = gr.Textbox(
                label="Question",
                placeholder="Ask something the article says, then press Enter",
                lines=1,
                max_lines=1,
                scale=5,
                autofocus=True,
                elem_id="question",
            )
            page.ask_button = gr.Button("Ask", variant="primary", scale=1, elem_id="ask-button")
        if examples:
            gr.Examples(examples, inputs=[page.question], label="Examples (click one, then Ask)")
        page.status = gr.Markdown(elem_id="status")
        page.citation = gr.Markdown(elem_id="citation")
        page.guess = gr.Markdown(visible=False, elem_id="guess")
        page.article = gr.HighlightedText(
            label="The article",
            show_legend=False,
            show_inline_category=False,
            combine_adjacent=False,
            color_map={ANSWER_LABEL: "#facc15"},
            interactive=False,
            visible=False,
            elem_id="article",
        )
        with gr.Accordion("Other answers", open=True, visible=False, elem_id="others-box") as page.others_box:
            page.others = gr.Markdown(elem_id="others")
        with gr.Accordion("Retrieved passages", open=False, elem_id="passages-box") as page.passages_box:
            page.passages = gr.Markdown(elem_id="passages")


def _batch_tab(page: SimpleNamespace) -> None:
    with gr.Tab("Batch", id="batch"):
        gr.Markdown(BATCH_HELP)
        page.upload = gr.File(label="Questions file (.csv, .jsonl or .txt)", type="filepath", elem_id="upload")
        page.batch_button = gr.Button("Answer all", variant="primary", elem_id="batch-button")
        page.batch_status = gr.Markdown(elem_id="batch-status")
        page.table = gr.Dataframe(
            headers=list(RECORD_FIELDS),
            interactive=False,
            wrap=True,
            # Fit all of `qa batch`'s columns on screen; the long ones wrap.
            column_widths=["4%", "14%", "10%", "4%", "4%", "5%", "8%", "4%", "15%", "8%", "4%", "4%", "5%", "6%", "5%"],
            elem_id="batch-table",
        )
        page.downloads = gr.File(
            label="Download the results", file_count="multiple", interactive=False, elem_id="downloads"
        )


def _own_tab(page: SimpleNamespace) -> None:
    with gr.Tab("Your article", id="own"):
        gr.Markdown(OWN_HELP.format(cap=ARTICLE_CAP, source_cap=SOURCE_CAP))
        page.own_text = gr.Textbox(
            label="Paste an article",
            placeholder="Paste the article's text here",
            lines=8,
            max_lines=20,
            elem_id="own-text",
        )
        page.own_upload = gr.File(
            label=f"…or upload one (.txt or .md up to {ARTICLE_CAP}; .html or .pdf up to {SOURCE_CAP})",
            type="filepath",
            elem_id="own-upload",
        )
        with gr.Row():
            page.use_button = gr.Button("Use this article", variant="primary", elem_id="use-article")
            page.server_button = gr.Button("Use the server's articles", elem_id="use-server")
        page.own_status = gr.Markdown(elem_id="own-status")


def _wire_ask(page: SimpleNamespace, assistant: Assistant, held: SessionArticles, gate: ModelGate) -> None:
    def on_ask(q: str, k: float, d: str, m: float, mine: str | None, request: gr.Request) -> tuple[Any, ...]:
        with gate.hold():
            view = session_ask_handler(Visit(assistant, held, request.session_hash, mine), q, k, d, m)
        return (
            view.status,
            view.citation,
            gr.update(value=view.guess, visible=bool(view.guess)),
            gr.update(value=view.highlight, label=view.highlight_label, visible=view.highlight is not None),
            gr.update(visible=bool(view.others)),
            answers_markdown(view.others),
            # An abstention's evidence is its closest passages: show them without a click.
            gr.update(open=view.abstained),
            passages_markdown(view.passages),
        )

    gr.on(
        triggers=[page.ask_button.click, page.question.submit],
        fn=on_ask,
        inputs=[page.question, page.top_k, page.doc, page.min_confidence, page.own],
        outputs=[
            page.status,
            page.citation,
            page.guess,
            page.article,
            page.others_box,
            page.others,
            page.passages_box,
            page.passages,
        ],
        api_visibility="private",  # gradio_client uses /ask below, which returns plain JSON
        show_progress="minimal",
        **ASK_EVENTS,
    )


def _wire_batch(
    page: SimpleNamespace,
    assistant: Assistant,
    held: SessionArticles,
    out_dir: Path,
    uploaded: Callable[[object], bool],
    lanes: Lanes,
) -> None:
    def on_batch(
        f: str | None,
        k: float,
        d: str,
        m: float,
        mine: str | None,
        request: gr.Request,
        progress: gr.Progress = PROGRESS,
    ) -> tuple[Any, ...]:
        visit = Visit(assistant, held, request.session_hash, mine)
        options = {"out_dir": out_dir, "uploaded": uploaded, "min_confidence": m}
        try:
            with lanes.batch.turn(lambda ahead: progress(0, desc=f"Waiting: {ahead} question file(s) ahead of yours")):
                progress(0, desc="Answering your questions")
                view = session_batch_handler(visit, f, k, d, answer=sliced(lanes.gate, answer_items), **options)
        except QAError as exc:  # the lane is full
            view = BatchView(status=error_message(exc))
        return view.status, view.rows or None, view.files or None

    page.batch_button.click(
        on_batch,
        inputs=[page.upload, page.top_k, page.doc, page.min_confidence, page.own],
        outputs=[page.batch_status, page.table, page.downloads],
        api_visibility="private",
        **BATCH_EVENTS,
    )


def _wire_own(
    app: gr.Blocks,
    page: SimpleNamespace,
    assistant: Assistant,
    held: SessionArticles,
    uploaded: Callable[[object], bool],
    several: bool,
    lanes: Lanes,
) -> None:
    def show_articles(view: ArticleView) -> tuple[Any, ...]:
        return (
            view.status,
            view.own,
            asking_markdown(view.own),
            gr.update() if view.min_confidence is None else gr.update(value=round(view.min_confidence, 2)),
            # The article choice is among the server's articles: hidden while the tab asks its own.
            gr.update(visible=view.own is None and several),
        )

    def on_use(
        text: str | None, f: str | None, mine: str | None, request: gr.Request, progress: gr.Progress = PROGRESS
    ) -> tuple[Any, ...]:
        def tell(what: str, done: int, total: int) -> None:
            progress((done, total) if total else 0, desc=what, unit="chunks")

        def index(document: Document) -> Assistant:
            return lanes.index.index(assistant, document, lanes.gate, tell)

        view = use_article_handler(assistant, held, request.session_hash, text, f, mine, uploaded=uploaded, index=index)
        return show_articles(view)

    def on_server(request: gr.Request) -> tuple[Any, ...]:
        return show_articles(use_server_handler(assistant, held, request.session_hash))

    outputs = [page.own_status, page.own, page.asking, page.min_confidence, page.doc]
    # Indexing embeds the article in its own lane, a slice at a time, so questions keep flowing.
    page.use_button.click(
        on_use,
        inputs=[page.own_text, page.own_upload, page.own],
        outputs=outputs,
        api_visibility="private",
        **INDEX_EVENTS,
    )
    page.server_button.click(on_server, outputs=outputs, api_visibility="private")

    def drop_article(request: gr.Request) -> None:
        held.drop(request.session_hash)  # the tab was closed or reloaded: its article goes with it

    app.unload(drop_article)


def _api(assistant: Assistant, uploaded: Callable[[object], bool], lanes: Lanes) -> None:
    # The API's signatures stay as they were (Gradio's HTTP routes need every argument, so a
    # new one would break clients that send three); it answers at the server's minimum
    # confidence (`qa serve --min-confidence P`).
    def ask(question: str, top_k: int = 1, doc_id: str | None = None) -> dict:
        """Answer one question: the same JSON object as `qa ask --json`."""
        return api_ask(assistant, question, top_k, doc_id, gate=lanes.gate)

    def batch(file: gr.FileData, top_k: int = 1, doc_id: str | None = None) -> list[dict]:
        """Answer a .csv, .jsonl or .txt file of questions: one record each, the columns of `qa batch`."""
        return api_batch(assistant, file, top_k, doc_id, uploaded=uploaded, lanes=lanes)

    gr.api(ask, api_name="ask", **ASK_EVENTS)
    gr.api(batch, api_name="batch", **BATCH_EVENTS)


def serve(
    assistant: Assistant,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    block: bool = True,
    lanes: Lanes | None = None,
) -> gr.Blocks:
    """Load the models, then serve the page at http://host:port; blocks until Ctrl+C unless `block` is False."""
    check_port(host, port)  # before the models load
    assistant.log("Loading the articles, the index and the models…")
    assistant.warm_up()
    lanes = lanes if lanes is not None else Lanes()
    if not block:
        app = build_app(assistant, lanes=lanes)  # its downloads folder lives as long as the caller keeps the page
        _launch(app, assistant, host, port, lanes)
        return app
    # The downloads folder goes when the server stops. Its own finalizer would come too late:
    # `qa` leaves with os._exit, which skips atexit, so every stopped server left one behind.
    with tempfile.TemporaryDirectory(prefix="qa-serve-") as downloads:
        app = build_app(assistant, Path(downloads), lanes=lanes)
        _launch(app, assistant, host, port, lanes)
        app.block_thread()  # returns on Ctrl+C (or SIGTERM, under `qa serve`), after closing the server
    return app


def _middleware(app: gr.Blocks, assistant: Assistant, lanes: Lanes) -> list[Middleware]:
    """In front of Gradio: only uploaded files are named (first), and raw API calls stay in bounds."""
    uploaded = UploadedFiles(lambda: app.upload_file_set)

    def batch(*args: object) -> None:
        check_batch(assistant, uploaded, *args)
        lanes.batch.room()

    checks = {"ask": lambda *args: check_ask(assistant, *args), "batch": batch}
    return [Middleware(UploadGuard, uploaded=uploaded), Middleware(ApiBounds, checks=checks)]


def _launch(app: gr.Blocks, assistant: Assistant, host: str, port: int, lanes: Lanes) -> None:
    try:
        app.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            show_error=False,
            max_file_size=max(MAX_BATCH_BYTES, MAX_SOURCE_BYTES),  # each tab checks its own cap
            css=CSS,
            footer_links=["api"],
            quiet=True,  # Gradio's own banner suggests share links; say where the page is instead
            # File arguments are checked on the raw request, before Gradio copies or fetches them.
            app_kwargs={"middleware": _middleware(app, assistant, lanes)},
        )
    except OSError as exc:
        raise unservable(host, port) from exc
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    where = "" if shown == host else f" (listening on {host})"
    assistant.log(f"The page is at http://{shown}:{port}{where}; its API is /ask and /batch. Ctrl+C stops it.")

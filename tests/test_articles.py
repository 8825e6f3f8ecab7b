"""Articles as people have them: saved web pages and PDFs in a folder, given alone, or fetched by URL.

The extracted text is the document: every citation is `text[start:end]` of it, the index stores
it (an unchanged file is not extracted again), and a file that cannot give an article is one line
naming it and what to do, with the rest of the folder indexed.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeEmbedder, FakeReader
from sample_files import (
    BOILERPLATE,
    DATE,
    PARAGRAPHS,
    PDF_PARAGRAPHS,
    PNG,
    TITLE,
    URL,
    encrypted_pdf,
    links_only_page,
    news_page,
    scanned_pdf,
    text_pdf,
    write,
)

from qa.assistant import Assistant
from qa.documents import load_documents, read_article
from qa.errors import DocumentError, InputError
from qa.extraction import MAX_SOURCE_BYTES, join_pages

ROOT = Path(__file__).resolve().parent.parent
ENGINEER = "Who led the repairs of the harbour bridge?"
LIBRARIAN = "Who proposed the late opening of the library?"


def mixed_folder(where: Path) -> Path:
    """.txt, .md, .html and .pdf articles side by side, one in a subfolder."""
    where.mkdir()
    shutil.copy(ROOT / "seeds" / "pentagon-ukraine-long-range-strikes.txt", where / "pentagon.txt")
    write(where / "notes.md", b"# Notes\n\nThe town market moved to the old station square in 2019.\n")
    write(where / "bridge.html", news_page())
    (where / "city").mkdir()
    write(where / "city" / "library.pdf", text_pdf())
    return where


def fake_assistant(seeds: Path, index: Path, log: list[str] | None = None) -> Assistant:
    reader = FakeReader({ENGINEER: "Amara Lindgren", LIBRARIAN: "Tomasz Berg"})
    sink = log.append if log is not None else (lambda msg: None)
    return Assistant(seeds, index, reader=reader, embedder=FakeEmbedder(), log=sink)


def test_a_saved_page_gives_its_article_without_the_menus_ads_and_scripts(tmp_path: Path) -> None:
    docs = {d.doc_id: d for d in load_documents(mixed_folder(tmp_path / "a"))}
    page = docs["bridge.html"]
    assert all(p in page.text for p in PARAGRAPHS), page.text
    assert not any(b in page.text for b in BOILERPLATE), page.text
    assert "dataLayer" not in page.text and "<" not in page.text
    assert (page.title, page.date, page.url) == (TITLE, DATE, URL)
    assert page.text.startswith(TITLE)  # the headline is part of the article
    pdf = docs["city/library.pdf"]
    flat = " ".join(pdf.text.split())
    assert all(p in flat for p in PDF_PARAGRAPHS), pdf.text
    assert pdf.title == "Library opens late for exams" and pdf.date is not None
    assert docs["notes.md"].title is None


def test_a_mixed_folder_indexes_and_cites_exact_spans_with_the_page_metadata(tmp_path: Path) -> None:
    seeds = mixed_folder(tmp_path / "seeds")
    assistant = fake_assistant(seeds, tmp_path / "index")
    index, _ = assistant.build_index(progress=False)
    assert set(index.manifest.documents) == {"pentagon.txt", "notes.md", "bridge.html", "city/library.pdf"}
    for question, doc_id, want in (
        (ENGINEER, "bridge.html", "Amara Lindgren"),
        (LIBRARIAN, "city/library.pdf", "Tomasz Berg"),
    ):
        result = assistant.ask(question, doc_id=doc_id)
        a = result.answer
        assert a is not None and a.text == want and a.doc_id == doc_id
        text = assistant.documents[doc_id].text
        assert text[a.start : a.end] == a.text and text[a.sentence_start : a.sentence_end] == a.sentence
        assert result.to_dict()["answers"][0]["title"] == assistant.documents[doc_id].title
    a = assistant.ask(ENGINEER, doc_id="bridge.html").answer
    assert a is not None and (a.title, a.date, a.url) == (TITLE, DATE, URL)
    assert a.source() == f"“{TITLE}”, {DATE}, {URL}"


def test_the_index_stores_the_extracted_text_and_unchanged_files_are_not_extracted_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeds = mixed_folder(tmp_path / "seeds")
    first = fake_assistant(seeds, tmp_path / "index")
    first.build_index(progress=False)
    stored = (tmp_path / "index" / first.index.manifest.generation / "documents.jsonl").read_text(encoding="utf-8")
    records = {r["doc_id"]: r for r in map(json.loads, stored.splitlines())}
    assert set(records) == {"bridge.html", "city/library.pdf"}  # plain text is its own file
    assert records["bridge.html"]["text"] == first.documents["bridge.html"].text

    import qa.documents

    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged file was extracted again")

    monkeypatch.setattr(qa.documents, "extract", no_extraction)
    again = fake_assistant(seeds, tmp_path / "index")
    assert again.index_status() is None  # up to date: same bytes, same text, same chunks
    assert again.documents["bridge.html"] == first.documents["bridge.html"]
    a = again.ask(ENGINEER, doc_id="bridge.html").answer
    assert a is not None and again.documents["bridge.html"].text[a.start : a.end] == a.text

    with pytest.raises(AssertionError, match="extracted again"):
        again.build_index(force=True, progress=False)  # --force starts from scratch: extraction too

    monkeypatch.undo()
    write(seeds / "bridge.html", news_page([*PARAGRAPHS, "A new paragraph about the bridge's opening ceremony."]))
    changed = fake_assistant(seeds, tmp_path / "index")
    assert "changed" in (changed.index_status() or "")
    assert "opening ceremony" in changed.documents["bridge.html"].text


BAD_FILES = {
    "empty-page.html": (links_only_page(), "has no article text"),
    "scan.pdf": (scanned_pdf(), "has no text layer"),
    "locked.pdf": (encrypted_pdf(), "is encrypted with a password"),
    "broken.pdf": (b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\nendobj\ntrailer\n%%EOF", "broken PDF"),
    "photo.html": (PNG, "is not a web page: it holds a PNG image"),
    "report.pdf": (news_page(), "is not a PDF"),
}


def bad_folder(where: Path) -> Path:
    seeds = mixed_folder(where)
    for name, (content, _) in BAD_FILES.items():
        write(seeds / name, content)
    with (seeds / "huge.pdf").open("wb") as f:
        f.truncate(MAX_SOURCE_BYTES + 1)  # sparse: the size is checked before anything is read
    return seeds


def test_each_bad_file_is_one_line_and_the_rest_of_the_folder_is_indexed(tmp_path: Path) -> None:
    seeds = bad_folder(tmp_path / "seeds")
    log: list[str] = []
    assistant = fake_assistant(seeds, tmp_path / "index", log)
    index, _ = assistant.build_index(progress=False)
    assert set(index.manifest.documents) == {"pentagon.txt", "notes.md", "bridge.html", "city/library.pdf"}
    skipped = [line for line in log if line.startswith("Skipped: ")]
    assert len(skipped) == len(BAD_FILES) + 1, log
    for name, (_, needle) in [*BAD_FILES.items(), ("huge.pdf", (b"", "over the 20 MB limit"))]:
        [line] = [s for s in skipped if f"{seeds / name} " in s]
        assert needle in line and "\n" not in line and ";" in line, line  # the problem; then what to do


@pytest.mark.slow
def test_a_new_user_indexes_a_mixed_folder_and_asks_it(tmp_path: Path) -> None:
    """`qa index` then `qa ask`, real models: bad files are one line each, the rest answers with exact citations."""
    seeds = bad_folder(tmp_path / "seeds")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env |= {"QA_SEEDS": str(seeds), "QA_INDEX_DIR": str(tmp_path / "index")}

    def qa(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "qa.cli", *args], capture_output=True, text=True, env=env, timeout=600
        )

    done = qa("index")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "Indexed 4 article(s)" in done.stdout, done.stdout
    skipped = [line for line in done.stderr.splitlines() if line.startswith("Skipped: ")]
    assert len(skipped) == len(BAD_FILES) + 1, done.stderr
    docs = {d.doc_id: d for d in load_documents(seeds, log=lambda m: None)}
    for question, doc_id, want in (
        (ENGINEER, "bridge.html", "Amara Lindgren"),
        (LIBRARIAN, "city/library.pdf", "Berg"),
    ):
        done = qa("ask", question, "--json")
        assert done.returncode == 0, done.stderr
        [answer] = json.loads(done.stdout)["answers"]
        assert answer["doc_id"] == doc_id and want in answer["text"], answer
        assert docs[doc_id].text[answer["start"] : answer["end"]] == answer["text"]
        assert answer["title"] == docs[doc_id].title
    done = qa("ask", ENGINEER)
    assert f"from “{TITLE}”, {DATE}, {URL}" in done.stdout, done.stdout


def test_a_folder_of_only_bad_files_is_one_error_naming_the_first(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    write(seeds / "scan.pdf", scanned_pdf())
    write(seeds / "x.html", PNG)
    with pytest.raises(DocumentError, match=r"no article in .* can be read: .*scan\.pdf has no text layer.*1 more"):
        load_documents(seeds)


@pytest.mark.parametrize(("name", "needle"), [(n, v[1]) for n, v in BAD_FILES.items()])
def test_a_bad_article_file_given_alone_is_one_line(tmp_path: Path, name: str, needle: str) -> None:
    path = write(tmp_path / name, BAD_FILES[name][0])
    with pytest.raises((DocumentError, InputError), match=needle):
        read_article(path)


def test_a_page_or_pdf_given_alone_reads_as_in_a_folder(tmp_path: Path) -> None:
    folder = {d.doc_id: d for d in load_documents(mixed_folder(tmp_path / "seeds"))}
    page = read_article(tmp_path / "seeds" / "bridge.html")
    pdf = read_article(tmp_path / "seeds" / "city" / "library.pdf")
    assert (page.text, page.sha256, page.title, page.url) == (
        folder["bridge.html"].text,
        folder["bridge.html"].sha256,
        TITLE,
        URL,
    )
    assert pdf.text == folder["city/library.pdf"].text and pdf.doc_id == "library.pdf"
    a = Assistant.from_document(page, reader=FakeReader({ENGINEER: "Amara Lindgren"}), embedder=FakeEmbedder())
    answer = a.ask(ENGINEER).answer
    assert answer is not None and page.text[answer.start : answer.end] == answer.text and answer.url == URL


def test_pdf_lines_become_paragraphs_without_running_headers_or_page_numbers() -> None:
    pages = [
        "The Daily Example\nBridge reopens\nThe bridge reopened on Tuesday after eight months of long-\n"
        "range planning and repairs that cost the city twelve million\neuros in all.\nIt was ﬁnished early.\n1 / 2",
        "The Daily Example\nFerries carried commuters across the harbour.\n2 / 2",
    ]
    assert join_pages(pages) == (
        "Bridge reopens\nThe bridge reopened on Tuesday after eight months of long-range planning and repairs "
        "that cost the city twelve million euros in all.\nIt was finished early.\n"
        "Ferries carried commuters across the harbour."
    )


# --- URLs ----------------------------------------------------------------------------------------


class _Pages(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/news/harbour-bridge":
            self._send(news_page(), "text/html; charset=utf-8")
        elif self.path == "/files/library":
            self._send(text_pdf(), "application/pdf")
        elif self.path == "/missing":
            self.send_error(404, "Not Found")
        elif self.path == "/endless":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            with contextlib.suppress(ConnectionError):  # the client stops reading at its cap
                for _ in range(64):
                    self.wfile.write(b"<p>" + b"x" * 65536 + b"</p>")
        elif self.path == "/slow":
            time.sleep(3)
            self._send(news_page(), "text/html")

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(ConnectionError):  # the client gave up (the time-limit test)
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_url_is_fetched_and_read_as_the_saved_file_would_be(site: str) -> None:
    page = read_article(f"{site}/news/harbour-bridge")
    assert page.doc_id == "harbour-bridge.html" and page.text == read_article_bytes(news_page(), "x.html").text
    assert (page.title, page.url) == (TITLE, URL)  # the page's canonical address
    pdf = read_article(f"{site}/files/library")
    assert pdf.doc_id == "library.pdf" and "Tomasz Berg" in pdf.text and pdf.url == f"{site}/files/library"


def read_article_bytes(raw: bytes, name: str):
    from qa.documents import article_from_bytes

    return article_from_bytes(raw, name)


def test_fetching_is_capped_in_size_and_time(site: str) -> None:
    from qa.fetching import fetch

    with pytest.raises(InputError, match="is larger than 1 MB"):
        fetch(f"{site}/endless", max_bytes=1024 * 1024)
    started = time.monotonic()
    with pytest.raises(InputError, match="within 1 s"):
        fetch(f"{site}/slow", timeout=1.0)
    assert time.monotonic() - started < 2.9
    with pytest.raises(InputError, match="HTTP 404"):
        fetch(f"{site}/missing")


def test_offline_a_url_fails_in_one_line_at_once(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: what a machine without a network answers
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    for url, needle in (
        (f"http://127.0.0.1:{closed}/story", "refused the connection"),
        ("https://no-such-host.invalid/story", "does not resolve (no network here?)"),
    ):
        env = {**os.environ, "QA_READER_MODEL": str(tmp_path / "no-such-reader")}  # fails before any model
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "qa.cli", "ask", "Who?", "--article", url],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert time.monotonic() - started < 15
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"Error: cannot fetch {url}: ") and needle in line, line


def test_the_page_takes_an_uploaded_pdf_and_a_pasted_page_source(tmp_path: Path) -> None:
    """The Your article tab's handler (the browser test drives the same through the page)."""
    from qa.handlers import SessionArticles, Visit, session_ask_handler, use_article_handler

    server = Assistant.from_text(
        "A server article about nothing in particular.",
        reader=FakeReader({ENGINEER: "Amara Lindgren", LIBRARIAN: "Tomasz Berg"}),
        embedder=FakeEmbedder(),
    )
    store = SessionArticles()
    pasted = use_article_handler(server, store, "tab-1", news_page().decode("utf-8"))
    assert pasted.own == "pasted.html", pasted.status
    view = session_ask_handler(Visit(server, store, "tab-1", pasted.own), ENGINEER, 1, None, 0.0)
    assert view.highlight is not None and "<" not in view.highlight["text"]
    [entity] = view.highlight["entities"]
    assert view.highlight["text"][entity["start"] : entity["end"]] == "Amara Lindgren"
    assert TITLE in view.citation and URL in view.citation

    upload = write(tmp_path / "library.pdf", text_pdf())
    used = use_article_handler(server, store, "tab-2", "", str(upload))
    assert used.own == "library.pdf", used.status
    view = session_ask_handler(Visit(server, store, "tab-2", used.own), LIBRARIAN, 1, None, 0.0)
    assert view.highlight is not None
    [entity] = view.highlight["entities"]
    assert view.highlight["text"][entity["start"] : entity["end"]] == "Tomasz Berg"

    scan = str(write(tmp_path / "scan.pdf", scanned_pdf()))
    scanned = use_article_handler(server, store, "tab-2", "", scan, current=used.own)
    assert "scan.pdf has no text layer" in scanned.status and scanned.own == "library.pdf"  # the one in use stays

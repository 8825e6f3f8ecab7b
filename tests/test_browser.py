"""The page in a real headless browser: Debian's chromium, driven by Playwright.

The server runs in this process over the session's assistant (models load once), launched by
`qa.web.serve` itself. Set QA_SCREENSHOT=docs/screenshot.png to save the page after an answer.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qa.batch import answer_items, parse_questions

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ANSWERABLE = "Who devised the process to evaluate requests for long-range missile strikes?"
ANOTHER = "Where did Trump meet Putin on August 15th?"
UNANSWERABLE = "Who won the 2018 FIFA World Cup?"
# Flags that keep Chromium from reaching out to anything: only the local page is loaded.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

# The article as the page shows it: the text of every token in order, a newline for each
# line break, and the character ranges of the highlighted tokens.
READ_ARTICLE = """() => {
  let text = "";
  const highlighted = [];
  for (const node of document.querySelectorAll("#article .text, #article .line-break")) {
    if (node.classList.contains("line-break")) { text += "\\n"; continue; }
    if (node.closest(".token").classList.contains("highlighted")) {
      highlighted.push([text.length, text.length + node.textContent.length]);
    }
    text += node.textContent;
  }
  return {text, highlighted};
}"""

STATUS_SAYS = """(want) => {
  const status = document.querySelector("#status [data-testid=markdown]");
  return status !== null && status.innerText.includes(want);
}"""

READ_TABLE = """() => {
  const rows = {};
  for (const cell of document.querySelectorAll("#batch-table [role=gridcell][data-row]")) {
    (rows[cell.dataset.row] ||= [])[Number(cell.dataset.col)] = cell.innerText.trim();
  }
  return Object.keys(rows).sort((a, b) => a - b).map((k) => rows[k]);
}"""


def chromium_path() -> str:
    path = os.environ.get("QA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "Chromium is not installed: install Debian's package with `apt-get install -y chromium` "
            "(CI's .ci/run does; Playwright's own browser downloads do not work here), "
            "or point QA_CHROMIUM at a chromium binary",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(assistant: Any) -> Iterator[str]:
    from qa import web

    port = free_port()
    app = web.serve(assistant, "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "Playwright is not installed: pip install playwright (do not run `playwright install`; "
            "the tests drive Debian's chromium)",
            pytrace=False,
        )
    executable = chromium_path()
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()
    finally:
        pw.stop()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 1300})
    p = context.new_page()
    p.set_default_timeout(TIMEOUT_MS)
    p.goto(server)
    p.wait_for_selector("#question input")
    try:
        yield p
    finally:
        context.close()


def ask(page: Any, question: str, expect: str) -> str:
    """Type a question, press Enter, wait until the status says `expect`; returns the status text."""
    box = page.locator("#question input")
    box.fill(question)
    box.press("Enter")
    page.wait_for_function(STATUS_SAYS, arg=expect)
    return page.locator("#status [data-testid=markdown]").inner_text()


def test_enter_answers_and_highlights_exactly_the_answer(page: Any, assistant: Any) -> None:
    expected = assistant.ask(ANSWERABLE).answer
    assert expected is not None, "the reader should answer this question from the article"
    status = ask(page, ANSWERABLE, expected.text)
    assert status.splitlines()[0].strip() == expected.text
    assert "confidence" in status
    page.wait_for_selector("#article .token.highlighted .text")
    shown = page.evaluate(READ_ARTICLE)
    document = assistant.documents[expected.doc_id].text
    assert shown["text"] == document, "the page shows the article exactly as it is"
    assert shown["highlighted"] == [[expected.start, expected.end]]
    start, end = shown["highlighted"][0]
    assert shown["text"][start:end] == expected.text
    assert page.locator("#article .token.highlighted .text").inner_text().strip() == expected.text
    citation = page.locator("#citation").inner_text()
    assert f"characters {expected.start}-{expected.end}" in citation
    assert f"chunk {expected.chunk_id}" in citation and expected.doc_id in citation
    if os.environ.get("QA_SCREENSHOT"):
        page.screenshot(path=os.environ["QA_SCREENSHOT"], full_page=True)


def test_unanswerable_question_abstains_without_highlight(page: Any) -> None:
    status = ask(page, UNANSWERABLE, "does not say")
    assert "does not say" in status
    page.wait_for_selector("#article .text")
    assert page.locator("#article .token.highlighted").count() == 0
    # The closest passages are open without a click.
    page.wait_for_selector("#passages [data-testid=markdown]")
    assert "score" in page.locator("#passages").inner_text()


def test_bad_input_shows_a_message_and_the_page_keeps_working(page: Any, assistant: Any) -> None:
    status = ask(page, "", "the question is empty")
    assert "Cannot answer" in status
    status = ask(page, "why " * 200, "characters long")
    assert "Cannot answer" in status
    expected = assistant.ask(ANSWERABLE).answer
    assert expected is not None
    ask(page, ANSWERABLE, expected.text)
    assert "Traceback" not in page.content()


def test_batch_upload_answers_every_row(page: Any, assistant: Any, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Batch").click()
    upload = page.locator("#upload input[type=file]")

    bad = tmp_path / "questions.pdf"
    bad.write_text("%PDF-1.4", encoding="utf-8")
    upload.set_input_files(str(bad))
    page.wait_for_selector("#upload [aria-label='questions.pdf']")
    page.locator("#batch-button").click()
    page.wait_for_selector("#batch-status :text('is not a CSV, JSONL or TXT file')")
    page.locator("#upload button[aria-label='Clear']").first.click()

    text = f"{ANSWERABLE}\n{UNANSWERABLE}\n{ANOTHER}\n"
    good = tmp_path / "questions.txt"
    good.write_text(text, encoding="utf-8")
    upload.set_input_files(str(good))
    page.wait_for_selector("#upload [aria-label='questions.txt']")
    page.locator("#batch-button").click()
    page.wait_for_selector("#batch-status :text('3 questions')")
    expected = answer_items(assistant, parse_questions(text, "txt"))
    rows = page.evaluate(READ_TABLE)
    assert len(rows) == 3
    for row, record in zip(rows, expected, strict=True):
        assert row[0] == str(record["id"]) and row[1] == record["question"]
        assert row[2] == (record["answer"] or "")
        assert row[-1] == "", f"row {row[0]} has an error: {row[-1]}"
    assert any(r["answer"] for r in expected), "at least one question should be answered"
    downloads = page.locator("#downloads").inner_text()
    assert "questions-answers" in downloads and ".csv" in downloads and ".jsonl" in downloads


def test_the_minimum_confidence_slider_decides_whether_to_answer(page: Any, assistant: Any) -> None:
    expected = assistant.ask(ANSWERABLE, min_confidence=0.0).answer
    assert expected is not None
    page.get_by_text("Settings", exact=True).click()  # the settings accordion starts closed
    number = page.locator("#min-confidence input[type=number]")
    number.wait_for()
    number.fill("1")
    number.press("Enter")
    status = ask(page, ANSWERABLE, "does not say")  # no answer is certain to be right
    assert "does not say clearly" in status and expected.text not in status
    # The best guess is shown apart, greyed, with its confidence and the passage it comes from.
    page.wait_for_selector("#guess :text('Best guess')")
    guess = page.locator("#guess").inner_text()
    assert expected.text in guess and "confidence" in guess and "Closest passage" in guess
    grey = page.locator("#guess p").first.evaluate("e => getComputedStyle(e).color")
    assert grey == "rgb(107, 114, 128)", grey
    number.fill("0")
    number.press("Enter")
    status = ask(page, ANSWERABLE, expected.text)
    assert status.splitlines()[0].strip() == expected.text


OWN_ARTICLE = (
    "The Riverside Library reopened on Monday after a two-year renovation.\n\n"
    "The new reading room was designed by the architect Maria Okafor. It seats 120 readers under a glass roof.\n"
    "The city paid 4 million euros for the work, and the library now opens every day of the week."
)
OWN_QUESTION = "Who designed the new reading room?"

SAYS = """([selector, want]) => {
  const node = document.querySelector(selector);
  return node !== null && node.innerText.includes(want);
}"""


def use_article(page: Any, expect: str) -> str:
    """Click *Use this article* in the Your article tab; wait until its status says `expect`."""
    page.locator("#use-article").click()
    page.wait_for_function(SAYS, arg=["#own-status", expect])
    return page.locator("#own-status").inner_text()


def test_a_pasted_article_is_asked_and_highlighted_in_its_own_tab_only(
    page: Any, browser: Any, server: str, assistant: Any
) -> None:
    from qa.assistant import Assistant

    own = Assistant.from_text(
        OWN_ARTICLE, "pasted.txt", reader=assistant.reader, embedder=assistant.embedder, settings=assistant.settings
    )
    # The page asks with its slider's value, which starts at the calibration's choice to 2 places.
    expected = own.ask(OWN_QUESTION, min_confidence=round(own.min_confidence, 2)).answer
    assert expected is not None, "the reader should answer this question from the pasted article"
    served = assistant.ask(ANSWERABLE).answer
    assert served is not None

    page.get_by_role("tab", name="Your article").click()
    page.locator("#own-text textarea").fill(OWN_ARTICLE)
    use_article(page, "Using your article pasted.txt")
    assert "your article pasted.txt" in page.locator("#asking").inner_text()
    page.get_by_role("tab", name="Ask").click()
    status = ask(page, OWN_QUESTION, expected.text)
    assert status.splitlines()[0].strip() == expected.text
    page.wait_for_selector("#article .token.highlighted .text")
    shown = page.evaluate(READ_ARTICLE)
    assert shown["text"] == OWN_ARTICLE, "the page shows the pasted article exactly as pasted"
    assert shown["highlighted"] == [[expected.start, expected.end]]
    assert OWN_ARTICLE[expected.start : expected.end] == expected.text
    citation = page.locator("#citation").inner_text()
    assert f"characters {expected.start}-{expected.end}" in citation and "pasted.txt" in citation

    # Another visitor (another browser context, so another session) asks the server's article.
    context = browser.new_context(viewport={"width": 1100, "height": 1300})
    try:
        other = context.new_page()
        other.set_default_timeout(TIMEOUT_MS)
        other.goto(server)
        other.wait_for_selector("#question input")
        assert "the server's articles" in other.locator("#asking").inner_text()
        ask(other, ANSWERABLE, served.text)
        other.wait_for_selector("#article .token.highlighted .text")
        seen = other.evaluate(READ_ARTICLE)
        assert seen["text"] == assistant.documents[served.doc_id].text
        assert seen["highlighted"] == [[served.start, served.end]]
    finally:
        context.close()

    # Back to the server's articles in the first tab.
    page.get_by_role("tab", name="Your article").click()
    use = page.locator("#use-server")
    use.click()
    page.wait_for_function(SAYS, arg=["#own-status", "server's articles again"])
    page.get_by_role("tab", name="Ask").click()
    ask(page, ANSWERABLE, served.text)
    assert page.evaluate(READ_ARTICLE)["text"] == assistant.documents[served.doc_id].text


def test_an_uploaded_article_and_a_binary_one(page: Any, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Your article").click()
    upload = page.locator("#own-upload input[type=file]")
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00")
    upload.set_input_files(str(binary))
    page.wait_for_selector("#own-upload [aria-label='photo.txt']")
    status = use_article(page, "not UTF-8")
    assert status.strip().startswith("Cannot use this article:") and len(status.strip().splitlines()) == 1, status
    assert "the server's articles" in page.locator("#asking").inner_text()
    page.locator("#own-upload button[aria-label='Clear']").first.click()

    good = tmp_path / "notes.md"
    good.write_text(OWN_ARTICLE, encoding="utf-8")
    upload.set_input_files(str(good))
    page.wait_for_selector("#own-upload [aria-label='notes.md']")
    use_article(page, "Using your article notes.md")
    assert "your article notes.md" in page.locator("#asking").inner_text()
    assert "Traceback" not in page.content()


def test_indexing_a_longer_article_shows_its_progress(page: Any) -> None:
    """The *Your article* tab shows how far the embedding is (qa.lanes), then the article in use."""
    sentence = "The committee met on Tuesday and reviewed the budget for the new bridge over the river. "
    page.get_by_role("tab", name="Your article").click()
    page.locator("#own-text textarea").fill(sentence * 500)  # ~44 KB: ~110 chunks, seconds to embed
    page.locator("#use-article").click()
    page.wait_for_function("() => document.body.innerText.includes('Embedding pasted.txt')")
    page.wait_for_function(SAYS, arg=["#own-status", "Using your article pasted.txt"])
    assert "chunks" in page.locator("#own-status").inner_text()


@pytest.mark.parametrize("kind", ["html", "pdf"])
def test_an_uploaded_web_page_or_pdf_is_asked_in_its_extracted_text(
    page: Any, assistant: Any, tmp_path: Path, kind: str
) -> None:
    """The page shows the article extracted from the upload, and highlights the answer at its offsets."""
    from sample_files import PDF_PARAGRAPHS, news_page, text_pdf

    from qa.assistant import Assistant
    from qa.documents import read_article

    path = tmp_path / f"story.{kind}"
    path.write_bytes(news_page() if kind == "html" else text_pdf(PDF_PARAGRAPHS))
    document = read_article(path)  # what the server extracts from the same bytes
    question = "Who led the repairs of the harbour bridge?" if kind == "html" else "Who proposed the late opening?"
    own = Assistant.from_document(
        document, reader=assistant.reader, embedder=assistant.embedder, settings=assistant.settings
    )
    expected = own.ask(question, min_confidence=0.0).answer
    assert expected is not None and document.text[expected.start : expected.end] == expected.text

    page.get_by_role("tab", name="Your article").click()
    page.locator("#own-upload input[type=file]").set_input_files(str(path))
    page.wait_for_selector(f"#own-upload [aria-label='story.{kind}']")
    use_article(page, f"Using your article story.{kind}")
    page.get_by_text("Settings", exact=True).click()
    number = page.locator("#min-confidence input[type=number]")
    number.fill("0")
    number.press("Enter")
    page.get_by_role("tab", name="Ask").click()
    status = ask(page, question, expected.text)
    assert status.splitlines()[0].strip() == expected.text
    page.wait_for_selector("#article .token.highlighted .text")
    shown = page.evaluate(READ_ARTICLE)
    assert shown["text"] == document.text, "the page shows the extracted article, not the file's bytes"
    assert "<" not in shown["text"] and "%PDF" not in shown["text"]
    assert shown["highlighted"] == [[expected.start, expected.end]]
    citation = page.locator("#citation").inner_text()
    assert f"characters {expected.start}-{expected.end}" in citation and f"story.{kind}" in citation
    if document.title:
        assert document.title in citation  # the page's or PDF's title travels with the citation

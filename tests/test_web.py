"""The web page's handlers as plain functions: no server, no browser.

The rendering tests build Results by hand over the bundled article, so they do not depend on
what the reader says; the `slow` tests go through the real assistant (models loaded once).
"""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qa import web
from qa.assistant import MAX_QUESTION_CHARS
from qa.batch import answer_items, parse_questions
from qa.errors import InputError
from qa.handlers import (
    ALL_ARTICLES,
    ANSWER_LABEL,
    answers_markdown,
    ask_handler,
    batch_handler,
    highlight_value,
    md_escape,
    parse_top_k,
    passages_markdown,
    render_result,
    resolve_doc,
    upload_path,
)
from qa.types import RECORD_FIELDS, Answer, Chunk, Document, Passage, Result

DOC_ID = "pentagon-ukraine-long-range-strikes.txt"
ANSWERABLE = "Who devised the process to evaluate requests for long-range missile strikes?"
UNANSWERABLE = "Who won the 2018 FIFA World Cup?"


@pytest.fixture(scope="module")
def document(article_text: str) -> Document:
    return Document(doc_id=DOC_ID, path=DOC_ID, text=article_text, sha256="")


def span(doc: Document, text: str, score: float = 0.9, chunk_id: int = 1) -> Answer:
    start = doc.text.index(text)
    s_start = doc.text.rfind("\n", 0, start) + 1
    s_end = doc.text.find(".", start) + 1
    return Answer(text, start, start + len(text), score, doc.doc_id, chunk_id, doc.text[s_start:s_end], s_start, s_end)


def passage(doc: Document, start: int, end: int, rank: int, chunk_id: int) -> Passage:
    return Passage(Chunk(doc.doc_id, chunk_id, start, end, doc.text[start:end]), 0.5 / rank, rank)


class StubAssistant:
    """Stands in for Assistant where a test needs a failure the real one never makes."""

    def __init__(self, documents: dict[str, Document], error: Exception) -> None:
        self.documents = documents
        self.error = error
        self.min_confidence = 0.5

    def ask(self, question: str, top_k: int = 1, doc_id: str | None = None, **kwargs: Any) -> Result:
        raise self.error

    def ask_many(self, questions: list[str], **kwargs: Any) -> list[Result]:
        raise self.error


# --- rendering (no models) --------------------------------------------------------------------


def test_highlight_is_the_answer_at_its_offsets(document: Document) -> None:
    answer = span(document, "Eldridge Colby")
    value = highlight_value(document, answer)
    assert value["text"] == document.text
    assert value["entities"] == [{"start": answer.start, "end": answer.end, "entity": ANSWER_LABEL}]
    ent = value["entities"][0]
    assert value["text"][ent["start"] : ent["end"]] == "Eldridge Colby"


def test_highlight_refuses_offsets_that_do_not_match(document: Document) -> None:
    good = span(document, "Eldridge Colby")
    shifted = Answer(good.text, good.start + 1, good.end + 1, 0.9, DOC_ID, 1, good.sentence, 0, 10)
    with pytest.raises(RuntimeError, match="do not match"):
        highlight_value(document, shifted)


def test_render_answer_with_other_answers(document: Document) -> None:
    best, other = span(document, "Eldridge Colby"), span(document, "Pete Hegses", 0.4, chunk_id=2)
    result = Result(ANSWERABLE, answers=[best, other], passages=[passage(document, 299, 894, 1, 1)])
    view = render_result({DOC_ID: document}, result)
    assert not view.abstained
    assert "Eldridge Colby" in view.status and "0.90" in view.status
    assert view.highlight == highlight_value(document, best)
    assert f"characters {best.start}-{best.end}" in view.citation and "chunk 1" in view.citation
    assert "**Eldridge Colby**" in view.citation  # the answer in bold inside its sentence
    assert view.others == [[2, "Pete Hegses", 0.4, DOC_ID, 2, other.start, other.end, other.sentence]]
    assert "Pete Hegses" in answers_markdown(view.others)
    assert view.passages[0][:6] == [1, 0.5, DOC_ID, 1, 299, 894]
    assert view.result == result.to_dict()


def test_render_abstention_highlights_nothing(document: Document) -> None:
    closest = span(document, "Alaska", 0.1)
    result = Result(UNANSWERABLE, passages=[passage(document, 1403, 2032, 1, 3)], closest=closest)
    view = render_result({DOC_ID: document}, result)
    assert view.abstained
    assert "does not say" in view.status
    assert view.highlight == {"text": document.text, "entities": []}
    assert "Alaska" not in view.status + view.citation  # the unsure guess is not offered as an answer
    assert len(view.passages) == 1
    assert "characters 1403-2032" in passages_markdown(view.passages)


def test_markdown_in_article_text_is_shown_literally() -> None:
    assert md_escape("*bold* [link](x) <b> $x$") == r"\*bold\* \[link\](x) \<b\> \$x\$"
    assert md_escape("- not a list") == r"\- not a list"
    assert md_escape("1. not a list") == r"1\. not a list"
    assert md_escape("B-2A Spirit, 2024.") == "B-2A Spirit, 2024."


def test_unexpected_errors_become_one_line(document: Document) -> None:
    stub = StubAssistant({DOC_ID: document}, RuntimeError("boom\nTraceback (most recent call last):"))
    view = ask_handler(stub, ANSWERABLE)  # type: ignore[arg-type]
    assert "Something went wrong" in view.status and "Traceback" not in view.status
    assert view.highlight is None
    batch = batch_handler(stub, _write(document, "q.txt", "a question?\n"))  # type: ignore[arg-type]
    assert "Something went wrong" in batch.status and batch.rows == []


def test_only_uploaded_files_are_read(document: Document, tmp_path: Path) -> None:
    import gradio as gr

    from qa.upload_guard import UploadedFiles

    stub = StubAssistant({DOC_ID: document}, RuntimeError("must not be asked"))
    # A copy that Gradio made in its cache of a file the client named is not an upload, even
    # though it sits in the upload folder: only the upload route's own files count.
    uploads = tmp_path / "uploads"
    (uploads / "abc").mkdir(parents=True)
    received = uploads / "abc" / "questions.txt"
    received.write_text("a question?\n", encoding="utf-8")
    copied = uploads / "def" / "secret.txt"
    copied.parent.mkdir()
    copied.write_text("a line that must not leave the server\n", encoding="utf-8")
    uploaded = UploadedFiles(lambda: {str(received)})
    for secret in (str(copied), str(uploads / "abc" / ".." / "def" / "secret.txt"), "https://example.com/q.txt"):
        view = batch_handler(stub, secret, uploaded=uploaded)  # type: ignore[arg-type]
        assert "not uploaded" in view.status and view.rows == []
        with pytest.raises(gr.Error, match="not uploaded"):
            web.api_batch(stub, {"path": secret}, uploaded=uploaded)  # type: ignore[arg-type]
    assert uploaded(str(uploads / "def" / ".." / "abc" / "questions.txt"))  # another spelling of an upload


def test_the_upload_guard_refuses_file_arguments_that_were_not_uploaded() -> None:
    from qa.upload_guard import NOT_UPLOADED, refusal

    def uploaded(path: object) -> bool:
        return path == "/up/1/q.txt"

    def body(path: str) -> bytes:
        return json.dumps({"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, 1, None]}).encode()

    assert refusal(body("/up/1/q.txt"), uploaded) is None
    assert refusal(body("/etc/passwd.txt"), uploaded) == NOT_UPLOADED
    assert "URL" in (refusal(body("https://example.com/q.txt"), uploaded) or "")
    nested = json.dumps({"data": [[{"x": {"path": "/etc/a.txt", "meta": {"_type": "gradio.FileData"}}}]]}).encode()
    assert refusal(nested, uploaded) == NOT_UPLOADED
    assert refusal(b'{"data": ["a question", 1, null]}', uploaded) is None
    assert refusal(b"not json", uploaded) is None  # Gradio refuses it itself; it names no file


def _write(document: Document, name: str, text: str | bytes) -> str:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="qa-web-test-"))
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("value,expected", [(1, 1), (3.0, 3), ("2", 2), (5, 5)])
def test_parse_top_k(value: object, expected: int) -> None:
    assert parse_top_k(value) == expected


@pytest.mark.parametrize("value", [0, -1, 2.5, "two", None, 6])
def test_parse_top_k_rejects(value: object) -> None:
    with pytest.raises(InputError, match="top-k"):
        parse_top_k(value)


def test_resolve_doc() -> None:
    assert resolve_doc(None) is None
    assert resolve_doc("") is None
    assert resolve_doc(ALL_ARTICLES) is None
    assert resolve_doc(DOC_ID) == DOC_ID


def test_upload_shapes(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    assert upload_path(str(p)) == (p, "x.csv")
    assert upload_path({"path": str(p), "orig_name": "mine.csv"}) == (p, "mine.csv")
    assert upload_path(None) is None
    assert upload_path({"path": None}) is None


def _doc_choice(app: Any) -> Any:
    [dropdown] = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "doc"]
    return dropdown


def test_article_choice_only_with_several_articles(document: Document) -> None:
    other = Document("other.txt", "other.txt", "Another article. It says little.", "")
    several = StubAssistant({DOC_ID: document, "other.txt": other}, RuntimeError("unused"))
    dropdown = _doc_choice(web.build_app(several))  # type: ignore[arg-type]
    assert dropdown.visible is True
    assert [value for _, value in dropdown.choices] == [ALL_ARTICLES, "other.txt", DOC_ID]
    one = StubAssistant({DOC_ID: document}, RuntimeError("unused"))
    assert _doc_choice(web.build_app(one)).visible is False  # type: ignore[arg-type]


def test_cli_does_not_import_gradio() -> None:
    code = "import sys, qa.cli; assert 'gradio' not in sys.modules, 'qa.cli imported gradio'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_serve_help() -> None:
    from click.testing import CliRunner

    from qa.cli import cli

    out = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=200).output
    assert "--host" in out and "127.0.0.1" in out and "QA_HOST" in out
    assert "--port" in out and "7860" in out and "QA_PORT" in out
    assert "--reader-model" in out


# --- the real assistant -----------------------------------------------------------------------


@pytest.mark.slow
def test_build_app_names_the_api_endpoints(assistant: Any) -> None:
    import gradio as gr

    app = web.build_app(assistant)
    assert isinstance(app, gr.Blocks)
    public = {fn.api_name for fn in app.fns.values() if fn.api_visibility == "public"}
    assert {"ask", "batch"} <= public
    assert not getattr(app, "is_running", False)  # building never launches


@pytest.mark.slow
def test_ask_answers_with_exact_highlight(assistant: Any) -> None:
    view = ask_handler(assistant, ANSWERABLE, 1, ALL_ARTICLES)
    assert not view.abstained, view.status
    assert view.result is not None
    best = view.result["answers"][0]
    assert "Colby" in best["text"]
    assert view.highlight is not None
    text = assistant.documents[best["doc_id"]].text
    assert view.highlight["text"] == text
    [ent] = view.highlight["entities"]
    assert (ent["start"], ent["end"]) == (best["start"], best["end"])
    assert text[ent["start"] : ent["end"]] == best["text"]
    assert f"characters {best['start']}-{best['end']}" in view.citation
    assert f"chunk {best['chunk_id']}" in view.citation and md_escape(best["doc_id"]) in view.citation
    assert view.passages, "the retrieved passages are shown too"
    assert view.result == assistant.ask(ANSWERABLE).to_dict()


@pytest.mark.slow
def test_ask_abstains(assistant: Any) -> None:
    view = ask_handler(assistant, UNANSWERABLE, 1, None)
    assert view.abstained, view.status
    assert "does not say" in view.status
    assert view.highlight is not None and view.highlight["entities"] == []
    assert view.passages


@pytest.mark.slow
@pytest.mark.parametrize(
    "question,message",
    [
        ("", "empty"),
        ("   \n ", "empty"),
        (None, "empty"),
        ("x" * (MAX_QUESTION_CHARS + 1), "characters long"),
    ],
)
def test_bad_questions_get_a_message(assistant: Any, question: str | None, message: str) -> None:
    view = ask_handler(assistant, question, 1, None)
    assert view.status.startswith("**Cannot answer:**") and message in view.status
    assert view.highlight is None and view.result is None and not view.passages


@pytest.mark.slow
def test_bad_settings_get_a_message_and_the_page_keeps_working(assistant: Any) -> None:
    assert "top-k" in ask_handler(assistant, ANSWERABLE, 0, None).status
    assert "no article" in ask_handler(assistant, ANSWERABLE, 1, "missing.txt").status
    view = ask_handler(assistant, ANSWERABLE, 1, DOC_ID)
    assert view.result is not None and view.result["answers"]


@pytest.mark.slow
def test_top_k_shows_the_other_answers(assistant: Any) -> None:
    view = ask_handler(assistant, ANSWERABLE, 3, None)
    assert view.result is not None
    answers = view.result["answers"]
    assert [row[1] for row in view.others] == [a["text"] for a in answers[1:]]
    assert [row[0] for row in view.others] == list(range(2, len(answers) + 1))


@pytest.mark.slow
def test_batch_upload_with_a_bad_row(assistant: Any, document: Document, tmp_path: Path) -> None:
    upload = _write(
        document,
        "questions.csv",
        f'id,question\nq1,"{ANSWERABLE}"\nq2,{UNANSWERABLE}\nq3,too,many,columns\nq4,\n',
    )
    view = batch_handler(assistant, upload, 1, None, out_dir=tmp_path)
    assert [r["id"] for r in view.records] == ["q1", "q2", "q3", "q4"]
    by_id = {r["id"]: r for r in view.records}
    assert by_id["q1"]["answer"] and "Colby" in by_id["q1"]["answer"]
    assert by_id["q2"]["answer"] is None and by_id["q2"]["error"] is None  # abstained
    assert "does not have the header's columns" in by_id["q3"]["error"]
    assert "empty" in by_id["q4"]["error"]
    assert "4 questions" in view.status and "2 with errors" in view.status
    # The table and the downloads hold exactly what `qa batch` would write.
    items = parse_questions(Path(upload).read_text(encoding="utf-8"), "csv")
    assert view.records == answer_items(assistant, items, top_k=1)
    assert [len(row) for row in view.rows] == [len(RECORD_FIELDS)] * 4
    csv_path, jsonl_path = view.files
    assert csv_path.endswith("questions-answers.csv") and jsonl_path.endswith("questions-answers.jsonl")
    with open(csv_path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(RECORD_FIELDS) and [r["id"] for r in rows] == ["q1", "q2", "q3", "q4"]
    lines = Path(jsonl_path).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == view.records
    for r in view.records:
        if r["answer"] is not None:
            assert assistant.documents[r["doc_id"]].text[r["start"] : r["end"]] == r["answer"]


@pytest.mark.slow
def test_batch_jsonl_and_txt(assistant: Any, document: Document) -> None:
    jsonl = _write(document, "q.jsonl", f'{{"id": 7, "question": "{ANSWERABLE}"}}\nnot json\n')
    view = batch_handler(assistant, {"path": jsonl, "orig_name": "q.jsonl"}, 1, None)
    assert [r["id"] for r in view.records] == [7, 2]
    assert view.records[0]["answer"] and "not valid JSON" in view.records[1]["error"]
    txt = _write(document, "q.txt", f"{ANSWERABLE}\n\n{UNANSWERABLE}\n")
    view = batch_handler(assistant, txt, 1, None)
    assert [r["id"] for r in view.records] == [1, 2] and all(r["error"] is None for r in view.records)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,content,message",
    [
        ("questions.pdf", "%PDF-1.4", "is not a CSV, JSONL or TXT file"),
        ("questions", "a question?", "is not a CSV, JSONL or TXT file"),
        ("questions.csv", "id,text\n1,hello\n", "no 'question' column"),
        ("questions.txt", "\n  \n", "has no questions"),
    ],
)
def test_bad_uploads_get_a_message(assistant: Any, document: Document, name: str, content: Any, message: str) -> None:
    view = batch_handler(assistant, _write(document, name, content), 1, None)
    assert view.status.startswith("**Cannot answer:**") and message in view.status.replace("\\", "")
    assert view.rows == [] and view.files == []


@pytest.mark.slow
def test_an_undecodable_line_in_an_upload_is_one_error_row(assistant: Any, document: Document) -> None:
    # Decoded like `qa batch` reads files: the bad line keeps its place with an error, the rest is answered.
    upload = _write(document, "questions.txt", b"caf\xe9?\nWho devised the process?\n")
    view = batch_handler(assistant, upload, 1, None)
    assert [r["id"] for r in view.records] == [1, 2]
    assert "not UTF-8" in view.records[0]["error"] and view.records[1]["error"] is None
    assert "not UTF-8" in view.status.replace("\\", "") and len(view.files) == 2


@pytest.mark.slow
def test_batch_without_a_file(assistant: Any) -> None:
    assert "upload a" in batch_handler(assistant, None, 1, None).status


@pytest.mark.slow
def test_api_ask_is_the_cli_json(assistant: Any) -> None:
    import gradio as gr

    assert web.api_ask(assistant, ANSWERABLE, 2) == assistant.ask(ANSWERABLE, top_k=2).to_dict()
    with pytest.raises(gr.Error, match="empty"):
        web.api_ask(assistant, "  ")


@pytest.mark.slow
def test_serve_reports_a_taken_port(assistant: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(InputError, match="pass a free --port"):
            web.serve(assistant, "127.0.0.1", port, block=False)

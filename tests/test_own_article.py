"""Your own article: one text indexed in memory, from Python (`Assistant.from_text`), the command
line (`--article FILE`) and the page's handlers (the *Your article* tab).

The Python and page tests use the pure-Python fakes (the real pipeline around them); the command
line runs the real `qa` process with the tiny reader, as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FakeEmbedder, FakeReader

from qa.assistant import Assistant
from qa.calibration import CALIBRATION_FILE, Calibration
from qa.documents import MAX_ARTICLE_BYTES
from qa.errors import InputError
from qa.files import OutputFile
from qa.handlers import (
    PASTED_NAME,
    SessionArticles,
    Visit,
    session_ask_handler,
    session_batch_handler,
    use_article_handler,
    use_server_handler,
)
from qa.upload_guard import UploadedFiles

ROOT = Path(__file__).resolve().parent.parent
# CRLF, curly quotes and a repeated name: offsets must index the text exactly as given.
TEXT = (
    "The Riverside Library reopened on Monday after a two-year renovation.\r\n\r\n"
    "The new reading room was designed by the architect Maria Okafor. It seats 120 readers "
    "under a glass roof, which the city calls “the lantern”.\r\n"
    "Maria Okafor said the roof was the hardest part. The city paid 4 million euros for the work.\n"
)
WHO = "Who designed the new reading room?"
COST = "How much did the city pay?"
NOT_SAID = "Who won the 2018 FIFA World Cup?"
ANSWERS = {WHO: "Maria Okafor", COST: "4 million euros"}
SERVED = "The missiles can reach hundreds of miles into Russia. The Wall Street Journal reported it first."
REPORTER = "Who reported it?"


def fakes() -> tuple[FakeReader, FakeEmbedder]:
    return FakeReader({**ANSWERS, REPORTER: "Wall Street Journal"}), FakeEmbedder()


def folder_assistant(tmp_path: Path, name: str, text: str, reader: FakeReader, embedder: FakeEmbedder) -> Assistant:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / name).write_bytes(text.encode("utf-8"))  # bytes: no newline translation
    return Assistant(
        seeds,
        tmp_path / "index",
        reader=reader,  # type: ignore[arg-type]
        embedder=embedder,
        chunk_size=120,
        chunk_overlap=40,
        log=lambda msg: None,
    )


def snapshot(*folders: Path) -> dict[str, tuple[bool, int, int]]:
    """Every entry under the folders (and the folders themselves): is it a folder, its size, its mtime."""
    out = {}
    for folder in folders:
        for p in [folder, *sorted(folder.rglob("*"))]:
            st = p.stat()
            out[str(p)] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


# --- Python: Assistant.from_text ----------------------------------------------------------------


def test_from_text_answers_exactly_as_the_same_article_in_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, embedder = fakes()
    folder = folder_assistant(tmp_path, "library.txt", TEXT, reader, embedder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a relative seeds/ or index/ would show up here
    own = Assistant.from_text(TEXT, "library.txt", reader=reader, embedder=embedder, settings=folder.settings)
    assert own.reader is reader and own.embedder is embedder  # shared, not loaded again
    for question in (WHO, COST, NOT_SAID):
        mine = own.ask(question, top_k=3)
        assert mine.to_dict() == folder.ask(question, top_k=3).to_dict()
    best = own.ask(WHO).answer
    assert best is not None and best.doc_id == "library.txt"
    assert (best.start, best.end) == (TEXT.index("Maria Okafor"), TEXT.index("Maria Okafor") + len("Maria Okafor"))
    assert TEXT[best.start : best.end] == best.text
    assert TEXT[best.sentence_start : best.sentence_end] == best.sentence
    cost = own.ask(COST).answer
    assert cost is not None and TEXT[cost.start : cost.end] == "4 million euros"
    assert own.index.path is None and own.seeds is None and own.index_dir is None
    assert list(elsewhere.iterdir()) == []  # nothing written where it runs


def test_from_text_uses_the_readers_calibration_not_an_index_folders(tmp_path: Path) -> None:
    reader, embedder = fakes()
    folder = folder_assistant(tmp_path, "library.txt", TEXT, reader, embedder)
    strict = replace(Calibration.from_reader_settings(reader.settings), min_confidence=0.999)
    folder.build_index(progress=False)
    strict.save(OutputFile(tmp_path / "index" / CALIBRATION_FILE))
    assert folder.ask(WHO).abstained  # the folder's own calibration asks for 0.999
    own = Assistant.from_text(TEXT, "library.txt", reader=reader, embedder=embedder, settings=folder.settings)
    assert own.calibration.source == "qa_reader.json"
    assert own.min_confidence < 0.999
    answer = own.ask(WHO).answer
    assert answer is not None and TEXT[answer.start : answer.end] == "Maria Okafor"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("", ("pasted.txt is empty", "give the text")),
        (" \r\n\t ", ("is empty",)),
        ("Who \ud800 wrote it?", ("not UTF-8", "character 5", "save it as UTF-8")),
        ("a\x00b", ("NUL", "binary")),
        ("x" * (MAX_ARTICLE_BYTES + 1), ("larger than 1 MB", "split it")),
        ("é" * (MAX_ARTICLE_BYTES // 2 + 1), ("larger than 1 MB",)),  # the cap is in UTF-8 bytes
        (b"bytes, not text", ("must be text",)),
    ],
)
def test_from_text_refuses_what_is_not_an_article(text: object, needles: tuple[str, ...]) -> None:
    reader, embedder = fakes()
    with pytest.raises(InputError) as err:
        Assistant.from_text(text, reader=reader, embedder=embedder)  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles), message


def test_from_text_takes_an_article_right_at_the_cap() -> None:
    reader, embedder = fakes()
    own = Assistant.from_text("x " * (MAX_ARTICLE_BYTES // 2), reader=reader, embedder=embedder)
    assert own.documents[PASTED_NAME].text.startswith("x x")  # indexed only when asked


# --- the page's handlers --------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> tuple[Assistant, SessionArticles]:
    """The server's assistant (one served article) and the store of visitors' articles, with fakes."""
    reader, embedder = fakes()
    return folder_assistant(tmp_path, "served.txt", SERVED, reader, embedder), SessionArticles()


def test_a_pasted_article_is_asked_in_its_session_only(site: tuple[Assistant, SessionArticles]) -> None:
    server, store = site
    view = use_article_handler(server, store, "tab-1", TEXT)
    assert view.own == PASTED_NAME and "Using **your article** pasted.txt" in view.status, view.status
    own = store.get("tab-1")
    assert own is not None and own.reader is server.reader and own.embedder is server.embedder
    assert view.min_confidence == own.min_confidence

    asked = session_ask_handler(Visit(server, store, "tab-1", view.own), WHO, 1, "served.txt", view.min_confidence)
    assert asked.highlight is not None and asked.highlight["text"] == TEXT
    [mark] = asked.highlight["entities"]
    assert TEXT[mark["start"] : mark["end"]] == "Maria Okafor" and mark["start"] == TEXT.index("Maria Okafor")
    assert f"characters {mark['start']}-{mark['end']}" in asked.citation and "pasted.txt" in asked.citation
    assert "pasted.txt" in asked.highlight_label

    # Another tab asks the server's article, and cannot see the pasted one.
    other = session_ask_handler(Visit(server, store, "tab-2", None), REPORTER, 1, None, None)
    assert other.highlight is not None and other.highlight["text"] == SERVED
    assert other.result is not None and other.result["answers"][0]["doc_id"] == "served.txt"
    unseen = session_ask_handler(Visit(server, store, "tab-2", None), WHO, 1, None, None)
    assert unseen.result is not None and unseen.result["answers"] == []  # the pasted article is not there

    # The settings work on it as on a served article.
    assert "does not say" in session_ask_handler(Visit(server, store, "tab-1", view.own), WHO, 1, None, 1.0).status
    assert "top-k" in session_ask_handler(Visit(server, store, "tab-1", view.own), WHO, 0, None, None).status

    back = use_server_handler(server, store, "tab-1")
    assert back.own is None and back.min_confidence == server.min_confidence and store.get("tab-1") is None
    again = session_ask_handler(Visit(server, store, "tab-1", back.own), REPORTER, 1, None, None)
    assert again.highlight is not None and again.highlight["text"] == SERVED


def test_batch_answers_from_the_sessions_article(site: tuple[Assistant, SessionArticles], tmp_path: Path) -> None:
    server, store = site
    view = use_article_handler(server, store, "tab-1", TEXT)
    questions = tmp_path / "questions.txt"
    questions.write_text(f"{WHO}\n{COST}\n{NOT_SAID}\n", encoding="utf-8")
    tab = Visit(server, store, "tab-1", view.own)
    batch = session_batch_handler(tab, str(questions), 1, "served.txt", out_dir=tmp_path)
    answers = [(r["answer"], r["doc_id"]) for r in batch.records]
    assert answers == [("Maria Okafor", PASTED_NAME), ("4 million euros", PASTED_NAME), (None, None)], batch.status
    for r in batch.records[:2]:
        assert TEXT[r["start"] : r["end"]] == r["answer"]
    assert len(batch.files) == 2


def test_an_uploaded_article_goes_through_the_upload_check(
    site: tuple[Assistant, SessionArticles], tmp_path: Path
) -> None:
    server, store = site
    received = tmp_path / "uploads" / "abc" / "notes.md"
    received.parent.mkdir(parents=True)
    received.write_bytes(TEXT.encode("utf-8"))
    elsewhere = tmp_path / "secret.txt"
    elsewhere.write_text("A file on the server that no one uploaded.", encoding="utf-8")
    uploaded = UploadedFiles(lambda: {str(received)})

    refused = use_article_handler(server, store, "tab-1", "", str(elsewhere), uploaded=uploaded)
    assert "not uploaded" in refused.status and refused.own is None and store.get("tab-1") is None

    given = {"path": str(received), "orig_name": "notes.md"}
    view = use_article_handler(server, store, "tab-1", "ignored: the upload wins", given, uploaded=uploaded)
    assert view.own == "notes.md", view.status
    asked = session_ask_handler(Visit(server, store, "tab-1", view.own), COST, 1, None, None)
    assert asked.result is not None and asked.result["answers"][0]["doc_id"] == "notes.md"
    assert asked.highlight is not None and asked.highlight["text"] == TEXT


@pytest.mark.parametrize(
    ("text", "name", "content", "needle"),
    [
        ("", None, None, "pasted.txt is empty"),
        ("   \n", None, None, "is empty"),
        ("x" * (MAX_ARTICLE_BYTES + 1), None, None, "larger than 1 MB"),
        ("", "empty.txt", b"", "empty.txt is empty"),
        ("", "latin1.txt", "Café society.".encode("latin-1"), "not UTF-8"),
        ("", "image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8"),
        ("", "zeros.txt", b"text\x00\x00\x00 and more", "binary"),
        ("", "big.txt", b"x" * (MAX_ARTICLE_BYTES + 1), "larger than 1 MB"),
        ("", "slides.pdf", b"%PDF-1.4", "slides.pdf is a broken PDF"),
        ("", "slides.pptx", b"PK\x03\x04", "not a .txt, .md, .html or .pdf file"),
    ],
)
def test_a_bad_article_is_one_line_and_keeps_the_one_in_use(
    site: tuple[Assistant, SessionArticles],
    tmp_path: Path,
    text: str,
    name: str | None,
    content: bytes | None,
    needle: str,
) -> None:
    server, store = site
    first = use_article_handler(server, store, "tab-1", TEXT)
    upload = None
    if name is not None:
        upload = tmp_path / name
        upload.write_bytes(content or b"")
    view = use_article_handler(server, store, "tab-1", text, str(upload) if upload else None, first.own)
    assert view.status.startswith("**Cannot use this article:**") and "\n" not in view.status, view.status
    assert needle in view.status.replace("\\", ""), view.status
    assert "still asking your article pasted.txt" in view.status.replace("\\", "")
    assert view.own == first.own and view.min_confidence is None and store.get("tab-1") is not None


def test_the_store_is_bounded_and_a_dropped_article_is_reported(site: tuple[Assistant, SessionArticles]) -> None:
    server, _ = site
    store = SessionArticles(capacity=2)
    for tab in ("tab-1", "tab-2"):
        use_article_handler(server, store, tab, TEXT)
    assert store.get("tab-1") is not None  # tab-1 is now the most recently used
    use_article_handler(server, store, "tab-3", TEXT)
    assert len(store) == 2 and store.get("tab-2") is None and store.get("tab-1") is not None
    view = session_ask_handler(Visit(server, store, "tab-2", PASTED_NAME), WHO)
    assert "no longer held" in view.status and view.highlight is None  # never the server's article instead
    store.drop("tab-1")
    assert store.get("tab-1") is None


def test_the_page_has_the_tab_and_drops_articles_when_a_tab_closes(site: tuple[Assistant, SessionArticles]) -> None:
    from qa import web

    server, store = site
    app = web.build_app(server, articles=store)
    ids = {getattr(b, "elem_id", None) for b in app.blocks.values()}
    assert {"own-text", "own-upload", "use-article", "use-server", "own-status", "asking"} <= ids
    unload = [fn for fn in app.fns.values() if any(t[1] == "unload" for t in fn.targets)]
    assert len(unload) == 1
    use_article_handler(server, store, "tab-1", TEXT)

    class Closed:
        session_hash = "tab-1"

    unload[0].fn(Closed())
    assert store.get("tab-1") is None


# --- the command line -------------------------------------------------------------------------------


def qa(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "qa.cli", *args], input=stdin, capture_output=True, env=full, timeout=300
    )


def one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    err = done.stderr.decode("utf-8", "replace")
    lines = [line for line in err.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), (done.returncode, err)
    assert "Traceback" not in err and all(n in lines[0] for n in needles), err
    return lines[0]


@pytest.fixture
def place(tmp_path: Path, tiny_reader: Path) -> dict[str, str]:
    """Private seeds/ (a served article) and index/ folders that --article must leave alone."""
    seeds, index = tmp_path / "seeds", tmp_path / "index"
    seeds.mkdir()
    index.mkdir()
    (seeds / "served.txt").write_text(SERVED, encoding="utf-8")
    return {"QA_SEEDS": str(seeds), "QA_INDEX_DIR": str(index), "QA_READER_MODEL": str(tiny_reader)}


def check_cited(result: dict, name: str) -> None:
    assert result["error"] is None and result["answers"], result  # the tiny reader always answers
    for a in result["answers"]:
        assert TEXT[a["start"] : a["end"]] == a["text"] and a["doc_id"] == name
    for p in result["passages"]:
        assert TEXT[p["start"] : p["end"]] == p["text"] and p["doc_id"] == name


def test_ask_article_cites_the_file_and_leaves_seeds_and_index_alone(place: dict[str, str], tmp_path: Path) -> None:
    article = tmp_path / "library.txt"
    article.write_bytes(TEXT.encode("utf-8"))
    folders = [Path(place["QA_SEEDS"]), Path(place["QA_INDEX_DIR"])]
    before = snapshot(*folders)
    done = qa(place, "ask", WHO, "--article", str(article), "--json", "--top-k", "3")
    assert done.returncode == 0, done.stderr.decode()
    check_cited(json.loads(done.stdout), "library.txt")
    assert snapshot(*folders) == before


def test_ask_article_from_stdin(place: dict[str, str]) -> None:
    (Path(place["QA_SEEDS"]) / "broken.txt").write_bytes(b"")  # an article folder that cannot be read
    done = qa(place, "ask", WHO, "--article", "-", "--json", stdin=TEXT.encode("utf-8"))
    assert done.returncode == 0, done.stderr.decode()
    check_cited(json.loads(done.stdout), "stdin")


def test_batch_article_answers_every_question_from_the_file(place: dict[str, str], tmp_path: Path) -> None:
    (Path(place["QA_SEEDS"]) / "broken.txt").write_bytes(b"")  # an article folder that cannot be read
    article = tmp_path / "library.md"
    article.write_bytes(TEXT.encode("utf-8"))
    questions = tmp_path / "questions.txt"
    questions.write_text(f"{WHO}\n{COST}\n", encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    done = qa(place, "batch", str(questions), "--article", str(article), "--out", str(out))
    assert done.returncode == 0, done.stderr.decode()
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["question"] for r in records] == [WHO, COST]
    for r in records:
        assert r["doc_id"] == "library.md" and TEXT[r["start"] : r["end"]] == r["answer"]
    done = qa(place, "batch", "-", "--article", str(article), stdin=f"{COST}\n".encode())
    assert done.returncode == 0, done.stderr.decode()
    [record] = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert TEXT[record["start"] : record["end"]] == record["answer"]


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (lambda d: d / "missing.txt", ("--article", "missing.txt does not exist")),
        (lambda d: d, ("is a folder", "one article file")),
        (lambda d: write(d / "empty.txt", b""), ("empty.txt is empty",)),
        (lambda d: write(d / "blank.txt", b" \n\n "), ("blank.txt is empty",)),
        (lambda d: write(d / "latin1.txt", "Café.".encode("latin-1")), ("latin1.txt is not UTF-8", "iconv")),
        (lambda d: write(d / "zeros.txt", b"a\x00b"), ("binary",)),
        (lambda d: write(d / "big.txt", b"x" * (MAX_ARTICLE_BYTES + 1)), ("big.txt is larger than 1 MB",)),
    ],
    ids=["missing", "folder", "empty", "blank", "not-utf8", "binary", "over-1mb"],
)
def test_a_bad_article_file_is_one_line_before_any_model_loads(
    place: dict[str, str], tmp_path: Path, make: Callable[[Path], Path], needles: tuple[str, ...]
) -> None:
    article = make(tmp_path)
    # A reader that cannot load: the article's own error proves it was checked first.
    env = {**place, "QA_READER_MODEL": str(tmp_path / "no-such-reader")}
    one_line_error(qa(env, "ask", WHO, "--article", str(article)), *needles)
    one_line_error(qa(env, "batch", "-", "--article", str(article), stdin=f"{WHO}\n".encode()), *needles)


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_article_mistakes_on_the_command_line_are_one_line(place: dict[str, str], tmp_path: Path) -> None:
    article = write(tmp_path / "library.txt", TEXT.encode("utf-8"))
    done = qa(place, "batch", "-", "--article", "-", stdin=f"{WHO}\n".encode())
    one_line_error(done, "cannot both come from standard input", "give one of them as a file")
    done = qa(place, "ask", WHO, "--article", str(article), "--seeds", place["QA_SEEDS"])
    one_line_error(done, "--article answers over that one file", "drop --seeds")
    done = qa(place, "batch", "-", "--article", str(article), "--out", str(article), stdin=f"{WHO}\n".encode())
    one_line_error(done, "is the input file")
    assert article.read_bytes() == TEXT.encode("utf-8")


def test_the_help_says_what_article_does() -> None:
    from click.testing import CliRunner

    from qa.cli import cli

    for command in ("ask", "batch"):
        out = " ".join(CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output.split())
        assert "--article FILE" in out and "- for standard input" in out, out
        assert "indexed in memory: the seeds and index folders are neither read nor written" in out, out

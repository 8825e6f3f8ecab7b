"""The best guess when unsure: below the min confidence the assistant says the article does not
answer clearly and shows its best span, with its confidence, apart from any answer (CLI, JSON,
batch, the page), exact like every span it shows, and never counted as an answer by `qa eval`.
And questions with no word in the article ("x", "asdf") abstain with no guess at all.

Fake models (tests/fakes.py) for the plumbing; the real `qa` process with the tiny random reader
for the command line.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from test_bad_input import qa
from test_calibration import make

from qa.batch import BatchItem, answer_items
from qa.calibration import content_words, grounded
from qa.display import format_result
from qa.evaluate import GoldItem, make_record, summarize
from qa.handlers import ask_handler, render_result
from qa.types import RECORD_FIELDS

UNSURE = "Who devised the process?"  # the fake reader's span: "Eldridge Colby"


def exact(text: str, start: int, end: int, span: str) -> bool:
    return text[start:end] == span


def test_below_the_cut_the_result_carries_an_exact_guess_apart_from_the_answers(tmp_path: Path) -> None:
    assistant = make(tmp_path)
    article = assistant.documents["a.txt"].text
    sure = assistant.ask(UNSURE, min_confidence=0.0)
    assert sure.answer is not None and sure.guess is None and sure.to_dict()["guess"] is None
    unsure = assistant.ask(UNSURE, min_confidence=1.0)
    assert unsure.abstained and unsure.answer is None
    shown = unsure.to_dict()
    assert shown["answers"] == [] and shown["abstained"] is True
    guess = shown["guess"]
    assert guess["text"] == "Eldridge Colby" and exact(article, guess["start"], guess["end"], guess["text"])
    assert 0.0 <= guess["score"] < 1.0 and guess["doc_id"] == "a.txt"
    assert exact(article, guess["sentence_start"], guess["sentence_end"], guess["sentence"])


def test_batch_records_keep_answer_empty_and_the_guess_in_its_own_fields(tmp_path: Path) -> None:
    assistant = make(tmp_path)
    article = assistant.documents["a.txt"].text
    items = [BatchItem(1, UNSURE), BatchItem(2, "x"), BatchItem(3, "")]
    unsure, nonsense, empty = answer_items(assistant, items, min_confidence=1.0)
    assert set(unsure) == set(RECORD_FIELDS)
    assert unsure["answer"] is None and unsure["score"] is None and unsure["start"] is None
    assert unsure["guess"] == "Eldridge Colby" and unsure["guess_doc_id"] == "a.txt"
    assert exact(article, unsure["guess_start"], unsure["guess_end"], unsure["guess"])
    assert 0.0 <= unsure["guess_score"] < 1.0
    assert nonsense["answer"] is None and nonsense["guess"] is None  # no word of it in the article
    assert empty["error"] and empty["guess"] is None
    answered = answer_items(assistant, items[:1], min_confidence=0.0)[0]
    assert answered["answer"] == "Eldridge Colby" and answered["guess"] is None


def test_the_command_line_text_says_not_clearly_and_labels_the_guess(tmp_path: Path) -> None:
    assistant = make(tmp_path)
    unsure = assistant.ask(UNSURE, min_confidence=1.0)
    text = format_result(unsure)
    lines = text.splitlines()
    assert lines[0] == "The article does not say clearly (no answer is confident enough)."
    assert lines[1] == f"best guess (confidence {unsure.closest.score:.2f}): Eldridge Colby"  # type: ignore[union-attr]
    g = unsure.closest
    assert g is not None and f"characters {g.start}-{g.end}" in lines[2]
    assert "Answer" not in text
    nonsense = format_result(assistant.ask("asdf", min_confidence=0.0))
    assert nonsense.startswith("The article does not say (") and "best guess" not in nonsense


@pytest.mark.parametrize("question", ["x", "asdf", "What is it?", "??", "Who won the 2018 World Cup?"])
def test_questions_with_no_word_in_the_article_abstain_with_no_guess(tmp_path: Path, question: str) -> None:
    assistant = make(tmp_path, {question: ("Eldridge Colby", 9.0, [])})  # the reader is sure of a span
    result = assistant.ask(question, min_confidence=0.0)
    assert result.abstained and result.guess is None and result.features is None


def test_the_content_word_check() -> None:
    assert content_words("What is it?") == [] and content_words("x") == []
    assert content_words("Who devised the process?") == ["devised", "process"]
    passage = ["Policy director Eldridge Colby devised a process, citing the strikes in Ukraine."]
    for question in ("Who devised it?", "Who was cited?", "Which strike?", "What about Ukrainian forces?", "1 Colby"):
        assert grounded(question, passage), question
    for question in ("x", "asdf", "What is it?", "How tall is the moon?", ""):
        assert not grounded(question, passage), question


def test_eval_never_counts_a_guess_as_an_answer(tmp_path: Path) -> None:
    assistant = make(tmp_path)
    docs = assistant.documents
    right = GoldItem("q1", UNSURE, ["Eldridge Colby"], 1)
    result = assistant.ask(UNSURE, min_confidence=1.0)
    record = make_record(right, result, docs)
    assert record.prediction is None and record.abstained and record.em == 0.0 and record.f1 == 0.0
    assert record.details["guess"] == "Eldridge Colby" and record.citations == [True]  # the guess is exact too
    summary = summarize([record], 3)
    assert summary.answered == 0 and summary.f1 == 0.0 and summary.ece is None


def test_the_page_shows_the_guess_greyed_with_its_passage(tmp_path: Path) -> None:
    assistant = make(tmp_path)
    view = ask_handler(assistant, UNSURE, 1, None, 1.0)
    assert view.abstained and "does not say clearly" in view.status
    assert "Eldridge Colby" not in view.status + view.citation  # not offered as the answer
    g = assistant.ask(UNSURE, min_confidence=1.0).closest
    assert g is not None
    assert view.guess.startswith("**Best guess** (confidence ")
    assert "Eldridge Colby" in view.guess and f"characters {g.start}-{g.end}" in view.guess
    assert "Closest passage" in view.guess and view.result is not None and view.result["guess"]["text"] == g.text
    assert view.highlight is not None and view.highlight["entities"] == []
    nonsense = render_result(assistant.documents, assistant.ask("asdf", min_confidence=0.0))
    assert nonsense.guess == "" and "does not say." in nonsense.status
    answered = ask_handler(assistant, UNSURE, 1, None, 0.0)
    assert answered.guess == "" and answered.status.startswith("### Eldridge Colby")


def test_qa_ask_and_batch_show_the_guess(place: dict[str, str], tmp_path: Path) -> None:
    """The real process with the tiny random reader, at min confidence 1 (nothing is sure enough)."""
    article = next(Path(place["QA_SEEDS"]).glob("*.txt")).read_text(encoding="utf-8")
    done = qa(place, "ask", "Who devised the process?", "--min-confidence", "1")
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert text.startswith("The article does not say clearly") and "best guess (confidence " in text
    shown = json.loads(qa(place, "ask", "Who devised the process?", "--json", "--min-confidence", "1").stdout)
    assert shown["answers"] == [] and shown["abstained"]
    g = shown["guess"]
    assert article[g["start"] : g["end"]] == g["text"]
    questions = tmp_path / "q.txt"
    questions.write_text("Who devised the process?\nasdf\n", encoding="utf-8")
    out = tmp_path / "a.csv"
    batch = qa(place, "batch", str(questions), "--min-confidence", "1", "--out", str(out))
    assert batch.returncode == 0, batch.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert list(rows[0]) == list(RECORD_FIELDS)
    assert rows[0]["answer"] == "" and rows[0]["guess"]
    assert article[int(rows[0]["guess_start"]) : int(rows[0]["guess_end"])] == rows[0]["guess"]
    assert rows[1]["answer"] == "" and rows[1]["guess"] == ""
    assert "0 answered, 2 abstained" in batch.stderr.decode()


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory, tiny_reader: Path) -> dict[str, str]:
    import shutil

    from conftest import ARTICLE as BUNDLED

    seeds = tmp_path_factory.mktemp("guess-seeds")
    shutil.copy(BUNDLED, seeds / BUNDLED.name)
    index = tmp_path_factory.mktemp("guess-index")
    return {"QA_SEEDS": str(seeds), "QA_INDEX_DIR": str(index), "QA_READER_MODEL": str(tiny_reader)}

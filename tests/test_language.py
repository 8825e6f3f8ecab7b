"""Questions that are not English get a note saying the reader reads English (and are still asked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeEmbedder, FakeReader

from qa.assistant import Assistant
from qa.batch import BatchItem, run_batch
from qa.display import format_result
from qa.files import OutputFile
from qa.handlers import render_result
from qa.language import NOTE, english_note

NOT_ENGLISH = [
    "Qui a conçu le processus d'évaluation ?",
    "Wer hat den Prozess entwickelt?",
    "¿Quién diseñó el proceso?",
    "Chi ha ideato il processo?",
    "Quem criou o processo?",
    "Wie heeft het proces bedacht?",
    "Кто разработал процесс?",
    "谁设计了这个过程？",
]
ENGLISH = [
    "Who devised the process?",
    "What did Le Monde say about the Bundeswehr?",  # foreign names
    'Did Zelensky say "la guerre est finie"?',  # a quotation
    "Was Hegseth in Alaska?",  # "was" is German too
    "ATACMS?",
    "When did the Ukraine war start",
]


@pytest.mark.parametrize("question", NOT_ENGLISH)
def test_questions_in_other_languages_get_the_note(question: str) -> None:
    assert english_note(question) == NOTE


@pytest.mark.parametrize("question", ENGLISH)
def test_english_questions_get_none(question: str) -> None:
    assert english_note(question) is None


def test_the_note_reaches_ask_json_the_text_output_the_page_and_the_batch_summary(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "a.txt").write_text("Colby devised the process. The strikes went on.", encoding="utf-8")
    french, english = "Qui a conçu le processus ?", "Who devised the process?"
    reader = FakeReader({french: "Colby", english: "Colby"})
    assistant = Assistant(seeds, tmp_path / "index", reader=reader, embedder=FakeEmbedder(), log=lambda m: None)
    asked = assistant.ask(french)
    assert asked.answer is not None and asked.answer.text == "Colby"  # still asked
    assert asked.note == NOTE and json.loads(json.dumps(asked.to_dict()))["note"] == NOTE
    assert format_result(asked).splitlines()[0] == NOTE
    assert NOTE in render_result(assistant.documents, asked).status
    plain = assistant.ask(english)
    assert plain.note is None and plain.to_dict()["note"] is None and NOTE not in format_result(plain)
    items = [BatchItem(1, french), BatchItem(2, english)]
    run = run_batch(lambda: assistant, items, OutputFile(tmp_path / "out.jsonl"), "jsonl", progress=False)
    assert run.summary() == (
        f"Wrote 2 records to {tmp_path / 'out.jsonl'} (2 answered, 0 abstained, 0 errors). "
        "1 question does not look like English: the reader reads English."
    )

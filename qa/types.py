"""The plain types carried through the pipeline: documents, chunks, passages, answers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """An article: citations index into `text`.

    A .txt/.md file's text is the file exactly as read (UTF-8, nothing normalised); a web page's or
    a PDF's is the article extracted from it (`qa.extraction`), stored with the index. `sha256` is
    of the file's bytes. `title`, `date` (YYYY-MM-DD) and `url` come from the page's or the PDF's
    metadata, where it has them, and are shown with every citation of the article.
    """

    doc_id: str
    path: str
    text: str
    sha256: str
    title: str | None = None
    date: str | None = None
    url: str | None = None

    def source(self) -> str:
        """The title, date and URL, as a citation shows them ("" when there are none)."""
        return source_line(self.title, self.date, self.url)


def source_line(title: str | None, date: str | None, url: str | None) -> str:
    parts = [f"“{title}”" if title else "", date or "", url or ""]
    return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Chunk:
    """A window of a document; invariant: `text == document.text[start:end]`."""

    doc_id: str
    chunk_id: int
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Passage:
    """A chunk retrieved for a question, with its retrieval score (higher is closer)."""

    chunk: Chunk
    score: float
    rank: int


@dataclass(frozen=True)
class Answer:
    """An exact span: `document.text[start:end] == text`, end exclusive, score in 0..1."""

    text: str
    start: int
    end: int
    score: float
    doc_id: str
    chunk_id: int
    sentence: str
    sentence_start: int
    sentence_end: int
    # The article's metadata (a web page's or a PDF's; None for plain text), shown with the citation.
    title: str | None = None
    date: str | None = None
    url: str | None = None

    def source(self) -> str:
        return source_line(self.title, self.date, self.url)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Result:
    """What the assistant says to one question: answers (best first) or an abstention."""

    question: str
    answers: list[Answer] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    # The best guess: the best span found when it was not sure enough to answer (so `answers` is
    # empty). Shown as a guess with its confidence, never counted as an answer; None when it
    # answered, found no span, or the question has no word in the passages read.
    closest: Answer | None = None
    error: str | None = None
    seconds: float = 0.0
    # What the calibration read of the best span (`qa.calibration.FEATURES`): `qa calibrate`
    # fits on it, and it shows why the assistant was or was not sure. Not part of `to_dict`.
    features: dict[str, float] | None = field(default=None, repr=False)

    @property
    def answer(self) -> Answer | None:
        return self.answers[0] if self.answers else None

    @property
    def abstained(self) -> bool:
        return self.error is None and not self.answers

    @property
    def guess(self) -> Answer | None:
        """The best guess below the min confidence (`closest`), only when it abstained."""
        return self.closest if self.abstained else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "abstained": self.abstained,
            "answers": [a.to_dict() for a in self.answers],
            # Not an answer: the best span below the min confidence, with its offsets and confidence.
            "guess": self.guess.to_dict() if self.guess is not None else None,
            "passages": [
                {
                    "doc_id": p.chunk.doc_id,
                    "chunk_id": p.chunk.chunk_id,
                    "start": p.chunk.start,
                    "end": p.chunk.end,
                    "score": p.score,
                    "rank": p.rank,
                    "text": p.chunk.text,
                }
                for p in self.passages
            ],
            "error": self.error,
        }

    def to_record(self, record_id: Any) -> dict[str, Any]:
        """One flat batch-output record (the columns of `qa batch`)."""
        a, g = self.answer, self.guess
        return {
            "id": record_id,
            "question": self.question,
            "answer": a.text if a else None,
            "start": a.start if a else None,
            "end": a.end if a else None,
            "score": round(a.score, 4) if a else None,
            "doc_id": a.doc_id if a else None,
            "chunk_id": a.chunk_id if a else None,
            "sentence": a.sentence if a else None,
            # When it abstained: the best guess, apart, so that `answer` stays empty and scores stay honest.
            "guess": g.text if g else None,
            "guess_start": g.start if g else None,
            "guess_end": g.end if g else None,
            "guess_score": round(g.score, 4) if g else None,
            "guess_doc_id": g.doc_id if g else None,
            "error": self.error,
        }


RECORD_FIELDS = (
    "id",
    "question",
    "answer",
    "start",
    "end",
    "score",
    "doc_id",
    "chunk_id",
    "sentence",
    "guess",
    "guess_start",
    "guess_end",
    "guess_score",
    "guess_doc_id",
    "error",
)

"""From the reader's spans to answers: the one place that turns model output into `Answer`s.

The reader scores spans inside each passage (passage character offsets, a `gap` that compares
across passages); here they become answers in document coordinates: offsets shifted by the
chunk's start, spans that overlap in the document merged (the same answer seen from two
overlapping chunks or windows), the same words found elsewhere dropped (top-k alternatives
must say different things), the reader's null threshold applied, and the sentence around
each answer found. The assistant and `qa squad-predict` both decode through `decode`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qa.chunking import sentence_at
from qa.reader import ReaderSettings, Span
from qa.types import Answer, Document, Passage


@dataclass(frozen=True)
class Decoded:
    answers: list[Answer]  # confident answers, best first (empty: abstain)
    closest: Answer | None  # the best span when it was not confident enough
    best_gap: float  # the best span's gap (-inf when no passage had a candidate)


def decode(
    candidates: Sequence[tuple[Span, Passage]],
    documents: dict[str, Document],
    sentences: dict[str, list[tuple[int, int]]],
    settings: ReaderSettings,
    top_k: int = 1,
) -> Decoded:
    kept: list[tuple[float, Answer]] = []
    for span, passage in sorted(candidates, key=lambda c: -c[0].gap):
        start, end = passage.chunk.start + span.start, passage.chunk.start + span.end
        if any(a.doc_id == passage.chunk.doc_id and a.start < end and start < a.end for _, a in kept):
            continue  # the same answer seen from an overlapping chunk or window
        answer = make_answer(
            documents[passage.chunk.doc_id], sentences, passage.chunk.chunk_id, start, end, span.gap, settings
        )
        if any(same_text(a.text, answer.text) for _, a in kept):
            # The same words elsewhere are not another answer; the best-scored place is cited.
            continue
        kept.append((span.gap, answer))
        if len(kept) >= top_k:
            break
    answers = [a for gap, a in kept if settings.confident(gap)]
    closest = kept[0][1] if kept and not answers else None
    return Decoded(answers, closest, kept[0][0] if kept else float("-inf"))


def make_answer(
    doc: Document,
    sentences: dict[str, list[tuple[int, int]]],
    chunk_id: int,
    start: int,
    end: int,
    gap: float,
    settings: ReaderSettings,
) -> Answer:
    s_start, s_end = sentence_at(doc.text, sentences[doc.doc_id], start, end)
    return Answer(
        text=doc.text[start:end],
        start=start,
        end=end,
        score=settings.score(gap),
        doc_id=doc.doc_id,
        chunk_id=chunk_id,
        sentence=doc.text[s_start:s_end],
        sentence_start=s_start,
        sentence_end=s_end,
    )


def same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()

"""From the reader's spans to answers: the one place that turns model output into `Answer`s.

The reader scores spans inside each passage (passage character offsets, a `gap` that compares
across passages); here they become answers in document coordinates: offsets shifted by the
chunk's start, spans that overlap in the document merged (the same answer seen from two
overlapping chunks or windows), the same words found elsewhere dropped (top-k alternatives
must say different things), each answer's probability of being right computed by the
calibration (`qa.calibration`) and the abstention rule applied, and the sentence around
each answer found. The assistant and `qa squad-predict` both decode through `decode`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qa.calibration import MARGIN_CAP, Calibration, candidate_features, grounded
from qa.chunking import sentence_at
from qa.reader import Span
from qa.types import Answer, Document, Passage


@dataclass(frozen=True)
class Decoded:
    answers: list[Answer]  # confident answers, best first (empty: abstain)
    closest: Answer | None  # the best guess: the best span when it was not confident enough
    best_gap: float  # the best span's gap (-inf when no passage had a candidate)
    features: dict[str, float] | None = None  # the best span's calibration features
    grounded: bool = True  # False: no content word of the question is in the passages read


def decode(
    question: str,
    candidates: Sequence[tuple[Span, Passage]],
    documents: dict[str, Document],
    sentences: dict[str, list[tuple[int, int]]],
    calibration: Calibration,
    top_k: int = 1,
    min_confidence: float | None = None,
) -> Decoded:
    """The best span wins; each kept answer's score is the calibrated probability that it is right,
    and the assistant answers only when the best one's reaches `min_confidence`.

    A question none of whose content words is in the passages read (`grounded`: "x", "asdf")
    gets no answer and no guess, whatever the reader scored."""
    if candidates and not grounded(question, list({id(p): p.chunk.text for _, p in candidates}.values())):
        return Decoded([], None, max(s.gap for s, _ in candidates), grounded=False)
    kept: list[tuple[Span, Passage, int, int]] = []
    for span, passage in sorted(candidates, key=lambda c: -c[0].gap):
        start, end = passage.chunk.start + span.start, passage.chunk.start + span.end
        doc = documents[passage.chunk.doc_id]
        if any(p.chunk.doc_id == passage.chunk.doc_id and s < end and start < e for _, p, s, e in kept):
            continue  # the same answer seen from an overlapping chunk or window
        if any(same_text(documents[p.chunk.doc_id].text[s:e], doc.text[start:end]) for _, p, s, e in kept):
            # The same words elsewhere are not another answer; the best-scored place is cited.
            continue
        kept.append((span, passage, start, end))
        if len(kept) >= max(top_k, 2):  # the runner-up too: the margin over it is a feature
            break
    if not kept:
        return Decoded([], None, float("-inf"))
    scored: list[tuple[float, Answer, dict[str, float]]] = []
    for i, (span, passage, start, end) in enumerate(kept[:top_k]):
        runner_up = max((sp.gap for j, (sp, *_) in enumerate(kept) if j != i), default=span.gap - MARGIN_CAP)
        features = candidate_features(question, span, passage, span.gap - runner_up)
        probability = calibration.probability(features)
        answer = make_answer(
            documents[passage.chunk.doc_id], sentences, passage.chunk.chunk_id, start, end, probability
        )
        scored.append((probability, answer, features))
    best_p, best, best_features = scored[0]
    if not calibration.confident(best_p, min_confidence):
        return Decoded([], best, kept[0][0].gap, best_features)
    answers = [a for p, a, _ in scored if calibration.confident(p, min_confidence)]
    return Decoded(answers, None, kept[0][0].gap, best_features)


def make_answer(
    doc: Document,
    sentences: dict[str, list[tuple[int, int]]],
    chunk_id: int,
    start: int,
    end: int,
    score: float,
) -> Answer:
    s_start, s_end = sentence_at(doc.text, sentences[doc.doc_id], start, end)
    return Answer(
        text=doc.text[start:end],
        start=start,
        end=end,
        score=score,
        doc_id=doc.doc_id,
        chunk_id=chunk_id,
        sentence=doc.text[s_start:s_end],
        sentence_start=s_start,
        sentence_end=s_end,
        title=doc.title,
        date=doc.date,
        url=doc.url,
    )


def same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()

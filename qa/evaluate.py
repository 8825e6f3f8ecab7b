"""Answer-quality evaluation over a gold file: EM/F1, abstention, citations, retrieval recall, latency.

A gold file is JSON Lines, one question a line: `{"id": ..., "question": ..., "answers": [...]}`;
`answers` lists the acceptable answer strings and is empty when the articles do not answer the
question. Each question becomes one `QuestionRecord` (what the assistant said, how it scored,
which chunks it read); every metric is a plain function over a list of those records, so the
figures can be recomputed from a report file and tested on hand-made records.

EM and F1 are the official SQuAD v2.0 ones (`qa.metrics`): an abstention is the empty answer, so
it scores 1 on an unanswerable question and 0 on an answerable one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.calibration import RIGHT_F1, coverage_at, expected_calibration_error
from qa.errors import InputError
from qa.files import OutputFile, read_input, split_lines
from qa.metrics import normalize_answer, percentile, score_one
from qa.settings import RETRIEVAL_METHODS, Settings

if TYPE_CHECKING:
    from qa.assistant import Assistant
    from qa.types import Document, Result


# --- the gold file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldItem:
    id: str
    question: str
    answers: list[str]  # empty: the articles do not answer it
    line: int  # 1-based line in the gold file, for messages
    tags: list[str] = field(default_factory=list)

    @property
    def answerable(self) -> bool:
        # Same rule as the SQuAD script: an answer that normalises to nothing is no answer.
        return any(normalize_answer(a) for a in self.answers)


def parse_gold(text: str, source: str = "the gold file") -> list[GoldItem]:
    """Gold items from JSONL text; any bad line is an InputError naming its line number."""
    from qa.assistant import check_question

    items: list[GoldItem] = []
    seen: dict[str, int] = {}
    for line_no, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        where = f"{source} line {line_no}"
        try:
            raw = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{where} is not valid JSON ({exc}); write one JSON object a line") from exc
        if not isinstance(raw, dict):
            raise InputError(f'{where} is not a JSON object; write {{"id", "question", "answers"}} a line')
        try:
            question = check_question(raw.get("question"))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from exc
        answers = raw.get("answers")
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise InputError(
                f"{where} needs 'answers', a list of answer strings ([] when the articles do not answer it)"
            )
        if answers and not any(normalize_answer(a) for a in answers):
            # Otherwise a typo like [""] would silently turn the question into an unanswerable one.
            raise InputError(f"{where} lists only blank answers; give real answers, or [] if there is none")
        rid = raw.get("id", line_no)
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            raise InputError(f"{where} has an 'id' that is neither text nor a whole number")
        rid = str(rid)
        if rid in seen:
            raise InputError(f"{where} repeats id {rid!r} (first on line {seen[rid]}); give each question its own id")
        seen[rid] = line_no
        tags = raw.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InputError(f"{where} has 'tags' that are not a list of strings")
        items.append(GoldItem(rid, question, list(answers), line_no, list(tags)))
    if not items:
        raise InputError(f"{source} has no questions; write one JSON object a line")
    return items


def load_gold(path: str | Path) -> list[GoldItem]:
    path = Path(path)
    text = read_input(path, "gold file", "pass a .jsonl file of questions and answers")
    return parse_gold(text, source=str(path))


# --- one record per question ------------------------------------------------------------------


@dataclass
class QuestionRecord:
    """What happened to one gold question; the unit every metric is computed from."""

    id: str
    question: str
    gold: list[str]
    prediction: str | None  # the best answer's text; None when it abstained or failed
    abstained: bool
    em: float
    f1: float
    # Per shown answer: does document.text[start:end] equal the answer text?
    citations: list[bool] = field(default_factory=list)
    retrieved: list[tuple[str, int]] = field(default_factory=list)  # (doc_id, chunk_id), best first
    gold_rank: int | None = None  # rank of the first retrieved chunk holding a gold answer
    seconds: float = 0.0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # extra report fields (offsets, score, tags)
    # The best span's probability of being right (shown or not), and whether it is right
    # (F1 >= 0.5 against the gold; never for an unanswerable question): for ECE and coverage.
    confidence: float | None = None
    right: bool = False

    @property
    def answerable(self) -> bool:
        return any(normalize_answer(a) for a in self.gold)

    def to_report(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "gold": self.gold,
            "answerable": self.answerable,
            "prediction": self.prediction,
            "abstained": self.abstained,
            "em": self.em,
            "f1": round(self.f1, 4),
            "citations_exact": self.citations,
            "retrieved": [{"doc_id": d, "chunk_id": c} for d, c in self.retrieved],
            "gold_rank": self.gold_rank,
            "seconds": round(self.seconds, 4),
            "error": self.error,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "right": self.right,
            **self.details,
        }


def contains_answer(text: str, answers: Sequence[str]) -> bool:
    """Whether a gold answer lies inside `text`, verbatim or after SQuAD normalisation.

    The normalised comparison is on whole tokens (space-padded), so "US" is not found in "focus".
    """
    norm_text = f" {normalize_answer(text)} "
    for a in answers:
        norm = normalize_answer(a)
        if not norm:
            continue
        if a in text or f" {norm} " in norm_text:
            return True
    return False


def gold_rank(chunk_texts: Sequence[str], answers: Sequence[str]) -> int | None:
    for rank, text in enumerate(chunk_texts, 1):
        if contains_answer(text, answers):
            return rank
    return None


def citation_ok(documents: dict[str, Document], doc_id: str, start: int, end: int, text: str) -> bool:
    doc = documents.get(doc_id)
    return doc is not None and 0 <= start <= end <= len(doc.text) and doc.text[start:end] == text


def make_record(item: GoldItem, result: Result, documents: dict[str, Document]) -> QuestionRecord:
    best = result.answer
    prediction = best.text if best is not None else None
    em, f1 = score_one(item.answers, prediction or "")
    if result.error is not None:
        em, f1 = 0.0, 0.0  # a failed question is a miss, whatever the gold
    details: dict[str, Any] = {}
    if best is not None:
        details.update(start=best.start, end=best.end, score=round(best.score, 4), doc_id=best.doc_id)
        details["chunk_id"] = best.chunk_id
    elif result.guess is not None:
        # The best guess it showed (never scored as an answer): tells a threshold miss from a reader miss.
        g = result.guess
        details.update(guess=g.text, guess_score=round(g.score, 4), guess_start=g.start, guess_end=g.end)
    if item.tags:
        details["tags"] = item.tags
    candidate = best or result.closest
    candidate_f1 = score_one(item.answers, candidate.text)[1] if candidate is not None and item.answerable else 0.0
    return QuestionRecord(
        id=item.id,
        question=item.question,
        gold=item.answers,
        prediction=prediction,
        abstained=result.abstained,
        em=float(em),
        f1=float(f1),
        # Every span it shows is checked, the best guess too.
        citations=[
            citation_ok(documents, a.doc_id, a.start, a.end, a.text)
            for a in [*result.answers, *([result.guess] if result.guess is not None else [])]
        ],
        retrieved=[(p.chunk.doc_id, p.chunk.chunk_id) for p in result.passages],
        gold_rank=gold_rank([p.chunk.text for p in result.passages], item.answers) if item.answerable else None,
        seconds=result.seconds,
        error=result.error,
        details=details,
        confidence=candidate.score if candidate is not None and result.error is None else None,
        right=candidate_f1 >= RIGHT_F1,
    )


# --- metrics over records ---------------------------------------------------------------------
# Each returns a share in 0..1, or None when it has nothing to count (no answerable questions,
# no abstentions...), so an empty case reads "n/a" rather than a misleading 0 or 100%.


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def exact_match(records: Sequence[QuestionRecord]) -> float | None:
    return sum(r.em for r in records) / len(records) if records else None


def f1_score(records: Sequence[QuestionRecord]) -> float | None:
    return sum(r.f1 for r in records) / len(records) if records else None


def abstention_precision(records: Sequence[QuestionRecord]) -> float | None:
    """Of the questions it abstained on, the share the articles really do not answer."""
    abstained = [r for r in records if r.abstained]
    return _share(sum(not r.answerable for r in abstained), len(abstained))


def abstention_recall(records: Sequence[QuestionRecord]) -> float | None:
    """Of the questions the articles do not answer, the share it abstained on."""
    unanswerable = [r for r in records if not r.answerable]
    return _share(sum(r.abstained for r in unanswerable), len(unanswerable))


def citation_exactness(records: Sequence[QuestionRecord]) -> float | None:
    """Share of all shown answers whose offsets cut exactly their text out of the document."""
    checks = [ok for r in records for ok in r.citations]
    return _share(sum(checks), len(checks))


def recall_at(records: Sequence[QuestionRecord], k: int) -> float | None:
    """Share of answerable questions with a gold answer inside one of the first k retrieved chunks."""
    answerable = [r for r in records if r.answerable]
    return _share(sum(r.gold_rank is not None and r.gold_rank <= k for r in answerable), len(answerable))


@dataclass(frozen=True)
class Summary:
    questions: int
    answerable: int
    errors: int
    exact: float | None
    f1: float | None
    f1_answerable: float | None
    abstain_precision: float | None
    abstain_recall: float | None
    citations: float | None
    citation_total: int
    recall_1: float | None
    recall_k: float | None
    k: int
    p50: float | None
    p95: float | None
    answered: int = 0
    ece: float | None = None  # over answered questions: mean confidence vs share right, 10 bins
    coverage_80: float | None = None  # share of questions answerable at 80% accuracy, most confident first
    coverage_90: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(records: Sequence[QuestionRecord], k: int) -> Summary:
    answerable = [r for r in records if r.answerable]
    timed = [r.seconds for r in records if r.error is None]
    shown = [r for r in records if r.prediction is not None]
    return Summary(
        questions=len(records),
        answerable=len(answerable),
        errors=sum(r.error is not None for r in records),
        exact=exact_match(records),
        f1=f1_score(records),
        f1_answerable=f1_score(answerable),
        abstain_precision=abstention_precision(records),
        abstain_recall=abstention_recall(records),
        citations=citation_exactness(records),
        citation_total=sum(len(r.citations) for r in records),
        recall_1=recall_at(records, 1),
        recall_k=recall_at(records, k),
        k=k,
        p50=percentile(timed, 50),
        p95=percentile(timed, 95),
        answered=len(shown),
        ece=expected_calibration_error([r.confidence or 0.0 for r in shown], [r.right for r in shown]),
        coverage_80=coverage_at([r.confidence for r in records], [r.right for r in records], 0.8) if records else None,
        coverage_90=coverage_at([r.confidence for r in records], [r.right for r in records], 0.9) if records else None,
    )


# --- running ----------------------------------------------------------------------------------


def evaluate(
    assistant: Assistant,
    gold: Sequence[GoldItem],
    top_k: int = 1,
    progress: bool = False,
    batch_size: int = 1,
) -> list[QuestionRecord]:
    """Ask every gold question and score the answers, in gold order.

    `batch_size` 1 (the default) answers one question at a time, so each latency is the one a
    single `qa ask` sees; bigger batches finish sooner but every question of a batch then gets
    the batch's mean time.
    """
    assistant.warm_up()  # so that loading models is not billed to the first question's latency
    results = assistant.ask_many([g.question for g in gold], top_k=top_k, progress=progress, batch_size=batch_size)
    docs = assistant.documents
    return [make_record(g, r, docs) for g, r in zip(gold, results, strict=True)]


def write_report(
    out: str | Path | OutputFile, rows: Sequence[dict[str, Any]], inputs: Sequence[str | Path] = ()
) -> None:
    """One JSON object a line, written aside and renamed so a failed run leaves no half file.

    Pass an `OutputFile` opened before the work to have a bad path (or the gold file itself, named
    in `inputs`) fail before any question is asked.
    """
    out = out if isinstance(out, OutputFile) else OutputFile(out, "--report", inputs=inputs)
    out.write_all("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


# --- the table --------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1000 * x:.0f}"


def format_table(rows: Sequence[tuple[str, Summary]], mark: str | None = None) -> str:
    """A fixed-width table, one row per retrieval method; `mark` flags the default method."""
    k = rows[0][1].k if rows else 1
    recall_cols = ["R@1"] if k == 1 else ["R@1", f"R@{k}"]  # R@1 twice would read like a mistake
    header = ["retrieval", "EM", "F1", "F1 ans", "abst P", "abst R", "cited", *recall_cols, "p50 ms", "p95 ms"]
    body = []
    for name, s in rows:
        recalls = [_pct(s.recall_1)] if k == 1 else [_pct(s.recall_1), _pct(s.recall_k)]
        body.append(
            [
                f"{name}*" if name == mark else name,
                _pct(s.exact),
                _pct(s.f1),
                _pct(s.f1_answerable),
                _pct(s.abstain_precision),
                _pct(s.abstain_recall),
                _pct(s.citations),
                *recalls,
                _ms(s.p50),
                _ms(s.p95),
            ]
        )
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded)

    return "\n".join(line(r) for r in [header, *body])


def confidence_line(summary: Summary, min_confidence: float) -> str:
    """The line under the table: how far the confidence can be trusted (see qa.calibration)."""
    ece = "n/a" if summary.ece is None else f"{summary.ece:.3f}"
    return (
        f"confidence (P that the answer is right, F1 >= 0.5): ECE {ece} over the {summary.answered} answered; "
        f"answered {summary.answered}/{summary.questions} at min confidence {min_confidence:.2f}; "
        f"coverage at 80% / 90% accuracy {_pct(summary.coverage_80)}% / {_pct(summary.coverage_90)}%"
    )


def describe(summary: Summary) -> str:
    """The line above the table: what was counted."""
    unanswerable = summary.questions - summary.answerable
    text = (
        f"{summary.questions} questions ({summary.answerable} answerable, {unanswerable} not); "
        f"percent except latency; R@k: a gold answer inside the first k retrieved chunks"
    )
    if summary.errors:
        text += f"; {summary.errors} question(s) failed"
    return text


def run_compare(
    assistant: Assistant,
    gold: Sequence[GoldItem],
    methods: Sequence[str],
    top_k: int = 1,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[tuple[str, list[QuestionRecord]]]:
    """Records for each retrieval method in turn, all with the same reader."""
    out = []
    for method in methods:
        if log is not None:
            log(f"Evaluating with {method} retrieval.")
        out.append((method, evaluate(assistant.with_retrieval(method), gold, top_k=top_k, progress=progress)))
    return out


# --- `qa eval`: the run and what it prints ------------------------------------------------------


@dataclass
class EvalRun:
    """The summaries of one `qa eval`, one per retrieval method, and the assistant that answered."""

    assistant: Assistant
    summaries: list[tuple[str, Summary]]
    compare: bool

    def text(self) -> str:
        """What `qa eval` prints: what was counted, the table, the confidence, the reader."""
        a, summaries = self.assistant, self.summaries
        default = next(s for m, s in summaries if m == a.retrieval)
        note = "; * marks the default retrieval" if self.compare else ""
        n = a.passages
        return "\n".join(
            [
                describe(summaries[0][1]),
                format_table(summaries, mark=Settings.retrieval if self.compare else None),
                confidence_line(default, a.min_confidence),
                f"reader {a.reader.model_name}, {n} passage{'s' if n != 1 else ''} read a question{note}",
            ]
        )

    def warnings(self) -> list[str]:
        return [
            f"Warning: {m}: some cited spans do not match the document text; see --report (citations_exact)."
            for m, s in self.summaries
            if s.citations is not None and s.citations < 1.0
        ]


def run_eval(
    make_assistant: Callable[[], Assistant],
    gold: Sequence[GoldItem],
    report: OutputFile | None = None,
    compare: bool = False,
    top_k: int = 1,
    log: Callable[[str], None] | None = None,
) -> EvalRun:
    """Ask the gold questions (with every retrieval method when `compare`) and summarise them.

    `report`, opened before the work (so a bad path fails before any question), gets one record a
    question and is committed; on any failure its target is left as it was.
    """
    try:
        assistant = make_assistant()
        methods = list(RETRIEVAL_METHODS) if compare else [assistant.retrieval]
        runs = run_compare(assistant, gold, methods, top_k=top_k, progress=True, log=log if compare else None)
        summaries = [(m, summarize(records, assistant.passages)) for m, records in runs]
        if report is not None:
            write_report(report, [{"retrieval": m, **r.to_report()} for m, records in runs for r in records])
            if log is not None:
                log(f"Wrote {sum(len(r) for _, r in runs)} records to {report.shown}.")
    finally:
        if report is not None and not report.closed:
            report.discard()
    return EvalRun(assistant, summaries, compare)

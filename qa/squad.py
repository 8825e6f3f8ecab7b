"""SQuAD v2.0 data: loading it, reader-only prediction (`qa squad-predict`), and scoring predictions
(`qa squad-eval`) as the official script does.

The metrics themselves (official SQuAD v2.0 EM/F1) live in `qa.metrics`; choosing the reader's null
threshold and calibration from these predictions lives in `qa.calibration`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qa.calibration import Calibration, apply_threshold
from qa.errors import InputError
from qa.files import OutputFile, read_json
from qa.metrics import gold_answers, score_one

if TYPE_CHECKING:
    from qa.protocols import ReaderLike
    from qa.reader import Span


@dataclass(frozen=True)
class SquadExample:
    id: str
    title: str
    question: str
    context: str
    answers: list[str] = field(default_factory=list)  # empty when unanswerable
    answer_starts: list[int] = field(default_factory=list)


def load_squad(path: str | Path, titles: Iterable[str] | None = None) -> list[SquadExample]:
    path = Path(path)
    raw = read_json(
        path,
        InputError(f"SQuAD file {path} does not exist; pass a SQuAD v2.0 JSON file"),
        lambda exc: InputError(f"cannot read {path} as SQuAD JSON ({exc}); pass a SQuAD v2.0 JSON file"),
    )
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise InputError(f"{path} has no 'data' list; pass a SQuAD v2.0 JSON file")
    wanted = set(titles) if titles is not None else None
    if wanted is not None:
        missing = wanted - {a.get("title", "") for a in raw["data"]}
        if missing:
            raise InputError(f"no article titled {', '.join(sorted(missing))} in {path}; check --articles")
    examples = []
    for article in raw["data"]:
        title = article.get("title", "")
        if wanted is not None and title not in wanted:
            continue
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                impossible = qa.get("is_impossible", False)
                answers = [] if impossible else [a["text"] for a in qa.get("answers", [])]
                starts = [] if impossible else [a["answer_start"] for a in qa.get("answers", [])]
                examples.append(SquadExample(qa["id"], title, qa["question"], para["context"], answers, starts))
    return examples


# --- reader-only prediction ---------------------------------------------------------------


@dataclass(frozen=True)
class SquadPrediction:
    id: str
    text: str  # best span, even when below the threshold
    gap: float  # best span's gap (-inf when the context has no candidate)


def predict_spans(
    reader: ReaderLike,
    examples: Sequence[SquadExample],
    batch_questions: int = 64,
    progress: bool = True,
    others: int = 0,
    seed: int = 0,
) -> list[SquadPrediction]:
    """The best span of every question read against its own paragraph (no retrieval).

    Decoded by `qa.decode.decode`, as the assistant decodes, with each paragraph as a one-chunk
    document; the best span is kept even below the threshold, so thresholds can be chosen later.
    With `others`, each question is also read against that many other paragraphs of its article
    (drawn with `seed`), as the assistant reads several retrieved chunks, and the best span over
    all of them is kept.
    """
    from tqdm import tqdm

    calibration = Calibration.from_reader_settings(reader.settings)  # the gap threshold is applied later
    contexts = paragraphs_to_read(examples, others, seed)
    out: list[SquadPrediction] = []
    bar = tqdm(total=len(examples), desc="predict", unit="q", disable=not progress)
    for i in range(0, len(examples), batch_questions):
        part = range(i, min(i + batch_questions, len(examples)))
        pairs = [(n, j) for n in part for j in range(len(contexts[n]))]
        spans = reader.read([examples[n].question for n, _ in pairs], [contexts[n][j] for n, j in pairs], n_best=1)
        found: dict[int, list[tuple[int, list[Span]]]] = {n: [] for n in part}
        for (n, j), pair_spans in zip(pairs, spans, strict=True):
            found[n].append((j, pair_spans))
        out.extend(_best_span(examples[n], contexts[n], found[n], calibration) for n in part)
        bar.update(len(part))
    bar.close()
    return out


def paragraphs_to_read(examples: Sequence[SquadExample], others: int, seed: int) -> list[list[str]]:
    """Each question's own paragraph, then up to `others` other paragraphs of its article."""
    if others <= 0:
        return [[ex.context] for ex in examples]
    rng = random.Random(seed)
    by_title: dict[str, list[str]] = {}
    for ex in examples:
        seen = by_title.setdefault(ex.title, [])
        if ex.context not in seen:
            seen.append(ex.context)
    out = []
    for ex in examples:
        pool = [c for c in by_title[ex.title] if c != ex.context]
        out.append([ex.context, *rng.sample(pool, min(others, len(pool)))])
    return out


def _best_span(
    ex: SquadExample, contexts: list[str], found: list[tuple[int, list[Span]]], calibration: Calibration
) -> SquadPrediction:
    """Decode one question's spans over its paragraphs (each a one-chunk document) into its prediction."""
    from qa.decode import decode
    from qa.types import Chunk, Document, Passage

    documents: dict[str, Document] = {}
    sentences: dict[str, list[tuple[int, int]]] = {}
    candidates: list[tuple[Span, Passage]] = []
    for j, pair_spans in found:
        doc_id = ex.id if j == 0 else f"{ex.id}#{j}"
        ctx = contexts[j]
        documents[doc_id] = Document(doc_id, "", ctx, "")
        sentences[doc_id] = [(0, len(ctx))]
        passage = Passage(Chunk(doc_id, 0, 0, len(ctx), ctx), 1.0, 1)
        candidates.extend((s, passage) for s in pair_spans)
    decoded = decode(ex.question, candidates, documents, sentences, calibration)
    best = decoded.answers[0] if decoded.answers else decoded.closest
    return SquadPrediction(ex.id, best.text if best else "", decoded.best_gap)


def predict_to_file(
    make_reader: Callable[[], ReaderLike],
    examples: Sequence[SquadExample],
    out: OutputFile,
    threshold: float | None = None,
) -> tuple[float, float]:
    """`qa squad-predict`: load the reader, predict every question, write {id: answer or ""} to `out`
    (checked before the work; left as it was on any failure). Returns the null threshold applied
    (`threshold`, else the reader's own) and the questions answered per second."""
    try:
        reader = make_reader()
        reader.warm_up()
        started = time.perf_counter()
        spans = predict_spans(reader, examples)
        seconds = time.perf_counter() - started
        t = reader.settings.null_threshold if threshold is None else threshold
        write_predictions(out, apply_threshold(spans, t, reader.settings))
    finally:
        if not out.closed:
            out.discard()
    return t, len(examples) / max(seconds, 1e-9)


# --- scoring (`qa squad-eval`) -------------------------------------------------------------


def evaluate_predictions(examples: Sequence[SquadExample], preds: dict[str, str]) -> dict[str, float]:
    """EM/F1 (percent) overall, HasAns and NoAns; a missing prediction counts as ""."""
    groups: dict[str, list[tuple[float, float]]] = {"all": [], "HasAns": [], "NoAns": []}
    for ex in examples:
        em, f1 = score_one(ex.answers, preds.get(ex.id, ""))
        groups["all"].append((em, f1))
        groups["HasAns" if gold_answers(ex.answers) != [""] else "NoAns"].append((em, f1))
    out: dict[str, float] = {}
    for name, rows in groups.items():
        prefix = "" if name == "all" else f"{name}_"
        out[f"{prefix}total"] = len(rows)
        if rows:
            out[f"{prefix}exact"] = 100.0 * sum(r[0] for r in rows) / len(rows)
            out[f"{prefix}f1"] = 100.0 * sum(r[1] for r in rows) / len(rows)
    return out


def format_scores(scores: dict[str, float]) -> str:
    """The figures of `evaluate_predictions` as `qa squad-eval` prints them: one row per group."""
    lines = [f"{'':8} {'count':>6} {'EM':>7} {'F1':>7}"]
    for name, prefix in (("overall", ""), ("HasAns", "HasAns_"), ("NoAns", "NoAns_")):
        if scores.get(f"{prefix}total"):
            lines.append(
                f"{name:8} {int(scores[prefix + 'total']):>6} {scores[prefix + 'exact']:>7.2f} "
                f"{scores[prefix + 'f1']:>7.2f}"
            )
    return "\n".join(lines)


# --- files ---------------------------------------------------------------------------------


def write_predictions(out: str | Path | OutputFile, preds: dict[str, str]) -> None:
    """Write atomically; pass an `OutputFile` opened before the work to have a bad path fail first."""
    out = out if isinstance(out, OutputFile) else OutputFile(out, "--out")
    out.write_all(json.dumps(preds, ensure_ascii=False, indent=1) + "\n")


def read_predictions(path: str | Path) -> dict[str, str]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read predictions {path} ({exc}); pass the JSON written by qa squad-predict") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{path} is not a {{question_id: answer}} object; pass the JSON written by qa squad-predict")
    return {str(k): str(v) for k, v in raw.items()}


def write_articles(examples: Sequence[SquadExample], folder: Path) -> list[tuple[str, str, list[str]]]:
    """The articles of SQuAD examples as plain-text files in `folder` (paragraphs separated by a
    blank line, one file per title), so the assistant can be run over them as users run it.

    Returns (id, question, answers) per example: the gold for asking them through the assistant.
    """
    paragraphs: dict[str, list[str]] = {}
    for ex in examples:
        seen = paragraphs.setdefault(ex.title, [])
        if ex.context not in seen:
            seen.append(ex.context)
    folder.mkdir(parents=True, exist_ok=True)
    for title, texts in paragraphs.items():
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in title) or "article"
        (folder / f"{name}.txt").write_text("\n\n".join(t.strip() for t in texts) + "\n", encoding="utf-8")
    return [(ex.id, ex.question, list(ex.answers)) for ex in examples]

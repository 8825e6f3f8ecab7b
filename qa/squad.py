"""SQuAD v2.0 data, reader-only prediction (`qa squad-predict`), threshold and calibration choice.

The metrics themselves (official SQuAD v2.0 EM/F1) live in `qa.metrics`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qa.errors import InputError
from qa.files import OutputFile
from qa.metrics import score_one

if TYPE_CHECKING:
    from qa.reader import Reader


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
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"SQuAD file {path} does not exist; pass a SQuAD v2.0 JSON file") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read {path} as SQuAD JSON ({exc}); pass a SQuAD v2.0 JSON file") from exc
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


def squad_titles(path: str | Path) -> list[str]:
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return [a.get("title", "") for a in raw["data"]]


# --- reader-only prediction ---------------------------------------------------------------


@dataclass(frozen=True)
class SquadPrediction:
    id: str
    text: str  # best span, even when below the threshold
    gap: float  # best span's gap (-inf when the context has no candidate)


def predict_spans(
    reader: Reader, examples: Sequence[SquadExample], batch_questions: int = 64, progress: bool = True
) -> list[SquadPrediction]:
    """The best span of every question read against its own paragraph (no retrieval).

    Decoded by `qa.decode.decode`, as the assistant decodes, with each paragraph as a one-chunk
    document; the best span is kept even below the threshold, so thresholds can be chosen later.
    """
    from tqdm import tqdm

    from qa.calibration import Calibration
    from qa.decode import decode
    from qa.types import Chunk, Document, Passage

    calibration = Calibration.from_reader_settings(reader.settings)  # the gap threshold is applied later
    out: list[SquadPrediction] = []
    bar = tqdm(total=len(examples), desc="predict", unit="q", disable=not progress)
    for i in range(0, len(examples), batch_questions):
        part = examples[i : i + batch_questions]
        spans = reader.read([ex.question for ex in part], [ex.context for ex in part], n_best=1)
        for ex, found in zip(part, spans, strict=True):
            doc = Document(ex.id, "", ex.context, "")
            passage = Passage(Chunk(ex.id, 0, 0, len(ex.context), ex.context), 1.0, 1)
            sentences = {ex.id: [(0, len(ex.context))]}
            decoded = decode(ex.question, [(s, passage) for s in found], {ex.id: doc}, sentences, calibration)
            best = decoded.answers[0] if decoded.answers else decoded.closest
            out.append(SquadPrediction(ex.id, best.text if best else "", decoded.best_gap))
        bar.update(len(part))
    bar.close()
    return out


def apply_threshold(preds: Sequence[SquadPrediction], threshold: float) -> dict[str, str]:
    from qa.reader import ReaderSettings

    rule = ReaderSettings(null_threshold=threshold)
    return {p.id: p.text if rule.confident(p.gap) else "" for p in preds}


def best_threshold(examples: Sequence[SquadExample], preds: Sequence[SquadPrediction]) -> tuple[float, float]:
    """The null threshold that maximises overall F1, and that F1 (percent).

    Answer when gap > threshold: sweeping the sorted gaps, each step flips one question
    from "no answer" to its span, so every candidate is scored in one pass.
    """
    by_id = {ex.id: ex for ex in examples}
    rows = []
    for p in preds:
        golds = by_id[p.id].answers
        rows.append((p.gap, score_one(golds, p.text)[1], score_one(golds, "")[1]))
    rows.sort(key=lambda r: -r[0])
    total = sum(r[2] for r in rows)  # everything abstains
    best_total, best_t = total, rows[0][0] + 1.0 if rows else 0.0
    for j, (gap, f1_span, f1_null) in enumerate(rows):
        total += f1_span - f1_null
        next_gap = rows[j + 1][0] if j + 1 < len(rows) else gap - 2.0
        if total > best_total and math.isfinite(gap):
            best_total = total
            best_t = (gap + next_gap) / 2 if math.isfinite(next_gap) else gap - 1.0
    return best_t, 100.0 * best_total / max(len(rows), 1)


def fit_calibration(examples: Sequence[SquadExample], preds: Sequence[SquadPrediction]) -> tuple[float, float]:
    """Platt scaling: P(span is right) = sigmoid(a * gap + b), fitted by Newton's method.

    "Right" is the span's F1 against the gold (0 for an unanswerable question), so the score
    reads as how likely the shown span is the answer.
    """
    import numpy as np

    by_id = {ex.id: ex for ex in examples}
    x = np.array([p.gap for p in preds if math.isfinite(p.gap)], dtype=np.float64)
    y = np.array(
        [
            score_one(by_id[p.id].answers, p.text)[1] if by_id[p.id].answers else 0.0
            for p in preds
            if math.isfinite(p.gap)
        ]
    )
    if len(x) < 2:
        return 1.0, 0.0
    w = np.zeros(2)
    design = np.stack([x, np.ones_like(x)], axis=1)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        grad = design.T @ (p - y)
        hess = (design * (p * (1 - p))[:, None]).T @ design + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), float(w[1])


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

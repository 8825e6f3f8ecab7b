"""How sure the assistant is, and when it says "the article does not say".

The reader's own score (its span logit minus its no-answer logit, the "gap") does not mean the
same thing in every domain: on news text its no-answer logit runs high, so a threshold on the
gap fitted on Wikipedia paragraphs throws good answers away. So, as Kamath, Jia & Liang (2020,
"Selective Question Answering under Domain Shift") do, a small calibrator is fitted on how the
whole assistant behaves on held-out questions (retrieval, the passages it reads, decoding):
a logistic regression over features that travel across domains (the gap and its two halves,
the margin over the next answer, the answer's and passage's length, the passage's retrieval
rank, the question's length and wh-word). Its output is the probability that the
answer is **right**, meaning its SQuAD F1 against a gold answer is at least 0.5 (any answer to
an unanswerable question is wrong). The assistant answers when that probability reaches
`min_confidence`, chosen on the same data to maximise F1 (the user can override it).

Asking the questions through the assistant is `qa.calibrate`'s job; this module needs no model.
A calibration is a small JSON file. Where the assistant finds one, first match wins:
`--calibration FILE`, `calibration.json` beside the index (written by `qa calibrate`), and
`calibration.json` beside the reader (shipped with it). A reader without one falls back to
the gap threshold and Platt scaling in its `qa_reader.json`, expressed as the same kind of
calibration (one feature, the gap), so there is one rule for answering either way.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qa.errors import InputError, ModelError
from qa.files import read_json
from qa.metrics import score_one

if TYPE_CHECKING:
    from qa.files import OutputFile
    from qa.types import Passage

CALIBRATION_FILE = "calibration.json"
FORMAT_VERSION = 1
RIGHT_F1 = 0.5
RIGHT = f"SQuAD F1 >= {RIGHT_F1} against a gold answer; any answer to an unanswerable question is wrong"
MEANING = (
    "the estimated probability that the answer is right (SQuAD F1 of at least 0.5 against what a careful "
    "reader would answer)"
)
WH_WORDS = ("who", "what", "when", "where", "which", "why", "how")
MARGIN_CAP = 10.0  # a lone candidate has no runner-up; its margin is "very large", not infinite
FEATURES = (
    "gap",
    "logit",
    "null",
    "margin",
    "answer_chars",
    "passage_chars",
    "rank",
    "question_words",
    *(f"wh_{w}" for w in WH_WORDS),
)
_WORD = re.compile(r"\w+")


# What this module reads of the reader's output and settings (`qa.reader.Span` and
# `qa.reader.ReaderSettings`): numbers only, so calibration needs no model code.
class SpanScores(Protocol):
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def gap(self) -> float: ...
    @property
    def logit(self) -> float: ...
    @property
    def null(self) -> float: ...


class ReaderRule(Protocol):
    """The reader's own rule, stored in its qa_reader.json: a null threshold on the gap and Platt scaling."""

    @property
    def null_threshold(self) -> float: ...
    @property
    def calib_a(self) -> float: ...
    @property
    def calib_b(self) -> float: ...
    def confident(self, gap: float, threshold: float | None = None) -> bool: ...


def candidate_features(question: str, span: SpanScores, passage: Passage, margin: float) -> dict[str, float]:
    """What the calibrator knows about one candidate answer (see FEATURES)."""
    words = [w.lower() for w in _WORD.findall(question)]
    wh = next((w for w in words if w in WH_WORDS), None)
    return {
        "gap": span.gap,
        "logit": span.logit,
        "null": span.null,
        "margin": max(-MARGIN_CAP, min(MARGIN_CAP, margin)),
        "answer_chars": math.log1p(max(span.end - span.start, 0)),
        "passage_chars": math.log1p(len(passage.chunk.text)),
        # The rank, not the score: scores of dense, BM25 and fused retrieval live on different
        # scales, and a calibration must hold whichever retrieval the user picks.
        "rank": float(passage.rank),
        "question_words": math.log1p(len(words)),
        **{f"wh_{w}": float(w == wh) for w in WH_WORDS},
    }


# Words that carry no content of their own: a question made only of these (and of one-letter
# tokens: "x", "?") asks nothing the article could answer.
_FUNCTION_WORD_LIST = (
    "a about above after again against all am an and any are as at be because been before being below "
    "between both but by can could did do does doing done down during each "
    "either else ever every few for from further get gets got had has have "
    "having he her here hers herself him himself his how i if in into "
    "is it its itself just let me might more most much must my myself "
    "no nor not now of off on once only or other our ours ourselves "
    "out over own please same shall she should so some such tell than that "
    "the their theirs them themselves then there these they this those through to too "
    "under until up upon us very was we were what whatever when where whether "
    "which while who whom whose why will with within without would yes yet you "
    "your yours yourself yourselves"
)
_FUNCTION_WORDS = frozenset(_FUNCTION_WORD_LIST.split())
KEY_CHARS = 5  # words match on their first five letters: "strikes" finds "strike", "Ukrainian" "Ukraine"
_SUFFIXES = ("ing", "ed", "es", "s", "ly")  # stripped first, so "cited" finds "citing"


def _key(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)][:KEY_CHARS]
    return word[:KEY_CHARS]


def content_words(question: str) -> list[str]:
    """The question's words that name something: not function words, not single letters."""
    words = (w.lower() for w in _WORD.findall(question))
    return [w for w in words if w not in _FUNCTION_WORDS and (len(w) > 1 or w.isdigit())]


def grounded(question: str, texts: Sequence[str]) -> bool:
    """Whether any content word of the question occurs in `texts` (compared on their first KEY_CHARS
    letters once a common suffix is stripped: "cited" finds "citing", not "met" "meet").

    A question with none ("x", "asdf", "what is it?") cannot be answered from those passages,
    whatever the reader's logits say (it answered "x" at 0.54): the assistant abstains on it, with
    no guess, before the calibration is consulted.
    """
    keys = {_key(w) for w in content_words(question)}
    if not keys:
        return False
    return any(keys & {_key(w) for w in _WORD.findall(text.lower())} for text in texts)


def sigmoid(z: float) -> float:
    if z < -60:
        return 0.0
    if z > 60:
        return 1.0
    return 1.0 / (1.0 + math.exp(-z))


@dataclass(frozen=True)
class Calibration:
    """P(answer is right) = sigmoid(bias + sum(weight * (feature - mean) / scale)); answer when >= min_confidence."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    min_confidence: float
    reader: dict[str, Any] = field(default_factory=dict)  # which reader it was fitted for
    fitted: dict[str, Any] = field(default_factory=dict)  # data, counts, mode, figures: provenance
    # (share of unanswerable questions, the F1-best min confidence for it): the curve that
    # `--expect-unanswerable SHARE` reads; empty in calibrations written before it was stored.
    cuts: tuple[tuple[float, float], ...] = ()
    source: str = ""  # where it was loaded from (not saved)

    def logit(self, values: Mapping[str, float]) -> float:
        z = self.bias
        for name, mean, scale, weight in zip(self.features, self.mean, self.scale, self.weights, strict=True):
            z += weight * (float(values.get(name, 0.0)) - mean) / scale
        return z

    def probability(self, values: Mapping[str, float]) -> float:
        return sigmoid(self.logit(values))

    def confident(self, probability: float, min_confidence: float | None = None) -> bool:
        """The abstention rule, in one place."""
        return probability >= (self.min_confidence if min_confidence is None else min_confidence)

    def cut_for(self, share: float) -> float:
        """The min confidence for questions of which `share` (0..1) are unanswerable, read from the
        stored curve (linear between its points, its ends beyond them)."""
        if not self.cuts:
            raise InputError(
                f"calibration {self.source or '(in use)'} stores no cuts by share of unanswerable questions; "
                "refit it with qa calibrate, or give --min-confidence instead"
            )
        points = sorted(self.cuts)
        if share <= points[0][0]:
            return points[0][1]
        for (s0, c0), (s1, c1) in itertools.pairwise(points):
            if share <= s1:
                return c0 + (c1 - c0) * (share - s0) / (s1 - s0)
        return points[-1][1]

    @classmethod
    def from_reader_settings(cls, settings: ReaderRule) -> Calibration:
        """The reader's own gap threshold and Platt scaling (qa_reader.json) as a one-feature calibration."""
        a, b, t = settings.calib_a, settings.calib_b, settings.null_threshold
        return cls(
            features=("gap",),
            mean=(0.0,),
            scale=(1.0,),
            weights=(a,),
            bias=b,
            # gap > t  <=>  sigmoid(a * gap + b) > sigmoid(a * t + b) for a > 0; the next float up keeps ">".
            min_confidence=math.nextafter(sigmoid(a * t + b), 2.0) if a > 0 else 0.5,
            fitted={"mode": "the reader's qa_reader.json: null threshold and Platt scaling of the gap"},
            source="qa_reader.json",
        )

    def recalibrated(self, a: float, b: float, min_confidence: float, fitted: dict[str, Any]) -> Calibration:
        """sigmoid(a * z + b) over this calibration's logit z: a two-number fit for a few questions."""
        weights = tuple(a * w for w in self.weights)
        return replace(
            self, weights=weights, bias=a * self.bias + b, min_confidence=min_confidence, fitted=fitted, source=""
        )

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        raw.pop("source")
        raw["cuts"] = [list(pair) for pair in self.cuts]
        return {"format_version": FORMAT_VERSION, "right": RIGHT, **raw}

    def save(self, out: OutputFile) -> None:
        """Write to an output checked before the work (`qa.files.OutputFile`) and commit it."""
        out.write_all(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        fix = "run qa calibrate again, or delete it to use the reader's own"
        raw = read_json(
            path,
            InputError(f"calibration {path} does not exist; pass a file written by qa calibrate"),
            lambda exc: ModelError(f"calibration {path} cannot be read ({exc}); {fix}"),
        )
        problem = _problem(raw)
        if problem is not None:
            raise ModelError(f"calibration {path} is damaged ({problem}); {fix}")
        return cls(
            features=tuple(raw["features"]),
            mean=tuple(float(v) for v in raw["mean"]),
            scale=tuple(float(v) for v in raw["scale"]),
            weights=tuple(float(v) for v in raw["weights"]),
            bias=float(raw["bias"]),
            min_confidence=float(raw["min_confidence"]),
            reader=dict(raw.get("reader") or {}),
            cuts=tuple((float(a), float(b)) for a, b in raw.get("cuts") or ()),
            fitted=dict(raw.get("fitted") or {}),
            source=str(path),
        )


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _problem(raw: object) -> str | None:
    if not isinstance(raw, dict):
        return "not a JSON object"
    if raw.get("format_version") != FORMAT_VERSION:
        return f"format_version should be {FORMAT_VERSION}, got {raw.get('format_version')!r}"
    names = raw.get("features")
    if not isinstance(names, list) or not names or not all(n in FEATURES for n in names):
        return f"'features' should be a list of known feature names ({', '.join(FEATURES)})"
    for key in ("mean", "scale", "weights"):
        values = raw.get(key)
        if not isinstance(values, list) or len(values) != len(names) or not all(_number(v) for v in values):
            return f"'{key}' should be {len(names)} finite numbers, one per feature"
    if any(v <= 0 for v in raw["scale"]):
        return "'scale' should hold positive numbers"
    if not _number(raw.get("bias")):
        return "'bias' should be a finite number"
    if not _number(raw.get("min_confidence")) or not 0 <= raw["min_confidence"] <= 1:
        return "'min_confidence' should be a number from 0 to 1"
    for key in ("reader", "fitted"):
        if key in raw and not isinstance(raw[key], dict):
            return f"'{key}' should be a JSON object"
    cuts = raw.get("cuts", [])
    if not isinstance(cuts, list) or not all(
        isinstance(c, list) and len(c) == 2 and all(_number(v) and 0 <= v <= 1 for v in c) for c in cuts
    ):
        return "'cuts' should be a list of [share of unanswerable questions, min confidence] pairs, each 0..1"
    if len({c[0] for c in cuts}) != len(cuts):
        return "'cuts' should give each share of unanswerable questions once"
    return None


def reader_fingerprint(model: str) -> str:
    """Which reader a calibration belongs to: the weights' names, sizes, first and last MB (cheap, and
    a retrained reader changes it); a hub id is its own fingerprint.

    The last MB counts because readers merged from LoRA adapters on one base share their first MB:
    the file's header and the frozen word embeddings are the same; the trained layers come later."""
    folder = Path(model)
    if not folder.is_dir():
        return f"id:{model}"
    digest = hashlib.sha256()
    for path in sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin"), folder / "config.json"]):
        if path.is_file():
            size = path.stat().st_size
            digest.update(f"{path.name}:{size}:".encode())
            with path.open("rb") as f:
                digest.update(f.read(1 << 20))
                if size > 2 << 20:
                    f.seek(size - (1 << 20))
                    digest.update(f.read(1 << 20))
    return "sha256:" + digest.hexdigest()[:16]


def model_label(model: str) -> str:
    """A model as a calibration records it: a shipped reader by its name ("v3", also as merged in the
    cache), a local folder by its name, a hub id as it is; never the absolute path of the machine that
    fitted it (the fingerprint, not the name, says which reader a calibration belongs to)."""
    from qa.loading import SHIPPED_READERS

    path = Path(model)
    if not path.is_absolute() and not path.exists():
        return model  # a hub id
    path = path.resolve()
    for name, folder in SHIPPED_READERS.items():
        merged = path.parent.name == "merged" and path.name.rsplit("-", 1)[0] == folder.name
        if path == folder or merged:
            return name
    return path.name


def find_calibration(explicit: Path | None, index_dir: Path | None, reader_dir: str) -> Path | None:
    """The calibration file in effect (see the module docstring), or None for the reader's own rule.

    `index_dir` is None for articles held in memory (`Assistant.from_text`): they have no index folder.
    """
    if explicit is not None:
        return explicit
    for folder in (index_dir, Path(reader_dir)):
        if folder is None:
            continue
        path = folder / CALIBRATION_FILE
        if path.is_file():
            return path
    return None


# --- the reader's own rule: a null threshold and Platt scaling of the gap ---------------------
# `qa train-reader` chooses both on its validation articles, each question read against its own
# paragraph (`qa.squad.predict_spans`), and stores them in qa_reader.json; `from_reader_settings`
# turns them into a calibration.


class GoldQuestion(Protocol):
    """What the choice needs of a gold question (a `qa.squad.SquadExample`)."""

    @property
    def id(self) -> str: ...
    @property
    def answers(self) -> list[str]: ...  # empty when unanswerable


class SpanPrediction(Protocol):
    """What the choice needs of a prediction (a `qa.squad.SquadPrediction`)."""

    @property
    def id(self) -> str: ...
    @property
    def text(self) -> str: ...  # the best span, even below the threshold
    @property
    def gap(self) -> float: ...  # its gap (-inf when there was no candidate)


def apply_threshold(preds: Sequence[SpanPrediction], threshold: float, rule: ReaderRule) -> dict[str, str]:
    """{id: the span, or "" where the reader's rule abstains at this null threshold}."""
    return {p.id: p.text if rule.confident(p.gap, threshold) else "" for p in preds}


def best_threshold(examples: Sequence[GoldQuestion], preds: Sequence[SpanPrediction]) -> tuple[float, float]:
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


def fit_calibration(examples: Sequence[GoldQuestion], preds: Sequence[SpanPrediction]) -> tuple[float, float]:
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


# --- what the assistant did, question by question ----------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One held-out question as the assistant answered it: its best candidate and how good it was."""

    domain: str
    question: str
    answerable: bool
    features: dict[str, float] | None  # None: no candidate, or not `grounded` (it always abstains)
    f1: float  # the best candidate's F1 against the gold (0 when unanswerable or no candidate)
    grounded: bool = True  # False: no content word of the question was in the passages read

    @property
    def right(self) -> bool:
        return self.answerable and self.features is not None and self.f1 >= RIGHT_F1


# --- scoring a calibration --------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """How a calibration's decisions and probabilities fare on observations (shares in 0..1)."""

    questions: int
    answered: int
    f1: float
    abstain_precision: float | None
    abstain_recall: float | None
    ece: float | None
    coverage_80: float
    coverage_90: float

    def line(self) -> str:
        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{100 * x:.1f}%"

        return (
            f"F1 {100 * self.f1:.1f}, abstention precision {pct(self.abstain_precision)}, "
            f"recall {pct(self.abstain_recall)}, ECE {'n/a' if self.ece is None else f'{self.ece:.3f}'}, "
            f"answered {self.answered}/{self.questions}, coverage at 80%/90% accuracy "
            f"{pct(self.coverage_80)}/{pct(self.coverage_90)}"
        )


def expected_calibration_error(confidences: Sequence[float], right: Sequence[bool], bins: int = 10) -> float | None:
    """10 equal-width bins over answered questions: mean |confidence - share right|, weighted by bin size."""
    if not confidences:
        return None
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [i for i, c in enumerate(confidences) if lo <= c < hi or (b == bins - 1 and c == 1.0)]
        if inside:
            conf = sum(confidences[i] for i in inside) / len(inside)
            acc = sum(right[i] for i in inside) / len(inside)
            total += len(inside) * abs(conf - acc)
    return total / len(confidences)


def coverage_at(confidences: Sequence[float | None], right: Sequence[bool], accuracy: float) -> float:
    """The largest share of all questions that can be answered, most confident first, keeping the
    answered ones at least `accuracy` right (questions with no candidate are never answered)."""
    ranked = sorted((c, r) for c, r in zip(confidences, right, strict=True) if c is not None)
    ranked.reverse()
    best, hits = 0, 0
    for n, (_, r) in enumerate(ranked, 1):
        hits += r
        if hits / n >= accuracy:
            best = n
    return best / len(confidences) if confidences else 0.0


def score(calibration: Calibration, observations: Sequence[Observation], min_confidence: float | None = None) -> Scores:
    probs = [None if o.features is None else calibration.probability(o.features) for o in observations]
    return score_probabilities(
        probs, observations, calibration.min_confidence if min_confidence is None else min_confidence
    )


def score_probabilities(
    probs: Sequence[float | None], observations: Sequence[Observation], min_confidence: float | Sequence[float]
) -> Scores:
    """`min_confidence` is one threshold, or one per question (cross-validation: its fold's)."""
    cuts = [min_confidence] * len(probs) if isinstance(min_confidence, (int, float)) else list(min_confidence)
    answered = [p is not None and p >= t for p, t in zip(probs, cuts, strict=True)]
    f1 = [
        (o.f1 if o.answerable else 0.0) if a else (0.0 if o.answerable else 1.0)
        for o, a in zip(observations, answered, strict=True)
    ]
    abstained = [o for o, a in zip(observations, answered, strict=True) if not a]
    unanswerable = [a for o, a in zip(observations, answered, strict=True) if not o.answerable]
    shown = [(p, o.right) for p, o, a in zip(probs, observations, answered, strict=True) if a and p is not None]
    rights = [o.right for o in observations]
    n = len(observations)
    return Scores(
        questions=n,
        answered=sum(answered),
        f1=sum(f1) / n if n else 0.0,
        abstain_precision=sum(not o.answerable for o in abstained) / len(abstained) if abstained else None,
        abstain_recall=sum(not a for a in unanswerable) / len(unanswerable) if unanswerable else None,
        ece=expected_calibration_error([p for p, _ in shown], [r for _, r in shown]),
        coverage_80=coverage_at(probs, rights, 0.8),
        coverage_90=coverage_at(probs, rights, 0.9),
    )


# --- fitting ----------------------------------------------------------------------------------


def domain_weights(observations: Sequence[Observation]) -> list[float]:
    """Each domain weighs the same in total, so 1,500 Wikipedia questions do not drown 90 news ones."""
    counts: dict[str, int] = {}
    for o in observations:
        counts[o.domain] = counts.get(o.domain, 0) + 1
    n, k = len(observations), len(counts)
    return [n / (k * counts[o.domain]) for o in observations]


# The shares of unanswerable questions the stored curve covers (SQuAD 2.0's is 38%).
# The shipped calibrations are cut for one question in five that the article does not answer:
# people mostly ask what an article says (see docs/calibration.md).
DEFAULT_EXPECT_UNANSWERABLE = 0.2
CURVE_SHARES = tuple(round(0.05 * i, 2) for i in range(13))


def share_weights(observations: Sequence[Observation], share: float | None) -> list[float]:
    """`domain_weights`, with each domain's unanswerable questions reweighted to `share` of its
    weight (prior shift: the same questions, standing for a mix where that share is unanswerable).
    None keeps the mix as asked; a domain with questions of one kind only keeps its weights."""
    base = domain_weights(observations)
    if share is None:
        return base
    kinds: dict[str, list[int]] = {}
    for o in observations:
        kinds.setdefault(o.domain, [0, 0])[o.answerable] += 1
    out = []
    for o, w in zip(observations, base, strict=True):
        unanswerable, answerable = kinds[o.domain]
        if not unanswerable or not answerable:
            out.append(w)
            continue
        n = unanswerable + answerable
        out.append(w * n * (1 - share) / answerable if o.answerable else w * n * share / unanswerable)
    return out


def cut_curve(
    probs: Sequence[float | None], observations: Sequence[Observation], shares: Sequence[float] = CURVE_SHARES
) -> tuple[tuple[float, float], ...]:
    """The F1-best min confidence at each share of unanswerable questions (see `share_weights`)."""
    return tuple((s, best_min_confidence(probs, observations, share_weights(observations, s))) for s in shares)


def weighted_f1(
    probs: Sequence[float | None],
    observations: Sequence[Observation],
    cut: float | Sequence[float],
    weights: Sequence[float],
) -> float:
    """F1 (0..1) of answering at `cut` (one, or one per question), each question counted with its weight."""
    cuts = [cut] * len(probs) if isinstance(cut, (int, float)) else list(cut)
    total = weight = 0.0
    for p, o, w, c in zip(probs, observations, weights, cuts, strict=True):
        answered = p is not None and p >= c
        f1 = (o.f1 if answered else 0.0) if o.answerable else float(not answered)
        total, weight = total + w * f1, weight + w
    return total / weight if weight else 0.0


def _logistic(x: Any, y: Any, w: Any, l2: float) -> tuple[Any, float]:
    """Weighted L2-regularised logistic regression by Newton's method (IRLS); x is standardised."""
    import numpy as np

    design = np.hstack([x, np.ones((len(x), 1))])
    beta = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0  # the intercept is not shrunk
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -60, 60)))
        grad = design.T @ (w * (p - y)) + penalty * beta
        hess = (design * (w * p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-9:
            break
    return beta[:-1], float(beta[-1])


def best_min_confidence(
    probs: Sequence[float | None], observations: Sequence[Observation], weights: Sequence[float]
) -> float:
    """The threshold on the probability that maximises (weighted) F1: answer or say the article does not say."""
    rows = sorted(
        ((p, o, w) for p, o, w in zip(probs, observations, weights, strict=True) if p is not None),
        key=lambda r: -r[0],
    )
    gain = [w * ((o.f1 if o.answerable else 0.0) - (0.0 if o.answerable else 1.0)) for _, o, w in rows]
    best_total, best_t, total = 0.0, 1.0, 0.0
    for j, ((p, _, _), g) in enumerate(zip(rows, gain, strict=True)):
        total += g
        nxt = rows[j + 1][0] if j + 1 < len(rows) else 0.0
        if total > best_total + 1e-12 and p > nxt:
            best_total, best_t = total, (p + nxt) / 2
    return float(best_t)


def with_cut(calibration: Calibration, observations: Sequence[Observation], share: float | None) -> Calibration:
    """The calibration with its curve of cuts, and the min confidence that maximises F1 where `share`
    of the questions are unanswerable (None: the observations' own mix, domains weighted equally)."""
    probs = [None if o.features is None else calibration.probability(o.features) for o in observations]
    cut = best_min_confidence(probs, observations, share_weights(observations, share))
    return replace(calibration, min_confidence=cut, cuts=cut_curve(probs, observations))


def fit(
    observations: Sequence[Observation],
    features: Sequence[str] = FEATURES,
    l2: float = 1.0,
    fitted: dict[str, Any] | None = None,
    reader: dict[str, Any] | None = None,
    expect_unanswerable: float | None = None,
) -> Calibration:
    """A calibrator over `features`, fitted on observations with candidates, domains weighted equally;
    its cut chosen for `expect_unanswerable` (see `with_cut`)."""
    import numpy as np

    usable = [o for o in observations if o.features is not None]
    if not usable:
        raise InputError("no question got a candidate answer; nothing to calibrate on")
    x = np.array([[o.features[f] for f in features] for o in usable], dtype=np.float64)  # type: ignore[index]
    y = np.array([float(o.right) for o in usable])
    # Weighted as the mix expected: the probabilities, not only the cut, are for that share of unanswerable questions.
    w = np.array(share_weights(usable, expect_unanswerable))
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    coef, bias = _logistic((x - mean) / scale, y, w, l2)
    cal = Calibration(
        features=tuple(features),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        weights=tuple(float(v) for v in coef),
        bias=bias,
        min_confidence=0.5,
        reader=reader or {},
        fitted=fitted or {},
    )
    return with_cut(cal, observations, expect_unanswerable)


def recalibrate(
    base: Calibration,
    observations: Sequence[Observation],
    fitted: dict[str, Any],
    expect_unanswerable: float | None = None,
) -> Calibration:
    """Two numbers over an existing calibration's logit (Platt scaling), and the threshold: what a
    few dozen questions can support without overfitting."""
    import numpy as np

    usable = [o for o in observations if o.features is not None]
    if not usable:
        raise InputError("no question got a candidate answer; nothing to calibrate on")
    z = np.array([[base.logit(o.features)] for o in usable])  # type: ignore[arg-type]
    y = np.array([float(o.right) for o in usable])
    w = np.ones(len(usable)) if expect_unanswerable is None else np.array(share_weights(usable, expect_unanswerable))
    (a,), b = _logistic(z, y, w, l2=0.1)
    if a <= 0:  # the data disagree with the base ordering; too few to learn a new one, keep its slope
        rate = float((w * y).sum() / w.sum())
        a, b = 1.0, float(np.log((rate + 1e-3) / (1 - rate + 1e-3)))
    return with_cut(base.recalibrated(float(a), float(b), 0.5, fitted), observations, expect_unanswerable)


def cross_validated(
    observations: Sequence[Observation], fitter: Any, folds: int = 5, seed: int = 0
) -> tuple[list[float | None], list[float]]:
    """Each observation's probability and threshold from a calibration fitted without its fold."""
    import random

    order = list(range(len(observations)))
    random.Random(seed).shuffle(order)
    probs: list[float | None] = [None] * len(observations)
    thresholds: list[float] = [0.5] * len(observations)
    for k in range(folds):
        held = set(order[k::folds])
        cal = fitter([o for i, o in enumerate(observations) if i not in held])
        for i in held:
            o = observations[i]
            probs[i] = None if o.features is None else cal.probability(o.features)
            thresholds[i] = cal.min_confidence
    return probs, thresholds


def score_cross_validated(observations: Sequence[Observation], fitter: Any, folds: int = 5) -> Scores:
    """Scores of held-out folds: each question decided by a calibration that never saw it."""
    probs, thresholds = cross_validated(observations, fitter, folds)
    return score_probabilities(probs, observations, thresholds)


def provenance(**items: Any) -> dict[str, Any]:
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **items}


# --- a calibration run: observe in the deployed mode, fit, compare --------------------------------


@dataclass
class Report:
    """What `qa calibrate` prints: figures before and after, per domain, and across domains."""

    calibration: Calibration
    mode: str
    before: Scores
    after: Scores  # cross-validated: each question decided by a fit that never saw it
    by_domain: dict[str, tuple[Scores, Scores]] = field(default_factory=dict)
    transfer: dict[str, Scores] = field(default_factory=dict)  # fitted without the domain, scored on it
    # With an expected share of unanswerable questions: F1 (0..1) on the questions reweighted to
    # it (`share_weights`), before and after (cross-validated).
    reweighted: dict[str, float] = field(default_factory=dict)


MIN_QUESTIONS = 20
FULL_FIT_QUESTIONS = 300  # below this, only two numbers are refitted over the current calibration
FIT_MODES = ("auto", "full", "recalibrate")  # auto: full from FULL_FIT_QUESTIONS usable questions up


def check_gold_counts(gold: Sequence[Any]) -> None:
    """Enough questions, of both kinds, before any work is spent; else one line."""
    answerable = sum(g.answerable for g in gold)
    if len(gold) < MIN_QUESTIONS:
        raise InputError(
            f"only {len(gold)} questions; calibrating needs at least {MIN_QUESTIONS}, "
            "some the articles answer and some they do not"
        )
    if answerable == len(gold):
        raise InputError(
            'no unanswerable questions (with "answers": []); add some the articles do not answer, '
            "or the calibration cannot learn when to abstain"
        )
    if answerable == 0:
        raise InputError("no answerable questions; add questions the articles answer, with their answers")


def calibrate(
    current: Calibration,
    observations: Sequence[Observation],
    mode: str = "auto",
    provenance_: dict[str, Any] | None = None,
    reader: dict[str, Any] | None = None,
    expect_unanswerable: float | None = None,
) -> Report:
    """Fit a calibration on observations (see `fit` and `recalibrate`) and measure it against `current`;
    its cut is chosen for `expect_unanswerable` (None: the mix of the questions asked)."""
    usable = sum(o.features is not None for o in observations)
    if mode == "auto":
        mode = "full" if usable >= FULL_FIT_QUESTIONS else "recalibrate"
    asked = sum(not o.answerable for o in observations) / max(len(observations), 1)
    info = dict(
        provenance_ or {},
        fit=mode,
        expect_unanswerable=expect_unanswerable,
        unanswerable_asked=round(asked, 4),
    )

    def fitter(obs: Sequence[Observation]) -> Calibration:
        if mode == "full":
            return fit(obs, fitted=info, reader=reader, expect_unanswerable=expect_unanswerable)
        return recalibrate(current, obs, info, expect_unanswerable)

    calibration = fitter(observations)
    if reader:
        calibration = replace(calibration, reader=reader)
    domains = sorted({o.domain for o in observations})
    probs, cuts = cross_validated(observations, fitter)
    report = Report(
        calibration=calibration,
        mode=mode,
        before=score(current, observations),
        after=score_probabilities(probs, observations, cuts),
    )
    if expect_unanswerable is not None:
        weights = share_weights(observations, expect_unanswerable)
        now = [None if o.features is None else current.probability(o.features) for o in observations]
        report.reweighted = {
            "share": expect_unanswerable,
            "before": weighted_f1(now, observations, current.min_confidence, weights),
            "after": weighted_f1(probs, observations, cuts, weights),
        }
    for d in domains:
        part = [o for o in observations if o.domain == d]
        report.by_domain[d] = (score(current, part), score_cross_validated(part, fitter))
        rest = [o for o in observations if o.domain != d]
        if rest and len(domains) > 1:
            report.transfer[d] = score(fitter(rest), part)
    figures = {"after_cross_validated": asdict(report.after), "before": asdict(report.before)}
    figures["by_domain"] = {d: {"before": asdict(b), "after": asdict(a)} for d, (b, a) in report.by_domain.items()}
    figures["leave_one_domain_out"] = {d: asdict(s) for d, s in report.transfer.items()}
    if report.reweighted:
        figures["reweighted_f1"] = report.reweighted
    calibration.fitted["figures"] = figures
    return report

"""Quality metrics: the official SQuAD v2.0 EM/F1 and the percentile used for latencies.

The metric functions follow the official SQuAD v2.0 evaluation script: answers are
normalised (lower case, no punctuation, no articles, single spaces), EM and F1 take the
maximum over the gold answers, and "" stands for "no answer". `qa squad-eval`, `qa eval`,
training's validation and the benchmarks all score through these functions. This module imports
nothing from the package: everything else builds on it.
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def compute_f1(gold: str, pred: str) -> float:
    gold_toks, pred_toks = get_tokens(gold), get_tokens(pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Sequence[str]) -> list[str]:
    """Gold answers as the official script sees them: no answer is the one gold ""."""
    real = [a for a in answers if normalize_answer(a)]
    return real or [""]


def score_one(answers: Sequence[str], pred: str) -> tuple[float, float]:
    golds = gold_answers(answers)
    return max(compute_exact(g, pred) for g in golds), max(compute_f1(g, pred) for g in golds)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), q in 0..100; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

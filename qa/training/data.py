"""The questions a run learns from: SQuAD files split by article, and the pairs it is trained on."""

from __future__ import annotations

import collections
import random
from collections.abc import Sequence
from dataclasses import dataclass

from qa.errors import InputError
from qa.squad import SquadExample, load_squad
from qa.training.config import TrainConfig

# What a training window teaches (for the log's mix figures).
KIND_ANSWER, KIND_MISSED, KIND_UNANSWERABLE, KIND_OTHER_PARAGRAPH = 0, 1, 2, 3


def load_training_data(cfg: TrainConfig) -> tuple[list[SquadExample], list[SquadExample]]:
    """Training and validation questions from every --data file, split by article title."""
    if not cfg.data:
        raise InputError("no --data file given; pass a SQuAD v2.0 JSON file")
    examples: list[SquadExample] = []
    seen_titles: dict[str, str] = {}
    for path in cfg.data:
        part = load_squad(path)
        for title in {e.title for e in part}:
            if title in seen_titles and seen_titles[title] != path:
                raise InputError(
                    f"article {title!r} is in both {seen_titles[title]} and {path}; pass each article once"
                )
            seen_titles[title] = path
        examples.extend(part)
    val_titles = set(cfg.val_articles)
    missing = val_titles - set(seen_titles)
    if missing:
        raise InputError(
            f"validation articles not in {', '.join(cfg.data)}: {', '.join(sorted(missing))}; "
            "pass titles from the files"
        )
    train = [e for e in examples if e.title not in val_titles]
    val = [e for e in examples if e.title in val_titles]
    rng = random.Random(cfg.seed)
    if cfg.max_train_questions is not None:
        train = rng.sample(train, min(cfg.max_train_questions, len(train)))
    if cfg.max_val_questions is not None:
        val = rng.sample(val, min(cfg.max_val_questions, len(val)))
    if not train or not val:
        raise InputError("no training or validation questions left; check --val-articles and the data files")
    return train, val


def majority_answer(ex: SquadExample) -> tuple[str, int] | None:
    """The answer most annotators gave (first on ties): a steadier label than the first one."""
    if not ex.answers:
        return None
    counts = collections.Counter(ex.answers)
    best = max(range(len(ex.answers)), key=lambda i: (counts[ex.answers[i]], -i))
    return ex.answers[best], ex.answer_starts[best]


@dataclass(frozen=True)
class Pair:
    """One training input: a question, a context and its label (None: no answer here)."""

    question: str
    context: str
    label: tuple[str, int] | None
    kind: int


def training_pairs(
    examples: Sequence[SquadExample], negatives: float, rng: random.Random, unanswerable_repeats: int = 1
) -> list[Pair]:
    """Every question with its own paragraph, plus other-paragraph negatives for a share of them.

    Unanswerable questions come `unanswerable_repeats` times (oversampled; the batches are shuffled).

    A negative paragraph is one of the same article (same topic and names, so it is a hard
    negative, like a retrieved chunk) that contains none of the question's gold answers.
    """
    pairs = []
    for ex in examples:
        label = majority_answer(ex)
        pair = Pair(ex.question, ex.context, label, KIND_ANSWER if label else KIND_UNANSWERABLE)
        pairs.extend([pair] * (1 if label else unanswerable_repeats))
    if negatives <= 0:
        return pairs
    by_title: dict[str, list[str]] = collections.defaultdict(list)
    for ex in examples:
        contexts = by_title[ex.title]
        if not contexts or contexts[-1] != ex.context:
            contexts.append(ex.context)
    for ex in examples:
        if not ex.answers or rng.random() >= negatives:
            continue
        others = [c for c in by_title[ex.title] if c != ex.context]
        rng.shuffle(others)
        golds = [a.lower() for a in ex.answers if a.strip()]
        for ctx in others[:5]:
            low = ctx.lower()
            if not any(g in low for g in golds):
                pairs.append(Pair(ex.question, ctx, None, KIND_OTHER_PARAGRAPH))
                break
    return pairs

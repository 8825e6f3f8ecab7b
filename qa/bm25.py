"""BM25 over chunks (bm25s): the one place that tokenises, builds, saves, loads and searches it.

The index stores it in each generation (`qa.index`, beside the vectors), so no process rebuilds
it at start-up; the retriever (`qa.retrieval`) loads that copy, or builds one in memory for an
index held in memory (or one written before BM25 was stored).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_TOKEN = re.compile(r"\w+", re.UNICODE)
# A short stop list: BM25's idf already discounts common words, this only keeps question
# words ("what", "who") from matching every chunk that happens to contain them.
_STOP_WORDS = (
    "a an and are as at be by did do does for from has have how in is it its of on or that the this to was "
    "were what when where which who whom whose why will with"
)
_STOP = frozenset(_STOP_WORDS.split())


def tokens(text: str) -> list[str]:
    """Lower-cased words without the stop words: chunks and questions are tokenised alike."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOP]


class BM25:
    """A bm25s index over texts; `search` returns (text position, score) pairs, best first."""

    def __init__(self, model: Any, size: int) -> None:
        self.model = model
        self.size = size

    @classmethod
    def build(cls, texts: Sequence[str]) -> BM25:
        import bm25s
        import numpy as np

        # Token ids with the vocabulary in first-seen order, not lists of token strings: bm25s kept
        # those and its own id lists side by side (~140 MB more at the peak of indexing 480 articles'
        # 37,604 chunks), and numbered the vocabulary in a set's order, so no two builds of the same
        # chunks wrote the same files.
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in tokens(text)] for text in texts]
        # bm25s adds its empty token itself, but fails when that would be the only one: chunks made
        # only of stop words ("It was the.") would stop the whole index build.
        vocab.setdefault("", len(vocab))
        model = bm25s.BM25()
        with np.errstate(divide="ignore", invalid="ignore"):  # their average length is then 0
            model.index((ids, vocab), show_progress=False)
        return cls(model, len(texts))

    @classmethod
    def load(cls, path: Path, size: int) -> BM25 | None:
        """The index saved at `path` (over `size` texts); None when there is none or it cannot be read."""
        if not path.is_dir():
            return None
        import bm25s

        try:
            return cls(bm25s.BM25.load(str(path), show_progress=False), size)
        except (OSError, ValueError, KeyError):
            return None  # a damaged copy: the caller builds one in memory

    @classmethod
    def load_or_build(cls, path: Path | None, texts: Sequence[str]) -> BM25:
        loaded = cls.load(path, len(texts)) if path is not None else None
        return loaded if loaded is not None else cls.build(texts)

    def save(self, path: Path) -> None:
        self.model.save(str(path), show_progress=False)

    def search(self, questions: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """Up to k (position, score) pairs a question, best first; only texts sharing a word score."""
        k = min(k, self.size)
        out = []
        for q in questions:
            words = tokens(q)
            if not words:
                out.append([])
                continue
            ids, scores = self.model.retrieve([words], k=k, show_progress=False)
            out.append([(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0])
        return out

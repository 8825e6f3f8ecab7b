"""Finding the chunks worth reading: dense (FAISS), BM25 (bm25s), or both fused by reciprocal rank."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from qa.settings import RETRIEVAL_METHODS, check_retrieval
from qa.types import Passage

if TYPE_CHECKING:
    from qa.embedding import Embedder
    from qa.index import Index

METHODS = RETRIEVAL_METHODS
RRF_K = 60  # the constant from Cormack et al. (2009); dampens the weight of the very top ranks
_TOKEN = re.compile(r"\w+", re.UNICODE)
# A short stop list: BM25's idf already discounts common words, this only keeps question
# words ("what", "who") from matching every chunk that happens to contain them.
_STOP_WORDS = (
    "a an and are as at be by did do does for from has have how in is it its of on or that the this to was "
    "were what when where which who whom whose why will with"
)
_STOP = frozenset(_STOP_WORDS.split())


def bm25_tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOP]


class Retriever:
    def __init__(self, index: Index, embedder: Embedder, method: str = "hybrid") -> None:
        check_retrieval(method)
        self.index = index
        self.embedder = embedder
        self.method = method
        self._bm25: Any = None

    def _bm25_index(self) -> Any:
        if self._bm25 is None:
            import bm25s

            stored = self.index.path / "bm25" if self.index.path is not None else None
            model = None
            if stored is not None and stored.is_dir():
                try:
                    model = bm25s.BM25.load(str(stored), show_progress=False)
                except (OSError, ValueError, KeyError):
                    model = None  # an index from before BM25 was stored, or a damaged copy: rebuild in memory
            if model is None:
                model = bm25s.BM25()
                model.index([bm25_tokens(c.text) for c in self.index.chunks], show_progress=False)
            self._bm25 = model
        return self._bm25

    def warm_up(self) -> None:
        """Build the in-memory BM25 index now, not inside the first (possibly concurrent) question."""
        if self.method != "dense":
            self._bm25_index()

    def dense(self, questions: list[str], k: int) -> list[list[tuple[int, float]]]:
        return self.index.search(self.embedder.encode_queries(questions), k)

    def bm25(self, questions: list[str], k: int) -> list[list[tuple[int, float]]]:
        model = self._bm25_index()
        k = min(k, len(self.index.chunks))
        out = []
        for q in questions:
            tokens = bm25_tokens(q)
            if not tokens:
                out.append([])
                continue
            ids, scores = model.retrieve([tokens], k=k, show_progress=False)
            out.append([(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0])
        return out

    def retrieve(self, questions: list[str], k: int) -> list[list[Passage]]:
        if self.method == "dense":
            ranked = self.dense(questions, k)
        elif self.method == "bm25":
            ranked = self.bm25(questions, k)
        else:
            depth = max(k * 2, 10)
            ranked = [
                rrf([d, b], k) for d, b in zip(self.dense(questions, depth), self.bm25(questions, depth), strict=True)
            ]
        chunks = self.index.chunks
        return [[Passage(chunks[i], score, rank) for rank, (i, score) in enumerate(row, 1)] for row in ranked]


def rrf(rankings: list[list[tuple[int, float]]], k: int) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: sum of 1/(RRF_K + rank) over the rankings that hold an item."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (item, _) in enumerate(ranking, 1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])[:k]

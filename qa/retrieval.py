"""Finding the chunks worth reading: dense (FAISS), BM25 (`qa.bm25`), or both fused by reciprocal rank."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qa.bm25 import BM25
from qa.settings import check_retrieval
from qa.types import Passage

if TYPE_CHECKING:
    from qa.index import Index
    from qa.protocols import EmbedderLike

RRF_K = 60  # the constant from Cormack et al. (2009); dampens the weight of the very top ranks


class Retriever:
    """Meets `qa.protocols.RetrieverLike` over an index and an embedder."""

    def __init__(self, index: Index, embedder: EmbedderLike, method: str = "hybrid") -> None:
        check_retrieval(method)
        self.index = index
        self.embedder = embedder
        self.method = method
        self._bm25: BM25 | None = None

    def _bm25_index(self) -> BM25:
        if self._bm25 is None:
            # The copy stored with the index; an index held in memory, one from before BM25 was
            # stored, or a damaged copy: built in memory.
            self._bm25 = BM25.load_or_build(self.index.bm25_path, [c.text for c in self.index.chunks])
        return self._bm25

    def warm_up(self) -> None:
        """Build the in-memory BM25 index now, not inside the first (possibly concurrent) question."""
        if self.method != "dense":
            self._bm25_index()

    def dense(self, questions: list[str], k: int) -> list[list[tuple[int, float]]]:
        return self.index.search(self.embedder.encode_queries(questions), k)

    def bm25(self, questions: list[str], k: int) -> list[list[tuple[int, float]]]:
        return self._bm25_index().search(questions, k)

    def retrieve(self, questions: list[str], k: int, doc_id: str | None = None) -> list[list[Passage]]:
        """The k closest chunks a question, best first; with `doc_id`, only that article's (every
        chunk is ranked, then the article's own are kept and ranked 1, 2, …)."""
        depth = k if doc_id is None else len(self.index.chunks)
        if self.method == "dense":
            ranked = self.dense(questions, depth)
        elif self.method == "bm25":
            ranked = self.bm25(questions, depth)
        else:
            wide = max(depth * 2, 10)
            ranked = [
                rrf([d, b], depth) for d, b in zip(self.dense(questions, wide), self.bm25(questions, wide), strict=True)
            ]
        chunks = self.index.chunks
        if doc_id is not None:
            ranked = [[(i, score) for i, score in row if chunks[i].doc_id == doc_id][:k] for row in ranked]
        return [[Passage(chunks[i], score, rank) for rank, (i, score) in enumerate(row, 1)] for row in ranked]


def rrf(rankings: list[list[tuple[int, float]]], k: int) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: sum of 1/(RRF_K + rank) over the rankings that hold an item."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (item, _) in enumerate(ranking, 1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])[:k]

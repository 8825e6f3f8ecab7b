"""Pure-Python stand-ins for the models, for tests where the models are not under test.

They meet `qa.protocols` (ReaderLike, EmbedderLike, RetrieverLike), so an `Assistant` built with
them runs the real pipeline (documents, chunking, FAISS index, retrieval, decoding, citations) in
milliseconds.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from qa.reader import ReaderSettings, Span
from qa.types import Chunk, Passage

_WORD = re.compile(r"\w+")


class FakeReader:
    """Answers a question with every place its passage holds the text `answers[question]`.

    The gap falls with each later occurrence in a passage (5, 4, 3, ..., or from the gap given
    with the text), so "best" is defined; questions it has no answer for get no span at all.
    """

    model_name = "fake-reader"

    def __init__(self, answers: dict[str, str | tuple[str, float]], null_threshold: float = 0.0) -> None:
        self.answers = answers
        self.settings = ReaderSettings(null_threshold=null_threshold, calib_a=1.0, calib_b=0.0)
        self.calls: list[int] = []  # pairs read per call (to check batching)

    def warm_up(self) -> None:
        pass

    def read(self, questions: list[str], contexts: list[str], n_best: int = 5) -> list[list[Span]]:
        self.calls.append(len(questions))
        out = []
        for q, ctx in zip(questions, contexts, strict=True):
            target = self.answers.get(q)
            top = 5.0
            if isinstance(target, tuple):  # (text, the gap of its first place)
                target, top = target
            spans = []
            if target:
                for n, m in enumerate(re.finditer(re.escape(target), ctx)):
                    spans.append(Span(m.start(), m.end(), top - n, 0, logit=top - n + 1.0, null=1.0))
            out.append(spans[:n_best])
        return out


class FakeEmbedder:
    """Hashed bag of words, L2-normalised: texts sharing words are close."""

    name = "fake-embedder"

    def __init__(self, dimension: int = 64) -> None:
        self.dimension = dimension

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts)

    def warm_up_queries(self) -> None:
        pass


class FakeRetriever:
    """Retrieves the chunks it was given, in their order (only `doc_id`'s when asked), the same for
    every question; records each call's k and doc_id."""

    def __init__(self, chunks: list[Chunk]) -> None:
        self.chunks = chunks
        self.calls: list[tuple[int, str | None]] = []

    def warm_up(self) -> None:
        pass

    def retrieve(self, questions: list[str], k: int, doc_id: str | None = None) -> list[list[Passage]]:
        self.calls.append((k, doc_id))
        kept = [c for c in self.chunks if doc_id is None or c.doc_id == doc_id][:k]
        return [[Passage(c, 1.0 / rank, rank) for rank, c in enumerate(kept, 1)] for _ in questions]

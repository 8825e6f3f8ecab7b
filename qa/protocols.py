"""The small interfaces the assistant needs from its parts, so any object that meets them can be
handed in (a fake reader in a test, an embedder shared by the web page, eval and benchmark).

`Assistant` builds the defaults (`qa.reader.Reader`, `qa.embedding.Embedder`,
`qa.retrieval.Retriever`) when none are given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from qa.reader import ReaderSettings, Span
    from qa.types import Passage


@runtime_checkable
class ReaderLike(Protocol):
    """Scores answer spans in passages: `read` returns, per (question, passage) pair, spans in
    passage character offsets with a `gap` that compares across passages."""

    model_name: str
    settings: ReaderSettings

    def warm_up(self) -> None: ...

    def read(self, questions: list[str], contexts: list[str], n_best: int = 5) -> list[list[Span]]: ...


@runtime_checkable
class EmbedderLike(Protocol):
    """Turns text into L2-normalised vectors; `name` is recorded in the index manifest."""

    name: str

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray: ...

    def encode_queries(self, texts: list[str]) -> np.ndarray: ...

    def warm_up_queries(self) -> None: ...


@runtime_checkable
class RetrieverLike(Protocol):
    """Finds the k passages closest to each question, best first; with `doc_id`, only passages of
    that article, ranked 1, 2, … among themselves (the assistant's "only this article")."""

    def warm_up(self) -> None: ...

    def retrieve(self, questions: list[str], k: int, doc_id: str | None = None) -> list[list[Passage]]: ...

"""The Python API: `Assistant.ask` and `Assistant.ask_many`. The CLI and the web page call these.

For each question: retrieve the closest chunks, read every chunk on its own (all chunks of
all questions in one batched reader call), map spans to document offsets by adding the
chunk's start, merge spans that overlap in the document, and answer only when the best span
beats the reader's null threshold.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

from qa.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, sentence_at, sentence_spans
from qa.documents import load_documents, seeds_dir
from qa.embedding import Embedder
from qa.errors import IndexStoreError, InputError
from qa.index import Index, build_index, index_dir, load_index, read_manifest
from qa.reader import Reader, Span
from qa.retrieval import METHODS, Retriever
from qa.types import Answer, Document, Passage, Result

MAX_QUESTION_CHARS = 500
DEFAULT_PASSAGES = 3
DEFAULT_RETRIEVAL = "hybrid"


def check_question(question: object) -> str:
    if not isinstance(question, str):
        raise InputError(f"question must be text, got {type(question).__name__}")
    q = question.strip()
    if not q:
        raise InputError("the question is empty; type a question about the article")
    if len(q) > MAX_QUESTION_CHARS:
        raise InputError(f"the question is {len(q)} characters long; keep it under {MAX_QUESTION_CHARS}")
    return q


def check_top_k(top_k: int) -> int:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise InputError(f"top_k must be a whole number of at least 1, got {top_k!r}")
    return top_k


class Assistant:
    """Question answering over a folder of articles, with exact citations.

    Construction is cheap; models and the index load on first use (or `warm_up()`), once.
    """

    def __init__(
        self,
        seeds: str | Path | None = None,
        index: str | Path | None = None,
        *,
        embed_model: str | None = None,
        reader_model: str | None = None,
        retrieval: str = DEFAULT_RETRIEVAL,
        passages: int = DEFAULT_PASSAGES,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        auto_index: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if retrieval not in METHODS:
            raise InputError(f"retrieval must be one of {', '.join(METHODS)}, got {retrieval!r}")
        if passages < 1:
            raise InputError(f"passages must be at least 1, got {passages}")
        self.seeds = seeds_dir(seeds)
        self.index_dir = index_dir(index)
        self.embedder = Embedder(embed_model)
        self.reader = Reader(reader_model)
        self.retrieval = retrieval
        self.passages = passages
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.auto_index = auto_index
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self._index: Index | None = None
        self._retriever: Retriever | None = None

    # --- loading -------------------------------------------------------------------------

    @cached_property
    def documents(self) -> dict[str, Document]:
        return {d.doc_id: d for d in load_documents(self.seeds)}

    @cached_property
    def _sentences(self) -> dict[str, list[tuple[int, int]]]:
        return {doc_id: sentence_spans(d.text) for doc_id, d in self.documents.items()}

    def index_status(self) -> str | None:
        """None when the index on disk matches the articles and settings, else why not."""
        manifest = read_manifest(self.index_dir)
        if manifest is None:
            return f"there is no index in {self.index_dir}"
        return manifest.staleness(
            list(self.documents.values()), self.embedder.name, self.chunk_size, self.chunk_overlap
        )

    def build_index(self, force: bool = False, progress: bool = True) -> tuple[Index, str | None]:
        """Load the index, or (re)build it when forced, missing or stale. Returns it and why it was rebuilt."""
        docs = list(self.documents.values())
        reason = "--force was given" if force else self.index_status()
        if reason is None:
            manifest = read_manifest(self.index_dir)
            assert manifest is not None
            index = load_index(self.index_dir, manifest)
        else:
            index = build_index(self.index_dir, docs, self.embedder, self.chunk_size, self.chunk_overlap, progress)
        self._index = index
        self._retriever = Retriever(index, self.embedder, self.retrieval)
        return index, reason

    @property
    def index(self) -> Index:
        if self._index is None:
            reason = self.index_status()
            if reason is not None and not self.auto_index:
                raise IndexStoreError(f"the index cannot be used: {reason}; rebuild it with: qa index")
            if reason is not None:
                self.log(f"Indexing {len(self.documents)} article(s) into {self.index_dir}: {reason}.")
            self.build_index(progress=False)
        assert self._index is not None
        return self._index

    @property
    def retriever(self) -> Retriever:
        _ = self.index
        assert self._retriever is not None
        return self._retriever

    def with_retrieval(self, method: str) -> Assistant:
        """The same articles, index and loaded models, retrieving another way (for comparisons)."""
        if method not in METHODS:
            raise InputError(f"retrieval must be one of {', '.join(METHODS)}, got {method!r}")
        if method == self.retrieval:
            return self
        other = copy.copy(self)
        other.retrieval = method
        other._retriever = Retriever(self._index, self.embedder, method) if self._index is not None else None
        return other

    def warm_up(self) -> Assistant:
        """Load articles, index and both models now rather than on the first question."""
        self.retriever.warm_up()
        self.embedder.warm_up_queries()
        self.reader.warm_up()
        return self

    # --- answering -----------------------------------------------------------------------

    def ask(self, question: str, top_k: int = 1, doc_id: str | None = None) -> Result:
        """Answer one question; raises InputError for an empty or over-long question."""
        q = check_question(question)
        return self._answer([q], check_top_k(top_k), doc_id)[0]

    def ask_many(
        self,
        questions: Sequence[str],
        top_k: int = 1,
        doc_id: str | None = None,
        progress: bool = False,
        batch_size: int = 64,
    ) -> list[Result]:
        """Answer many questions in input order; a bad question gets a Result with `error` set."""
        from tqdm import tqdm

        check_top_k(top_k)
        results: list[Result | None] = [None] * len(questions)
        valid: list[tuple[int, str]] = []
        for i, q in enumerate(questions):
            try:
                valid.append((i, check_question(q)))
            except InputError as exc:
                results[i] = Result(question=q if isinstance(q, str) else "", error=str(exc))
        bar = tqdm(total=len(questions), desc="questions", unit="q", disable=not progress, file=sys.stderr)
        bar.update(len(questions) - len(valid))
        for b in range(0, len(valid), batch_size):
            part = valid[b : b + batch_size]
            for (i, _), res in zip(part, self._answer([q for _, q in part], top_k, doc_id), strict=True):
                results[i] = res
            bar.update(len(part))
        bar.close()
        return [r for r in results if r is not None]

    def _answer(self, questions: list[str], top_k: int, doc_id: str | None) -> list[Result]:
        if doc_id is not None and doc_id not in self.documents:
            raise InputError(f"no article {doc_id!r}; choose one of: {', '.join(sorted(self.documents))}")
        self.warm_up()  # so that `seconds` measures answering, not the first-use loading
        started = time.perf_counter()
        depth = len(self.index.chunks) if doc_id is not None else self.passages
        found = self.retriever.retrieve(questions, depth)
        if doc_id is not None:
            found = [[p for p in row if p.chunk.doc_id == doc_id][: self.passages] for row in found]
        pairs = [(qi, p) for qi, row in enumerate(found) for p in row]
        spans = self.reader.read([questions[qi] for qi, _ in pairs], [p.chunk.text for _, p in pairs], n_best=5)
        candidates: list[list[tuple[Span, Passage]]] = [[] for _ in questions]
        for (qi, passage), pair_spans in zip(pairs, spans, strict=True):
            candidates[qi].extend((s, passage) for s in pair_spans)
        per_question = (time.perf_counter() - started) / max(len(questions), 1)
        return [
            self._decide(q, cands, row, top_k, per_question)
            for q, cands, row in zip(questions, candidates, found, strict=True)
        ]

    def _decide(
        self, question: str, cands: list[tuple[Span, Passage]], passages: list[Passage], top_k: int, seconds: float
    ) -> Result:
        kept: list[tuple[float, Answer]] = []
        for span, passage in sorted(cands, key=lambda c: -c[0].gap):
            start, end = passage.chunk.start + span.start, passage.chunk.start + span.end
            if any(a.doc_id == passage.chunk.doc_id and a.start < end and start < a.end for _, a in kept):
                continue  # the same answer seen from an overlapping chunk or window
            kept.append((span.gap, self._make_answer(passage, start, end, span.gap)))
            if len(kept) >= top_k:
                break
        threshold = self.reader.settings.null_threshold
        answers = [a for gap, a in kept if gap > threshold]
        closest = kept[0][1] if kept and not answers else None
        return Result(question=question, answers=answers, passages=passages, closest=closest, seconds=seconds)

    def _make_answer(self, passage: Passage, start: int, end: int, gap: float) -> Answer:
        doc = self.documents[passage.chunk.doc_id]
        s_start, s_end = sentence_at(doc.text, self._sentences[doc.doc_id], start, end)
        return Answer(
            text=doc.text[start:end],
            start=start,
            end=end,
            score=self.reader.settings.score(gap),
            doc_id=doc.doc_id,
            chunk_id=passage.chunk.chunk_id,
            sentence=doc.text[s_start:s_end],
            sentence_start=s_start,
            sentence_end=s_end,
        )

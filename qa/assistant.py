"""The Python API: `Assistant.ask` and `Assistant.ask_many`. The CLI and the web page call these.

An assistant answers over a folder of articles and its index on disk, or over one article given
as text (`Assistant.from_text`), which it indexes in memory the same way (nothing read or written).

For each question: retrieve the closest chunks, read every chunk on its own (all chunks of
all questions in one batched reader call), map spans to document offsets by adding the
chunk's start, merge spans that overlap in the document, and answer only when the best span
beats the reader's null threshold.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from pathlib import Path

from qa.calibration import CALIBRATION_FILE, Calibration, find_calibration, model_label, reader_fingerprint
from qa.chunking import sentence_spans
from qa.decode import decode
from qa.documents import article_document, document_paths, load_documents, seeds_dir
from qa.embedding import Embedder
from qa.errors import DocumentError, IndexStoreError, InputError
from qa.files import first_bad_char, printable
from qa.index import (
    Index,
    Manifest,
    check_index_dir,
    index_dir,
    index_in_memory,
    load_current,
    load_index,
    read_manifest,
    reading,
    stored_documents,
    write_generation,
    writing,
)
from qa.language import english_note
from qa.loading import SHIPPED_READERS
from qa.protocols import EmbedderLike, ReaderLike, RetrieverLike
from qa.reader import Reader, Span
from qa.retrieval import Retriever
from qa.settings import Settings, check_min_confidence, check_retrieval
from qa.types import Document, Passage, Result

MAX_QUESTION_CHARS = 500
# Questions answered together (one retrieval and one reader call); `qa batch --ray` cuts its work
# at the same places, so the reader sees the same batches and a run on Ray gives the same bytes.
QUESTION_BATCH = 64
# An article file as stat(2) saw it: path, size, mtime_ns, ctime_ns, inode.
FileStamp = tuple[str, int, int, int, int]


def check_question(question: object) -> str:
    if not isinstance(question, str):
        raise InputError(f"question must be text, got {type(question).__name__}")
    q = question.strip()
    if not q:
        raise InputError("the question is empty; type a question about the article")
    bad = first_bad_char(q)
    if bad is not None:
        raise InputError(
            f"the question is not UTF-8 text (undecodable bytes or a lone surrogate at character {bad + 1}); "
            "save or send it as UTF-8"
        )
    if len(q) > MAX_QUESTION_CHARS:
        raise InputError(f"the question is {len(q)} characters long; keep it to {MAX_QUESTION_CHARS} at most")
    return q


def check_doc_id(doc_id: str | None, documents: dict[str, Document]) -> None:
    """An article choice must name one of the articles (None: all of them)."""
    if doc_id is not None and doc_id not in documents:
        raise InputError(f"no article {doc_id!r}; choose one of: {', '.join(sorted(documents))}")


def check_chunks(index: Index, documents: dict[str, Document]) -> None:
    """Every chunk must still be the slice of its article it claims to be, or citations would lie."""
    for c in index.chunks:
        doc = documents.get(c.doc_id)
        if doc is None or doc.text[c.start : c.end] != c.text:
            raise IndexStoreError(
                f"the index does not match the articles (chunk {c.chunk_id} of {c.doc_id!r}); "
                "rebuild it with: qa index --force"
            )


def check_top_k(top_k: int) -> int:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise InputError(f"top_k must be a whole number of at least 1, got {top_k!r}")
    return top_k


class Assistant:
    """Question answering over a folder of articles, with exact citations.

    Construction is cheap; models and the index load on first use (or `warm_up()`), once.
    Settings come as a `Settings` object (the CLI resolves it from flags and environment) or as
    keyword arguments that override it. `reader`, `embedder` and `retriever` may be handed in
    (anything meeting `qa.protocols`); the defaults are built when they are not.

    `documents` (what `from_text` passes) are articles held in memory instead of the seeds folder:
    they are indexed in memory, and the seeds and index folders are neither read nor written.
    """

    def __init__(
        self,
        seeds: str | Path | None = None,
        index: str | Path | None = None,
        *,
        settings: Settings | None = None,
        embed_model: str | None = None,
        reader_model: str | None = None,
        retrieval: str | None = None,
        passages: int | None = None,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        reader: ReaderLike | None = None,
        embedder: EmbedderLike | None = None,
        retriever: RetrieverLike | None = None,
        auto_index: bool = True,
        log: Callable[[str], None] | None = None,
        documents: Sequence[Document] | None = None,
    ) -> None:
        if settings is None and documents is not None:
            settings = Settings()  # no folder to look for
        if settings is None:
            folder = seeds_dir(seeds)
            settings = Settings(seeds=folder, index_dir=index_dir(index, folder))
        overrides = {
            "seeds": Path(seeds) if seeds is not None else None,
            "index_dir": Path(index) if index is not None else None,
            "embed_model": embed_model,
            "reader_model": reader_model,
            "retrieval": retrieval,
            "passages": passages,
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
        }
        self.settings = settings.with_(**{k: v for k, v in overrides.items() if v is not None})
        s = self.settings
        # None: the articles are held in memory (`documents`), and so is their index.
        self.seeds: Path | None = None
        self.index_dir: Path | None = None
        if documents is None:
            check_index_dir(s.index_dir)  # a file or device there would fail only after the embedding work
            self.seeds, self.index_dir = s.seeds, s.index_dir
        else:
            held = {d.doc_id: d for d in documents}
            if not held or len(held) != len(documents):
                raise InputError("give at least one article, each with its own name")
            self.__dict__["documents"] = held  # what the `documents` property would load from a folder
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.embedder: EmbedderLike = embedder if embedder is not None else Embedder.from_settings(s, self.log)
        self.reader: ReaderLike = reader if reader is not None else Reader.from_settings(s, self.log)
        self.auto_index = auto_index
        self._index: Index | None = None
        self._given_retriever = retriever
        self._retriever: RetrieverLike | None = retriever
        self._seen: tuple[FileStamp, ...] = ()
        self._use_stored = True  # take an unchanged web page's or PDF's text from the index

    # Read from the settings, never copied: one source for each setting (these two are public).
    @property
    def retrieval(self) -> str:
        return self.settings.retrieval

    @property
    def passages(self) -> int:
        return self.settings.passages

    @classmethod
    def from_text(
        cls,
        text: str,
        name: str = "pasted.txt",
        *,
        reader: ReaderLike | None = None,
        embedder: EmbedderLike | None = None,
        settings: Settings | None = None,
        log: Callable[[str], None] | None = None,
    ) -> Assistant:
        """An assistant over one article given as text, named `name` in its citations.

        It is chunked, embedded and indexed (FAISS and BM25) in memory, on first use, exactly as the
        same text in a file of a folder would be, so it gives the same answers, with offsets into
        `text`; nothing is read from or written to the seeds or index folders. Hand in a loaded
        `reader` and `embedder` to share them (the web page does, per visitor). The calibration is
        `settings.calibration` when given, else the reader's: an index folder's calibration was
        fitted on that folder's articles. Raises InputError for text that is empty, not UTF-8
        (a lone surrogate), binary (NUL characters) or over 1 MB.
        """
        return cls.from_document(
            article_document(text, name), reader=reader, embedder=embedder, settings=settings, log=log
        )

    @classmethod
    def from_document(
        cls,
        document: Document,
        *,
        reader: ReaderLike | None = None,
        embedder: EmbedderLike | None = None,
        settings: Settings | None = None,
        log: Callable[[str], None] | None = None,
    ) -> Assistant:
        """`from_text` for an article already read (`qa.documents.read_article`: a file, a web page,
        a PDF, a URL), whose title, date and URL its citations then show."""
        return cls(settings=settings, reader=reader, embedder=embedder, log=log, documents=[document])

    # --- loading -------------------------------------------------------------------------

    @cached_property
    def documents(self) -> dict[str, Document]:
        assert self.seeds is not None and self.index_dir is not None  # held in memory: set at construction
        self._seen = self._fingerprint()
        # Web pages and PDFs the index already holds (same bytes) keep the text it was built from.
        stored = stored_documents(self.index_dir) if self._use_stored and self.index_dir.is_dir() else {}
        return {d.doc_id: d for d in load_documents(self.seeds, stored=stored, log=self.log)}

    def _reload(self, stored: bool = True) -> None:
        """Forget the loaded articles (and what depends on them); `stored`: reuse the index's extracted text."""
        for name in ("documents", "_sentences"):
            self.__dict__.pop(name, None)
        self._use_stored = stored

    def _fingerprint(self) -> tuple[FileStamp, ...]:
        """What stat(2) says of every article file: cheap to compare before each question.

        As git's index does: size and modification time, plus the inode change time (which no
        user can set back, unlike the modification time) and the inode (an editor's atomic save
        makes a new file). Like git's stat check alone, it cannot see a same-size edit made within
        the file system's timestamp tick of the previous write, with the old mtime restored.
        """
        if self.seeds is None:
            return ()  # held in memory: no files to change
        try:
            paths = document_paths(self.seeds)
        except DocumentError:
            return ()  # loading will say what is wrong
        out = []
        for p in paths:
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        return tuple(out)

    def refresh(self) -> bool:
        """Reload the articles (and re-index if their text changed) when the files on disk changed.

        A long-lived assistant (the web page) must never cite text that is no longer in the file.
        Returns True when something was reloaded.
        """
        if self.seeds is None or "documents" not in self.__dict__ or self._fingerprint() == self._seen:
            return False
        self.log(f"Articles in {self.seeds} changed on disk; reloading them.")
        self._reload()
        self._index = None
        self._retriever = self._given_retriever
        return True

    @cached_property
    def _sentences(self) -> dict[str, list[tuple[int, int]]]:
        return {doc_id: sentence_spans(d.text) for doc_id, d in self.documents.items()}

    def index_status(self) -> str | None:
        """None when the index on disk matches the articles and settings, else why not."""
        if self.index_dir is None:
            return None  # held in memory: indexed from the articles themselves, never stale
        return self._staleness(read_manifest(self.index_dir))

    def _staleness(self, manifest: Manifest | None) -> str | None:
        if manifest is None:
            return f"there is no index in {self.index_dir}"
        return manifest.staleness(
            list(self.documents.values()), self.embedder.name, self.settings.chunk_size, self.settings.chunk_overlap
        )

    def build_index(self, force: bool = False, progress: bool = True) -> tuple[Index, str | None]:
        """Load the index, or (re)build it when forced, missing or stale. Returns it and why it was rebuilt.

        A build is the index folder's only writer: one that finds another under way waits for it,
        then (unless forced) uses what that one built if it now matches. Articles held in memory
        are indexed in memory.
        """
        if self.index_dir is None:
            docs = list(self.documents.values())
            held = index_in_memory(docs, self.embedder, self.settings.chunk_size, self.settings.chunk_overlap, progress)
            self._use_index(held)
            return held, "the articles are held in memory"
        if force:  # from scratch: web pages and PDFs are extracted again too (a newer extractor's text)
            self._reload(stored=False)
        index, reason = (None, "--force was given") if force else self._up_to_date_index()
        if index is None:
            with writing(self.index_dir, self.log):
                if not force:
                    index, reason = self._up_to_date_index()
                if index is None:
                    index = write_generation(
                        self.index_dir,
                        list(self.documents.values()),
                        self.embedder,
                        self.settings.chunk_size,
                        self.settings.chunk_overlap,
                        progress,
                        previous=self._previous_index(),
                    )
        self._use_index(index)
        return index, reason

    def _use_index(self, index: Index) -> None:
        self._index = index
        self._retriever = self._given_retriever or Retriever(index, self.embedder, self.retrieval)

    def _up_to_date_index(self) -> tuple[Index | None, str | None]:
        """The index on disk when it matches the articles and settings, else None and why not."""
        assert self.index_dir is not None
        with reading(self.index_dir):
            manifest = read_manifest(self.index_dir)
            reason = self._staleness(manifest)
            if manifest is None or reason is not None:
                return None, reason
            index = load_index(self.index_dir, manifest)
        check_chunks(index, self.documents)
        return index, None

    def _previous_index(self) -> Index | None:
        """The index on disk, if it can be read, so a rebuild re-embeds only what changed."""
        assert self.index_dir is not None
        try:
            return load_current(self.index_dir)
        except IndexStoreError:
            return None

    @property
    def index(self) -> Index:
        if self._index is None and self.index_dir is None:
            self.build_index(progress=False)  # held in memory: small (from_text caps it at 1 MB), no bar
        if self._index is None:
            reason = self.index_status()
            if reason is not None and not self.auto_index:
                raise IndexStoreError(f"the index cannot be used: {reason}; rebuild it with: qa index")
            if reason is not None:
                self.log(f"Indexing {len(self.documents)} article(s) into {self.index_dir}: {reason}.")
            self.build_index(progress=True)
        assert self._index is not None
        return self._index

    @property
    def retriever(self) -> RetrieverLike:
        if self._retriever is None:
            _ = self.index
        assert self._retriever is not None
        return self._retriever

    def with_retrieval(self, method: str) -> Assistant:
        """The same articles, index and loaded models, retrieving another way (for comparisons).

        A retriever handed in is kept, as `build_index` and `refresh` keep it: it decides how to retrieve.
        """
        check_retrieval(method)
        if method == self.retrieval:
            return self
        other = copy.copy(self)
        other.settings = self.settings.with_(retrieval=method)
        built = Retriever(self._index, self.embedder, method) if self._index is not None else None
        other._retriever = built if self._given_retriever is None else self._given_retriever
        return other

    def warm_up(self) -> Assistant:
        """Load articles, index and both models now rather than on the first question."""
        self.retriever.warm_up()
        self.embedder.warm_up_queries()
        self.reader.warm_up()
        return self

    # --- answering -----------------------------------------------------------------------

    def ask(
        self, question: str, top_k: int = 1, doc_id: str | None = None, min_confidence: float | None = None
    ) -> Result:
        """Answer one question; raises InputError for an empty or over-long question.

        `min_confidence` (0..1) overrides the settings' and the calibration's: answer only when the
        probability that the answer is right reaches it.
        """
        q = check_question(question)
        return self._answer([q], check_top_k(top_k), doc_id, self._min_confidence(min_confidence))[0]

    def ask_many(
        self,
        questions: Sequence[str],
        top_k: int = 1,
        doc_id: str | None = None,
        progress: bool = False,
        batch_size: int = QUESTION_BATCH,
        min_confidence: float | None = None,
    ) -> list[Result]:
        """Answer many questions in input order; a bad question gets a Result with `error` set."""
        return list(self.iter_answers(questions, top_k, doc_id, progress, batch_size, min_confidence=min_confidence))

    def iter_answers(
        self,
        questions: Sequence[str],
        top_k: int = 1,
        doc_id: str | None = None,
        progress: bool = False,
        batch_size: int = QUESTION_BATCH,
        total: int | None = None,
        min_confidence: float | None = None,
    ) -> Iterator[Result]:
        """Like `ask_many`, but yields each result as soon as its batch is answered (input order).

        `total` sizes the progress bar when the caller has more records than questions.
        """
        from tqdm import tqdm

        check_top_k(top_k)
        min_confidence = self._min_confidence(min_confidence)
        checked: list[Result | str] = []
        for q in questions:
            try:
                checked.append(check_question(q))
            except InputError as exc:
                checked.append(Result(question=printable(q) if isinstance(q, str) else "", error=str(exc)))
        parts = [checked[b : b + batch_size] for b in range(0, len(checked), batch_size)]
        todos = [[q for q in part if isinstance(q, str)] for part in parts]
        total = len(questions) if total is None else total
        bar = tqdm(total=total, desc="questions", unit="q", disable=not progress, file=sys.stderr)
        bar.update(total - len(questions))
        try:
            for part, todo in zip(parts, todos, strict=True):
                found = iter(self._answer(todo, top_k, doc_id, min_confidence) if todo else [])
                for item in part:
                    result = next(found) if isinstance(item, str) else item
                    # Count it before handing it out: a consumer that has all it wants never
                    # resumes the generator, and the bar would be closed one short (N-1/N).
                    bar.update(1)
                    yield result
        finally:
            bar.close()

    def _answer(
        self, questions: list[str], top_k: int, doc_id: str | None, min_confidence: float | None
    ) -> list[Result]:
        check_doc_id(doc_id, self.documents)
        self.refresh()
        self.warm_up()  # so that `seconds` measures answering, not the first-use loading
        started = time.perf_counter()
        found = self.retriever.retrieve(questions, self.passages, doc_id=doc_id)
        pairs = [(qi, p) for qi, row in enumerate(found) for p in row]
        spans = self.reader.read([questions[qi] for qi, _ in pairs], [p.chunk.text for _, p in pairs], n_best=5)
        candidates: list[list[tuple[Span, Passage]]] = [[] for _ in questions]
        for (qi, passage), pair_spans in zip(pairs, spans, strict=True):
            candidates[qi].extend((s, passage) for s in pair_spans)
        per_question = (time.perf_counter() - started) / max(len(questions), 1)
        return [
            self._decide(q, cands, row, top_k, per_question, min_confidence)
            for q, cands, row in zip(questions, candidates, found, strict=True)
        ]

    def _decide(
        self,
        question: str,
        cands: list[tuple[Span, Passage]],
        passages: list[Passage],
        top_k: int,
        seconds: float,
        min_confidence: float | None,
    ) -> Result:
        decoded = decode(question, cands, self.documents, self._sentences, self.calibration, top_k, min_confidence)
        return Result(
            question=question,
            answers=decoded.answers,
            passages=passages,
            closest=decoded.closest,
            seconds=seconds,
            features=decoded.features,
            note=english_note(question),
        )

    # --- confidence ----------------------------------------------------------------------

    @cached_property
    def calibration(self) -> Calibration:
        """The calibration in effect (see `qa.calibration`): `--calibration`, else the one beside the
        index (none for articles held in memory), else the reader's; one fitted for another reader is
        set aside with a warning."""
        path = find_calibration(self.settings.calibration, self.index_dir, self.reader.model_name)
        if path is None:
            return Calibration.from_reader_settings(self.reader.settings)
        calibration = Calibration.load(path)
        fitted_for = calibration.reader.get("fingerprint")
        here = reader_fingerprint(self.reader.model_name) if fitted_for else None
        if fitted_for and fitted_for != here:
            if self.settings.calibration is not None:
                raise InputError(
                    f"calibration {path} was fitted for another reader ({calibration.reader.get('name')}); "
                    "run qa calibrate with this reader, or drop --calibration"
                )
            if {calibration.reader.get("name"), model_label(self.reader.model_name)} <= set(SHIPPED_READERS):
                # One shipped reader chosen over an index calibrated for the other (`--reader-model v2`
                # over the bundled index): its own calibration is the documented rule, not a surprise.
                return self._reader_calibration()
            self.log(
                f"Note: {path} was fitted for another reader ({calibration.reader.get('name')}); "
                "using the reader's own calibration instead (run qa calibrate to refit)."
            )
            return self._reader_calibration()
        return calibration

    def _reader_calibration(self) -> Calibration:
        path = Path(self.reader.model_name) / CALIBRATION_FILE
        return Calibration.load(path) if path.is_file() else Calibration.from_reader_settings(self.reader.settings)

    @property
    def min_confidence(self) -> float:
        """The confidence an answer needs: the settings' (flag, QA_MIN_CONFIDENCE), else the calibration's
        cut for the expected share of unanswerable questions (--expect-unanswerable), else its own."""
        given, share = self.settings.min_confidence, self.settings.expect_unanswerable
        if given is not None:
            return given
        return self.calibration.min_confidence if share is None else self.calibration.cut_for(share)

    def _min_confidence(self, given: float | None) -> float:
        return self.min_confidence if given is None else check_min_confidence(given)

"""Lanes on the shared server: questions keep flowing while a visitor's article is embedded or a
big batch is answered.

The page's models are one: on a small CPU machine two model runs at once only slow each other
down, so one runs at a time (`ModelGate`). What waits for it is ordered: a question (a short,
interactive job) goes before bulk work, and bulk work (embedding a pasted article, answering an
uploaded batch) holds the models only for a short slice at a time, so a question waits at most one
slice for them. Bulk work that has waited `bulk_wait` seconds gets its slice anyway, so a steady
stream of questions slows it but never stops it.

Each kind of bulk work has its own `Lane`: one job at a time, at most `queue` waiting, and any
more refused at once with one line (rather than queued for minutes behind the others). An article
whose embedding would take longer than the server's limit is refused before any work is spent
(`IndexLane.check`), with the limit and the command line that has none.

No Gradio here: the page wires these in `qa.web`; they are tested as plain objects.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qa.errors import InputError
from qa.limits import BATCH_QUEUE, BATCH_SLICE, EMBED_SLICE, INDEX_QUEUE, READ_SLICE, Busy, max_index_seconds

if TYPE_CHECKING:
    import numpy as np

    from qa.assistant import Assistant
    from qa.protocols import EmbedderLike
    from qa.types import Document

# progress(what, done, total): a line for the page while a job waits or works (total 0: no count).
Progress = Callable[[str, int, int], None]

# Bulk work that has waited this long for the models gets a slice even while questions wait.
BULK_WAIT_S = 1.0
# Chunks embedded to measure this server's rate before the first article is judged.
PROBE_CHUNKS = 8
# A waiting job reports where it stands at least this often (the page's progress line).
POLL_S = 0.5


@dataclass
class _Waiter:
    bulk: bool
    since: float
    thread: int
    ready: threading.Event = field(default_factory=threading.Event)


class ModelGate:
    """One model user at a time: questions first (in arrival order), bulk slices between them.

    Re-entrant per thread: a question's own model calls, made while its thread holds the gate,
    go straight through.
    """

    def __init__(self, bulk_wait: float = BULK_WAIT_S) -> None:
        self.bulk_wait = bulk_wait
        self._lock = threading.Lock()
        self._holder: int | None = None
        self._waiting: list[_Waiter] = []
        self._mode = threading.local()

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        """This thread's model calls are bulk work: each one takes the gate for a short slice
        (see GatedReader, SlicedEmbedder) rather than the caller holding it throughout."""
        self._mode.bulk = True
        try:
            yield
        finally:
            self._mode.bulk = False

    def in_bulk(self) -> bool:
        return getattr(self._mode, "bulk", False)

    def holds(self) -> bool:
        return self._holder == threading.get_ident()

    @contextlib.contextmanager
    def hold(self, bulk: bool = False) -> Iterator[None]:
        me = threading.get_ident()
        if self._holder == me:
            yield
            return
        waiter = _Waiter(bulk, time.monotonic(), me)
        with self._lock:
            if self._holder is None and not self._waiting:
                self._holder = me
                waiter.ready.set()
            else:
                self._waiting.append(waiter)
        waiter.ready.wait()
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            nxt = self._next()
            if nxt is None:
                self._holder = None
                return
            self._waiting.remove(nxt)
            self._holder = nxt.thread
            nxt.ready.set()  # handed over: nobody else can slip in between

    def _next(self) -> _Waiter | None:
        bulk = next((w for w in self._waiting if w.bulk), None)
        asking = next((w for w in self._waiting if not w.bulk), None)
        if asking is None or (bulk is not None and time.monotonic() - bulk.since >= self.bulk_wait):
            return bulk
        return asking

    def waiting(self) -> tuple[int, int]:
        """(questions, bulk slices) waiting for the models now."""
        with self._lock:
            bulk = sum(w.bulk for w in self._waiting)
            return len(self._waiting) - bulk, bulk


class LaneFull(Busy):
    """A lane's queue is full: the job is refused before it waits."""


class Lane:
    """Bulk work of one kind: one job at a time, at most `queue` waiting (first come, first served)."""

    def __init__(self, name: str, queue: int, busy: str) -> None:
        self.name = name
        self.queue = queue
        self.busy = busy  # what a refused visitor is told, with {ahead} and {queue}
        self._lock = threading.Lock()
        self._turns: deque[object] = deque()  # the running job first, then the waiting ones
        self._moved = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._turns)

    def room(self) -> None:
        """Raise LaneFull when a job coming now would be refused (a raw call is told before it queues)."""
        with self._lock:
            if len(self._turns) > self.queue:
                raise LaneFull(self.busy.format(ahead=len(self._turns), queue=self.queue))

    @contextlib.contextmanager
    def turn(self, waiting: Callable[[int], None] | None = None) -> Iterator[None]:
        """Run the body when this job's turn comes; `waiting(ahead)` is told while it waits."""
        me = object()
        with self._lock:
            if len(self._turns) > self.queue:
                raise LaneFull(self.busy.format(ahead=len(self._turns), queue=self.queue))
            self._turns.append(me)
        try:
            with self._lock:
                while self._turns[0] is not me:
                    ahead = self._turns.index(me)
                    if waiting is not None:
                        self._lock.release()
                        try:
                            waiting(ahead)
                        finally:
                            self._lock.acquire()
                    self._moved.wait(POLL_S)
            yield
        finally:
            with self._lock:
                self._turns.remove(me)
                self._moved.notify_all()


class SlicedEmbedder:
    """An embedder whose `encode` runs as bulk work: a few texts per slice of the gate, with the
    work done so far reported to `progress(done, total)`. Queries (a question's own vector) pass
    straight through: the question holds the gate already."""

    def __init__(
        self,
        inner: EmbedderLike,
        gate: ModelGate,
        slice_size: int = EMBED_SLICE,
        progress: Callable[[int, int], None] | None = None,
        always: bool = True,
    ) -> None:
        self.inner = inner
        self.always = always  # False: slice only in bulk work (`ModelGate.bulk`), else straight through
        self.name = inner.name
        self.gate = gate
        self.slice_size = slice_size
        self.progress = progress
        self.seconds = 0.0  # time spent embedding (holding the gate), for the lane's estimate
        self.embedded = 0

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        import numpy as np

        if self.gate.holds() or not (self.always or self.gate.in_bulk()):
            return self.inner.encode(texts, progress=progress)
        parts = []
        for start in range(0, len(texts), self.slice_size):
            with self.gate.hold(bulk=True):
                began = time.perf_counter()
                parts.append(self.inner.encode(texts[start : start + self.slice_size]))
                self.seconds += time.perf_counter() - began
            self.embedded += len(parts[-1])
            if self.progress is not None:
                self.progress(min(start + self.slice_size, len(texts)), len(texts))
        return np.concatenate(parts) if parts else self.inner.encode([])

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        with self.gate.hold(bulk=self.gate.in_bulk()):
            return self.inner.encode_queries(texts)

    def warm_up_queries(self) -> None:
        self.inner.warm_up_queries()


class GatedReader:
    """The server's reader, shared by questions and bulk work. A question calls it while holding
    the gate (straight through); in bulk work (`ModelGate.bulk`) each (question, passage) pair is
    read in a slice of its own (~50 ms on 2 cores, a third of a question), so a question waits
    at most that long for a batch. Anything else is the reader's own."""

    def __init__(self, inner: Any, gate: ModelGate) -> None:
        self.inner = inner
        self.gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read(self, questions: list[str], contexts: list[str], n_best: int = 5) -> list[Any]:
        if not self.gate.in_bulk() or self.gate.holds():
            return self.inner.read(questions, contexts, n_best=n_best)
        out: list[Any] = []
        for i in range(0, len(questions), READ_SLICE):
            with self.gate.hold(bulk=True):
                out.extend(self.inner.read(questions[i : i + READ_SLICE], contexts[i : i + READ_SLICE], n_best=n_best))
        return out


def install(assistant: Assistant, gate: ModelGate) -> None:
    """Share the server's models through `gate`: its reader, and its embedder (the retriever's
    too, which asks it for the questions' vectors). Visitors' articles share them as well."""
    reader, embedder = getattr(assistant, "reader", None), getattr(assistant, "embedder", None)
    if reader is not None:
        assistant.reader = GatedReader(reader.inner if isinstance(reader, GatedReader) else reader, gate)
    if embedder is not None:
        raw = embedder.inner if isinstance(embedder, SlicedEmbedder) else embedder
        assistant.embedder = SlicedEmbedder(raw, gate, always=False)
        retriever = getattr(assistant, "retriever", None)
        if getattr(retriever, "embedder", None) is not None:
            retriever.embedder = assistant.embedder  # type: ignore[union-attr]


class IndexLane(Lane):
    """The lane that embeds visitors' articles, and the estimate that refuses one up front."""

    def __init__(self, queue: int = INDEX_QUEUE, limit_s: float | None = None) -> None:
        super().__init__(
            "index",
            queue,
            "{ahead} visitors' articles are being indexed or waiting (this server takes 1 at a time and "
            "{queue} waiting); try again in a minute, or ask it on the command line: qa ask --article FILE",
        )
        self.limit_s = max_index_seconds() if limit_s is None else limit_s
        self.seconds_per_chunk: float | None = None  # measured on this server, from the last article

    def estimate(self, chunks: int, probe: Callable[[int], float]) -> float:
        """Seconds to embed `chunks` chunks here; `probe(n)` embeds n of them and says how long it took."""
        if self.seconds_per_chunk is None:
            n = min(chunks, PROBE_CHUNKS)
            self.seconds_per_chunk = probe(n) / max(n, 1)
        return chunks * self.seconds_per_chunk

    def check(self, name: str, characters: int, chunks: int, probe: Callable[[int], float]) -> None:
        """Refuse an article that would take longer than the limit to embed here, before the work."""
        seconds = self.estimate(chunks, probe)
        if seconds > self.limit_s:
            raise InputError(
                f"{name} ({characters:,} characters, {chunks:,} chunks) would take about {math.ceil(seconds)} s "
                f"to index on this server, over its limit of {self.limit_s:g} s; ask it on the command line "
                f'instead: qa ask --article FILE "your question"'
            )

    def measured(self, embedder: SlicedEmbedder) -> None:
        """Keep the rate of a whole article's embedding, for the next estimate."""
        if embedder.embedded >= EMBED_SLICE:
            self.seconds_per_chunk = embedder.seconds / embedder.embedded

    def index(
        self, server: Assistant, document: Document, gate: ModelGate, progress: Progress | None = None
    ) -> Assistant:
        """The visitor's article indexed in this lane: refused up front when it would take longer
        than the limit or the lane is full, else embedded a slice at a time with its progress shown."""
        from qa.handlers import index_article

        tell = progress or (lambda what, done, total: None)
        size, overlap = server.settings.chunk_size, server.settings.chunk_overlap
        chunks = max(1, math.ceil((len(document.text) - overlap) / (size - overlap)))
        step = size - overlap

        def probe(n: int) -> float:
            pieces = SlicedEmbedder(server.embedder, gate)
            pieces.encode([document.text[i * step : i * step + size] for i in range(n)])
            return pieces.seconds

        name = document.doc_id
        if self.seconds_per_chunk is not None:  # known: refuse before queueing
            self.check(name, len(document.text), chunks, probe)
        waiting = f"Waiting to index {name}: " + "{ahead} article(s) ahead of it"
        with self.turn(lambda ahead: tell(waiting.format(ahead=ahead), 0, 0)):
            self.check(name, len(document.text), chunks, probe)
            embedder = SlicedEmbedder(
                server.embedder, gate, progress=lambda done, total: tell(f"Embedding {name}", done, total)
            )
            own = index_article(server, document, embedder)
            embedder.progress = None  # the article is indexed; its questions report nothing
            self.measured(embedder)
        return own


def batch_lane(queue: int = BATCH_QUEUE) -> Lane:
    return Lane(
        "batch",
        queue,
        "{ahead} question files are being answered or waiting (this server takes 1 at a time and {queue} "
        "waiting); try again in a minute, or answer it on the command line: qa batch FILE",
    )


def sliced(gate: ModelGate, answer: Callable[..., list[Any]], slice_size: int = BATCH_SLICE) -> Callable[..., list]:
    """`answer(assistant, items, **options)` (qa.batch.answer_items) run as bulk work: a few items
    at a time, their reading a pair at a time (GatedReader), the records in the items' order."""

    def run(assistant: Any, items: list[Any], **options: Any) -> list[Any]:
        out: list[Any] = []
        with gate.bulk():
            for start in range(0, len(items), slice_size):
                out.extend(answer(assistant, items[start : start + slice_size], **options))
        return out

    return run

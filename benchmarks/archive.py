"""The archive benchmark: article-qa against Haystack over a folder of SQuAD articles, at several sizes.

Run from the repository root (the benchmark extra installs Haystack):

    pip install -e '.[bench]'
    python benchmarks/archive.py --articles 1,50,480 [--questions 1000] [--seed 0] [--skip-haystack] [--json OUT]

For each N of --articles, the first N articles of the shared SQuAD data (../shared/data/squad/:
squad-train-442.json, then squad-train-38.json; 480 in all) are written to a temporary folder as plain
text, one file per article, paragraphs joined by a blank line. Up to --questions of their questions
are sampled (seeded; answerable and unanswerable as the data has them) and asked over the whole folder,
so each system must find the right article itself. The gold of a question is its answer texts and its
paragraph: the article's file and the paragraph's characters in it.

article-qa: `qa index FOLDER --index-dir IDX` in a subprocess (wall time, peak RSS, size on disk), a fresh
`qa ask` over that index (peak RSS while answering), then in this process `Assistant`: warm latency one
question at a time, batch throughput with `ask_many`, and quality over every question (EM/F1, abstention
precision and recall through qa.evaluate; recall@k = answerable questions whose gold paragraph overlaps a
passage read); last, one article gets one more sentence and `qa index` runs again (the incremental
rebuild, against the full build: the issue asks for <= 15%).

Haystack 3 (in a subprocess of its own, so its peak RSS is its own): the articles split as
benchmarks/bench.py splits them, embedded into an InMemoryDocumentStore, then SentenceTransformersTextEmbedder
-> InMemoryEmbeddingRetriever(top_k = the passages article-qa reads) -> TransformersExtractiveReader, the
same two model folders; the same figures.

The reader was trained on 476 of the 480 articles (all but its 4 validation articles), so EM/F1 here
overstate what it does on unseen text; the comparison with Haystack (the same reader) is what they are for.
Progress goes to stderr, one table per N to stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# benchmarks/ is not a package: bench.py (its helpers, and its environment defaults: offline, no
# telemetry) is imported from beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import (
    HAYSTACK_SPLIT_LENGTH,
    HAYSTACK_SPLIT_OVERLAP,
    CpuWatch,
    fmt,
    haystack_query_pipeline,
    machine_line,
    qa_command,
    versions,
)

from qa.metrics import percentile

ROOT = Path(__file__).resolve().parent.parent
SQUAD_DIR = ROOT.parent / "shared" / "data" / "squad"
SQUAD_FILES = ("squad-train-442.json", "squad-train-38.json")  # in this order: "the first N articles"
WARM_UNTIMED = 3  # questions asked before the latency is timed (first-call costs)
WARM_TIMED = 100  # latency over the first min(100, n) questions
TARGET_REINDEX_SHARE = 0.15  # one changed article re-indexed in <= 15% of the full build (issue 17)
APPENDED = " This sentence was added to the article to measure the cost of re-indexing one changed file."

# Runs one command, then writes its exit status, wall time and peak RSS to argv[1]. Linux carries a
# process's RSS high-water mark into a child across fork and exec, so a command spawned from this
# benchmark (the SQuAD data and, later, both models in memory) would report this process's peak as its
# own; spawned from this small interpreter it starts from ~10 MB.
_MEASURE = """
import json, os, subprocess, sys, time
t = time.perf_counter()
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
wall = time.perf_counter() - t
out = {"rc": os.waitstatus_to_exitcode(status), "wall_s": wall, "peak_rss_mb": usage.ru_maxrss * 1024 / 1e6}
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


def log(msg: str) -> None:
    print(f"[archive {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the archive --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldQuestion:
    id: str
    question: str
    answers: list[str]  # empty: the article does not answer it
    file: str  # the article's file name in the folder (article-qa's doc_id)
    start: int  # the paragraph's characters in that file, end exclusive
    end: int
    held_out: bool  # from one of the reader's validation articles (never trained on)


def load_articles() -> list[dict[str, Any]]:
    """Every article of both SQuAD files, in file order (read in place, never copied into the repo)."""
    articles: list[dict[str, Any]] = []
    for name in SQUAD_FILES:
        path = SQUAD_DIR / name
        if not path.is_file():
            raise SystemExit(f"archive: {path} not found; the shared SQuAD data belongs in {SQUAD_DIR}")
        articles += json.loads(path.read_text(encoding="utf-8"))["data"]
    return articles


def file_name(i: int, title: str) -> str:
    # Numbered so that the folder lists in data order; titles may hold characters a file name should not.
    safe = re.sub(r"[^\w.-]+", "_", title)[:80]
    return f"{i + 1:03d}-{safe}.txt"


def write_archive(articles: Sequence[dict[str, Any]], folder: Path) -> list[GoldQuestion]:
    """Write the articles as plain-text files; every question of them, with its paragraph's place."""
    from qa.training.config import VALIDATION_ARTICLES

    folder.mkdir(parents=True)
    questions: list[GoldQuestion] = []
    for i, article in enumerate(articles):
        name, parts, offset = file_name(i, article["title"]), [], 0
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            start, end = offset, offset + len(context)
            parts.append(context)
            offset = end + 2  # the blank line between paragraphs
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else list(dict.fromkeys(a["text"] for a in qa["answers"]))
                held_out = article["title"] in VALIDATION_ARTICLES
                questions.append(GoldQuestion(str(qa["id"]), qa["question"], answers, name, start, end, held_out))
        # newline="" and UTF-8: the file holds exactly these characters, so the offsets index it.
        with (folder / name).open("w", encoding="utf-8", newline="") as f:
            f.write("\n\n".join(parts))
    return questions


def gold_items(questions: Sequence[GoldQuestion]) -> list[Any]:
    """The questions as qa.evaluate's gold items, so EM/F1 and abstention are scored as `qa eval` scores them."""
    from qa.evaluate import GoldItem

    return [GoldItem(q.id, q.question, q.answers, i + 1) for i, q in enumerate(questions)]


# --- measuring a subprocess -----------------------------------------------------------------------


@dataclass
class Measured:
    rc: int
    wall_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str

    def check(self, what: str) -> Measured:
        if self.rc != 0:
            raise SystemExit(f"archive: {what} failed (exit {self.rc}): {self.stderr.strip()[-800:]}")
        return self


def measured_run(cmd: Sequence[str], show_stderr: bool = False, env: dict[str, str] | None = None) -> Measured:
    """Run `cmd` through the small _MEASURE interpreter: its wall time and its own peak RSS.

    `show_stderr` passes the command's stderr through to ours (a long worker's progress lines), uncaptured.
    """
    with tempfile.TemporaryDirectory(prefix="qa-archive-run-") as tmp:
        stats, out_path, err_path = Path(tmp) / "stats.json", Path(tmp) / "out", Path(tmp) / "err"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            subprocess.run(
                [sys.executable, "-c", _MEASURE, str(stats), *cmd],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=None if show_stderr else err,
                env=env,
                check=False,
            )
        stdout = out_path.read_text(encoding="utf-8", errors="replace")
        stderr = err_path.read_text(encoding="utf-8", errors="replace")
        if not stats.is_file():
            return Measured(-1, float("nan"), float("nan"), stdout, stderr)
        raw = json.loads(stats.read_text(encoding="utf-8"))
        return Measured(raw["rc"], raw["wall_s"], raw["peak_rss_mb"], stdout, stderr)


def size_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --- the figures ----------------------------------------------------------------------------------


@dataclass
class SystemRun:
    """One system at one size: timings, memory, and what it said and read for each question."""

    name: str
    index_s: float = float("nan")
    index_rss_mb: float = float("nan")
    index_bytes: int | None = None
    index_note: str = ""  # how the size on disk was taken, or why there is none
    setup_note: str = ""  # how it ran, for the report
    units: int = 0  # chunks (article-qa) or split documents (Haystack)
    load_s: float = float("nan")
    ask_rss_mb: float = float("nan")
    ask_rss_note: str = ""
    latencies_s: list[float] = field(default_factory=list)
    batch_s: float = float("nan")
    records: list[Any] = field(default_factory=list)  # qa.evaluate.QuestionRecord, one a question
    read: list[list[tuple[str, int, int]]] = field(default_factory=list)  # (file, start, end) of passages read
    reindex_s: float | None = None
    reindex_note: str = ""
    error: str | None = None

    @property
    def throughput(self) -> float:
        return len(self.records) / self.batch_s if self.records and self.batch_s else float("nan")

    def ms(self, q: float) -> float:
        return (percentile(self.latencies_s, q) or float("nan")) * 1000


def paragraph_recall(questions: Sequence[GoldQuestion], read: Sequence[Sequence[tuple[str, int, int]]]) -> float | None:
    """Share of answerable questions whose gold paragraph overlaps a passage read (same file, ranges overlap)."""
    hits = total = 0
    for item, q, passages in zip(gold_items(questions), questions, read, strict=True):
        if not item.answerable:  # the same rule as qa.evaluate: an answer that normalises to nothing is none
            continue
        total += 1
        hits += any(f == q.file and s < q.end and q.start < e for f, s, e in passages)
    return hits / total if total else None


def quality(run: SystemRun, questions: Sequence[GoldQuestion], k: int) -> dict[str, float | None]:
    from qa.evaluate import abstention_precision, abstention_recall, exact_match, f1_score, recall_at

    r = run.records
    return {
        "em": exact_match(r),
        "f1": f1_score(r),
        "abstain_precision": abstention_precision(r),
        "abstain_recall": abstention_recall(r),
        "recall_k": paragraph_recall(questions, run.read),
        "answer_recall_k": recall_at(r, k),
        "answered": float(sum(not x.abstained for x in r)),
    }


def time_one_at_a_time(ask: Callable[[str], Any], questions: Sequence[str], label: str) -> list[float]:
    """A few untimed questions (first-call costs), then the first min(100, n) one at a time."""
    for q in questions[:WARM_UNTIMED]:
        ask(q)
    timed = questions[:WARM_TIMED]
    latencies = []
    for q in timed:
        t0 = time.perf_counter()
        ask(q)
        latencies.append(time.perf_counter() - t0)
    log(f"{label}: {len(timed)} questions one at a time, p50 {(percentile(latencies, 50) or 0) * 1000:.0f} ms")
    return latencies


# --- article-qa -----------------------------------------------------------------------------------


def index_article_qa(folder: Path, index: Path, run: SystemRun) -> None:
    """`qa index` in a subprocess, then a fresh `qa ask` over the index for the memory of answering."""
    log(f"article-qa: qa index {folder.name}/ (embeds every chunk; the long phase)")
    built = measured_run([*qa_command(), "index", str(folder), "--index-dir", str(index)]).check("qa index")
    run.index_s, run.index_rss_mb, run.index_bytes = built.wall_s, built.peak_rss_mb, size_on_disk(index)
    log(f"article-qa: {built.stdout.strip()} ({built.wall_s:.1f} s, peak RSS {built.peak_rss_mb:.0f} MB)")


def ask_rss_article_qa(folder: Path, index: Path, question: str, run: SystemRun) -> None:
    # One untimed run first: it fills the page cache (and the ONNX cache, if the reader was never exported).
    cmd = [*qa_command(), "ask", question, "--json", "--seeds", str(folder), "--index-dir", str(index)]
    measured_run(cmd).check("qa ask")
    asked = measured_run(cmd).check("qa ask")
    run.ask_rss_mb = asked.peak_rss_mb
    run.ask_rss_note = f"a fresh `qa ask` over the index, {asked.wall_s:.2f} s"
    log(f"article-qa: fresh qa ask {asked.wall_s:.2f} s, peak RSS {asked.peak_rss_mb:.0f} MB")


def ask_article_qa(folder: Path, index: Path, questions: Sequence[GoldQuestion], run: SystemRun) -> dict[str, Any]:
    """Load the Assistant here, then latency, throughput and every question's record; returns what it ran with."""
    from qa.assistant import Assistant
    from qa.calibration import find_calibration
    from qa.evaluate import make_record
    from qa.settings import Settings

    t0 = time.perf_counter()
    assistant = Assistant(settings=Settings.resolve(seeds=folder, index_dir=index), log=log).warm_up()
    run.load_s = time.perf_counter() - t0
    run.units = len(assistant.index.chunks)
    texts = [q.question for q in questions]
    log(f"article-qa: index ({run.units} chunks) and models loaded in {run.load_s:.1f} s")
    run.latencies_s = time_one_at_a_time(assistant.ask, texts, "article-qa")
    t0 = time.perf_counter()
    results = assistant.ask_many(texts)  # batches of 64, as `qa batch` asks them
    run.batch_s = time.perf_counter() - t0
    docs = assistant.documents
    run.records = [make_record(g, r, docs) for g, r in zip(gold_items(questions), results, strict=True)]
    log(f"article-qa: {len(texts)} questions with ask_many in {run.batch_s:.1f} s ({run.throughput:.2f} q/s)")
    run.read = [[(p.chunk.doc_id, p.chunk.start, p.chunk.end) for p in r.passages] for r in results]
    calibration = find_calibration(assistant.settings.calibration, assistant.index_dir, assistant.reader.model_name)
    return {
        "reader": assistant.reader.model_name,
        "reader_backend": getattr(assistant.reader, "backend", "?"),
        "embedder_backend": getattr(assistant.embedder, "backend", "?"),
        "retrieval": assistant.retrieval,
        "passages": assistant.passages,
        "calibration": str(calibration) if calibration else "the reader's own rule",
        "min_confidence": assistant.min_confidence,
    }


def reindex_one(folder: Path, index: Path, run: SystemRun) -> None:
    """One more sentence at the end of one article (offsets before it unchanged), then `qa index` again."""
    from qa.index import read_manifest

    files = sorted(folder.glob("*.txt"))
    target = files[len(files) // 2]
    with target.open("a", encoding="utf-8", newline="") as f:
        f.write(APPENDED)
    log(f"article-qa: re-index after appending one sentence to {target.name}")
    done = measured_run([*qa_command(), "index", str(folder), "--index-dir", str(index)]).check("qa index (again)")
    manifest = read_manifest(index)
    reused = len(manifest.reused) if manifest else 0
    run.reindex_s = done.wall_s
    run.reindex_note = f"{reused}/{len(files)} articles' vectors reused"
    log(f"article-qa: re-indexed in {done.wall_s:.1f} s ({run.reindex_note}): {done.stdout.strip()}")


# --- Haystack ---------------------------------------------------------------------------------------


def bench_haystack(folder: Path, questions: Sequence[GoldQuestion], passages: int, tmp: Path) -> SystemRun:
    """Haystack in a worker process of its own (its peak RSS is its own), scored here as article-qa is."""
    from qa.loading import resolve_embed_model, resolve_reader_model

    run = SystemRun("Haystack")
    spec, out = tmp / "haystack-spec.json", tmp / "haystack-out.json"
    spec.write_text(
        json.dumps(
            {
                "folder": str(folder),
                "questions": [q.question for q in questions],
                "passages": passages,
                "reader": resolve_reader_model(None),
                "embedder": resolve_embed_model(),
                "store": str(tmp / "haystack-store.json"),
            }
        ),
        encoding="utf-8",
    )
    log("Haystack: worker started (split, embed, write the store, then the questions)")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--haystack-worker", str(spec), str(out)]
    # torch's threads wait passively, as `qa` runs torch: spinning threads on a shared 2-core machine made
    # Haystack's questions several times slower than it is idle. No weight-loading progress bars in the log.
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    run.setup_note = (
        f"DocumentSplitter(split_by='period', split_length={HAYSTACK_SPLIT_LENGTH}, "
        f"split_overlap={HAYSTACK_SPLIT_OVERLAP}) -> InMemoryEmbeddingRetriever(top_k={passages}) -> "
        "TransformersExtractiveReader(top_k=1, no_answer=True), same embedder and reader folders, fp32 torch, "
        f"cpu, OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}"
    )
    done = measured_run(cmd, show_stderr=True, env=env)
    if done.rc != 0 or not out.is_file():
        run.error = f"worker exit {done.rc} (its stderr is above)"
        log(f"Haystack: {run.error}")
        return run
    raw = json.loads(out.read_text(encoding="utf-8"))
    run.index_s, run.index_rss_mb, run.units = raw["index_s"], raw["index_rss_mb"], raw["docs"]
    run.load_s = raw["load_s"]
    run.index_bytes, run.index_note = raw["store_bytes"], raw["store_note"]
    run.ask_rss_mb = done.peak_rss_mb
    run.ask_rss_note = "the worker's peak: its store is in memory, so indexing and answering share one process"
    run.latencies_s, run.batch_s = raw["latencies_s"], raw["batch_s"]
    run.records = [haystack_record(g, a) for g, a in zip(gold_items(questions), raw["answers"], strict=True)]
    run.read = [[(f, s, e) for f, s, e, _ in a["passages"]] for a in raw["answers"]]
    run.reindex_note = "no incremental update: the in-memory store is rebuilt"
    return run


def haystack_record(item: Any, answer: dict[str, Any]) -> Any:
    """A Haystack answer as a qa.evaluate QuestionRecord (EM/F1 by qa.metrics, gold rank over the passages)."""
    from qa.evaluate import QuestionRecord, gold_rank
    from qa.metrics import score_one

    prediction = answer["text"]
    em, f1 = score_one(item.answers, prediction or "")
    texts = [t for _, _, _, t in answer["passages"]]
    return QuestionRecord(
        id=item.id,
        question=item.question,
        gold=item.answers,
        prediction=prediction,
        abstained=prediction is None,
        em=float(em),
        f1=float(f1),
        gold_rank=gold_rank(texts, item.answers) if item.answerable else None,
    )


def haystack_worker(spec_path: Path, out_path: Path) -> int:
    """The --haystack-worker process: index the folder into Haystack, ask, write the raw figures as JSON."""
    t0 = time.perf_counter()  # index time from here: imports and model loading count, as in `qa index`
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    store, docs = haystack_store(Path(spec["folder"]), spec["embedder"])
    index_s = time.perf_counter() - t0
    index_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    log(f"Haystack: {docs} documents embedded and stored in {index_s:.1f} s")
    store_bytes, store_note = None, "in memory"
    if hasattr(store, "save_to_disk"):
        store.save_to_disk(spec["store"])  # not timed: Haystack's store needs no file to answer
        store_bytes, store_note = Path(spec["store"]).stat().st_size, "InMemoryDocumentStore.save_to_disk"
    t1 = time.perf_counter()
    ask = haystack_pipeline(store, spec["reader"], spec["embedder"], spec["passages"])
    load_s = time.perf_counter() - t1
    questions = spec["questions"]
    latencies = time_one_at_a_time(ask, questions, "Haystack")
    t2 = time.perf_counter()
    answers = [ask(q) for q in questions]  # Pipeline.run in a loop: Haystack's reader takes one query a run
    batch_s = time.perf_counter() - t2
    log(f"Haystack: {len(questions)} questions in a loop in {batch_s:.1f} s ({len(questions) / batch_s:.2f} q/s)")
    raw = {
        "index_s": index_s,
        "index_rss_mb": index_rss_mb,
        "docs": docs,
        "store_bytes": store_bytes,
        "store_note": store_note,
        "load_s": load_s,
        "latencies_s": latencies,
        "batch_s": batch_s,
        "answers": answers,
    }
    out_path.write_text(json.dumps(raw), encoding="utf-8")
    return 0


def haystack_store(folder: Path, embed_path: str) -> tuple[Any, int]:
    """The folder's articles split as bench.py splits them, embedded into an InMemoryDocumentStore."""
    from haystack import Document
    from haystack.components.preprocessors import DocumentSplitter
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack.utils import ComponentDevice
    from haystack_integrations.components.embedders.sentence_transformers import (
        SentenceTransformersDocumentEmbedder,
    )

    from qa.documents import load_documents

    # The same files, read as article-qa reads them; doc_id is the file name, as article-qa's.
    articles = [Document(content=d.text, meta={"doc_id": d.doc_id}) for d in load_documents(folder)]
    splitter = DocumentSplitter(
        split_by="period", split_length=HAYSTACK_SPLIT_LENGTH, split_overlap=HAYSTACK_SPLIT_OVERLAP
    )
    docs = splitter.run(documents=articles)["documents"]
    embedder = SentenceTransformersDocumentEmbedder(
        model=embed_path,
        device=ComponentDevice.from_str("cpu"),
        normalize_embeddings=True,
        progress_bar=False,
        local_files_only=True,
    )
    embedder.warm_up()
    store = InMemoryDocumentStore(embedding_similarity_function="dot_product")
    store.write_documents(embedder.run(documents=docs)["documents"])
    return store, len(docs)


def haystack_pipeline(store: Any, reader_path: str, embed_path: str, passages: int) -> Callable[[str], dict[str, Any]]:
    """bench.py's pipeline over `store`; the returned `ask` gives the answer and the passages read."""
    pipe = haystack_query_pipeline(store, reader_path, embed_path, passages)

    def ask(q: str) -> dict[str, Any]:
        out = pipe.run({"embedder": {"text": q}, "reader": {"query": q}}, include_outputs_from={"retriever"})
        read = [
            [d.meta["doc_id"], d.meta["split_idx_start"], d.meta["split_idx_start"] + len(d.content or ""), d.content]
            for d in out["retriever"]["documents"]
        ]
        answers = out["reader"]["answers"]
        top = answers[0] if answers else None
        text = None if top is None or top.data is None else top.data
        return {"text": text, "passages": read}

    return ask


# --- one size -------------------------------------------------------------------------------------


@dataclass
class SizeRun:
    n: int
    paragraphs: int
    pool: int  # questions of those articles, before sampling
    questions: list[GoldQuestion]
    ours: SystemRun
    hay: SystemRun | None
    setup: dict[str, Any]
    k: int
    phases: dict[str, float]  # seconds per phase, for estimating larger runs
    load_before: float
    others: float | None
    cores: int


def bench_size(n: int, articles: Sequence[dict[str, Any]], args: argparse.Namespace) -> SizeRun:
    from qa.settings import Settings

    watch, load_before = CpuWatch(), os.getloadavg()[0]
    phases: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="qa-archive-") as tmp_name:
        tmp = Path(tmp_name)
        folder, index = tmp / "articles", tmp / "index"
        t = time.perf_counter()
        pool = write_archive(articles[:n], folder)
        questions = random.Random(args.seed).sample(pool, min(args.questions, len(pool)))
        phases["write"] = time.perf_counter() - t
        paragraphs = sum(len(a["paragraphs"]) for a in articles[:n])
        log(f"{n} article(s), {paragraphs} paragraphs written; {len(questions)} of {len(pool)} questions sampled")
        ours = SystemRun("article-qa")
        index_article_qa(folder, index, ours)
        phases["qa index"] = ours.index_s
        k = Settings.resolve(seeds=folder, index_dir=index).passages  # what article-qa reads; Haystack's top_k
        t = time.perf_counter()
        ask_rss_article_qa(folder, index, questions[0].question, ours)
        phases["fresh qa ask x2"] = time.perf_counter() - t
        t = time.perf_counter()
        setup = ask_article_qa(folder, index, questions, ours)
        phases["article-qa asking"] = time.perf_counter() - t
        gc.collect()  # the assistant (models, index) goes before Haystack loads beside this process
        hay = None
        if not args.skip_haystack:
            t = time.perf_counter()
            hay = bench_haystack(folder, questions, k, tmp)
            phases["Haystack worker"] = time.perf_counter() - t
        reindex_one(folder, index, ours)  # last: it changes an article
        phases["qa index again"] = ours.reindex_s or float("nan")
    _, cores = machine_line()
    return SizeRun(
        n, paragraphs, len(pool), questions, ours, hay, setup, k, phases, load_before, watch.others_share(cores), cores
    )


# --- the report -----------------------------------------------------------------------------------


def pct(x: float | None) -> str:
    return "—" if x is None or x != x else f"{100 * x:.1f}"


def mb(b: int | None, note: str = "") -> str:
    if b is None:
        return note or "—"
    return f"{b / 1e6:.1f}"


def reindex_share(articles: int, reindex_s: float | None, index_s: float | None) -> tuple[float | None, bool]:
    """(re-index time / full build time, whether the changed article was the folder's only one);
    the share is None when either time is missing."""
    share = reindex_s / index_s if reindex_s and index_s else None
    return share, articles < 2


def rows(r: SizeRun) -> list[list[str]]:
    """metric | article-qa | Haystack | note"""
    o, h = r.ours, r.hay
    qo, qh = quality(o, r.questions, r.k), (quality(h, r.questions, r.k) if h and not h.error else None)

    def hv(f: Callable[[SystemRun], str]) -> str:
        return "—" if h is None or h.error else f(h)

    share, only = reindex_share(r.n, o.reindex_s, o.index_s)
    if share is None:
        ok = "n/a"
    elif only:
        ok = "n/a: the only article changed, so a full build is right"
    else:
        ok = "PASS" if share <= TARGET_REINDEX_SHARE else "MISS"
    return [
        ["index build (s)", fmt(o.index_s, ".1f"), hv(lambda x: fmt(x.index_s, ".1f")),
         "wall; Haystack: from its imports"],
        ["index units", str(o.units), hv(lambda x: str(x.units)), "chunks / split documents"],
        ["index size on disk (MB)", mb(o.index_bytes), hv(lambda x: mb(x.index_bytes, x.index_note)),
         "files under --index-dir / the save_to_disk JSON"],
        ["peak RSS, indexing (MB)", fmt(o.index_rss_mb, ".0f"), hv(lambda x: fmt(x.index_rss_mb, ".0f")), ""],
        ["peak RSS, answering (MB)", fmt(o.ask_rss_mb, ".0f"), hv(lambda x: fmt(x.ask_rss_mb, ".0f")),
         "a fresh `qa ask` / the Haystack worker"],
        ["re-index, one article changed (s)", fmt(o.reindex_s, ".1f"), "—", o.reindex_note],
        ["  share of the full build", pct(share) + ("%" if share is not None else ""), "—",
         f"<= {TARGET_REINDEX_SHARE:.0%}: {ok}"],
        ["load index + models (s)", fmt(o.load_s, ".1f"), hv(lambda x: fmt(x.load_s, ".1f")), ""],
        ["warm latency p50 (ms)", fmt(o.ms(50), ".0f"), hv(lambda x: fmt(x.ms(50), ".0f")),
         f"{len(o.latencies_s)} questions, one at a time"],
        ["warm latency p95 (ms)", fmt(o.ms(95), ".0f"), hv(lambda x: fmt(x.ms(95), ".0f")), ""],
        ["batch throughput (q/s)", fmt(o.throughput, ".2f"), hv(lambda x: fmt(x.throughput, ".2f")),
         "ask_many (batches of 64) / Pipeline.run in a loop"],
        ["EM", pct(qo["em"]), pct(qh and qh["em"]), "SQuAD v2.0, all questions"],
        ["F1", pct(qo["f1"]), pct(qh and qh["f1"]), ""],
        ["abstention precision", pct(qo["abstain_precision"]), pct(qh and qh["abstain_precision"]), ""],
        ["abstention recall", pct(qo["abstain_recall"]), pct(qh and qh["abstain_recall"]), ""],
        [f"recall@{r.k}: gold paragraph read", pct(qo["recall_k"]), pct(qh and qh["recall_k"]),
         "same file, overlapping characters"],
        [f"recall@{r.k}: gold answer text read", pct(qo["answer_recall_k"]), pct(qh and qh["answer_recall_k"]),
         "qa eval's R@k (any article)"],
        ["answered", fmt(qo["answered"], ".0f"), fmt(qh and qh["answered"], ".0f"), f"of {len(r.questions)}"],
    ]  # fmt: skip


def table(body: list[list[str]]) -> list[str]:
    header = ["metric", "article-qa", "Haystack", "note"]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    align = ["<", ">", ">", "<"]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(format(c, f"{a}{w}") for c, a, w in zip(cells, align, widths, strict=True)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(row) for row in body)]


def report(r: SizeRun) -> str:
    qs = r.questions
    items = gold_items(qs)
    answerable = sum(g.answerable for g in items)
    held_out = sum(q.held_out for q in qs)
    s = r.setup
    lines = [
        f"== {r.n} article(s): {r.paragraphs} paragraphs; {len(qs)} of their {r.pool} questions "
        f"({answerable} answerable, {len(qs) - answerable} not; {held_out} from the reader's 4 validation articles)",
        f"article-qa: reader on {s['reader_backend']}, query embedder on {s['embedder_backend']}, "
        f"{s['retrieval']} retrieval, {s['passages']} passages a question, calibration {s['calibration']} "
        f"(min confidence {s['min_confidence']:.2f})",
    ]
    # The CPU share of other processes, measured during the run, decides; the load average is only
    # a fallback, since before a second size it still counts this benchmark's own previous size.
    busy = r.others > 0.10 if r.others is not None else r.load_before > 0.5 * max(r.cores, 1)
    others = "unknown" if r.others is None else f"{r.others:.0%}"
    lines.append(f"other processes used {others} of the CPU (load average {r.load_before:.2f} at the start)")
    if busy:
        lines.append("WARNING: the machine was busy while measuring; timings are inflated, rerun on an idle machine.")
    if r.hay is not None:
        lines.append(f"Haystack: {r.hay.setup_note}")
        if r.hay.error:
            lines.append(f"Haystack failed: {r.hay.error}")
    lines += ["", *table(rows(r)), ""]
    lines += timing_lines(r)
    return "\n".join(lines)


def timing_lines(r: SizeRun) -> list[str]:
    """Where the wall time went, per phase and per article / question: for sizing a larger run."""
    o, h, n, q = r.ours, r.hay, r.n, len(r.questions)
    phases = ", ".join(f"{k} {v:.1f}" for k, v in r.phases.items())
    lines = [
        f"phases (s): {phases}",
        f"article-qa: index {o.index_s / n:.2f} s an article ({1000 * o.index_s / max(o.units, 1):.0f} ms a chunk); "
        f"asking {r.phases['article-qa asking'] / q:.3f} s a question (load, {len(o.latencies_s) + WARM_UNTIMED} "
        "single questions, then all in batches)",
    ]
    if h is not None and not h.error:
        asking = r.phases["Haystack worker"] - h.index_s
        lines.append(
            f"Haystack: index {h.index_s / n:.2f} s an article ({1000 * h.index_s / max(h.units, 1):.0f} ms a "
            f"document); asking {asking / q:.3f} s a question (store save, load, single questions, then all in a loop)"
        )
    return lines


def raw_figures(r: SizeRun) -> dict[str, Any]:
    """The figures of one size for --json, with each question's answer and passages read."""

    def side(run: SystemRun | None) -> dict[str, Any] | None:
        if run is None:
            return None
        figures = {k: v for k, v in asdict(run).items() if k not in ("records", "read")}
        figures["p50_ms"], figures["p95_ms"], figures["throughput_qps"] = run.ms(50), run.ms(95), run.throughput
        figures["quality"] = quality(run, r.questions, r.k) if run.records else None
        figures["answers"] = [
            {"id": rec.id, "prediction": rec.prediction, "f1": rec.f1, "read": read}
            for rec, read in zip(run.records, run.read, strict=True)
        ]
        return figures

    return {
        "articles": r.n,
        "paragraphs": r.paragraphs,
        "question_pool": r.pool,
        "questions": [asdict(q) for q in r.questions],
        "k": r.k,
        "article_qa_setup": r.setup,
        "article_qa": side(r.ours),
        "haystack": side(r.hay),
        "phases_s": r.phases,
        "load_average_before": r.load_before,
        "others_cpu_share": r.others,
    }


def markdown_summary(sizes: Sequence[dict[str, Any]]) -> str:
    """The README's table: article-qa / Haystack side by side at every size, from `raw_figures` dicts
    (so `--summary RUN.json` redraws it from a saved run without measuring again)."""

    def cell(size: dict[str, Any], get: Callable[[dict[str, Any]], Any], spec: str, unit: str = "") -> str:
        def one(side: dict[str, Any] | None) -> str:
            if side is None or side.get("error"):
                return "—"
            value = get(side)
            return "—" if value is None or value != value else f"{format(value, spec)}{unit}"

        return f"{one(size['article_qa'])} / {one(size['haystack'])}"

    def q(key: str, scale: float = 100.0) -> Callable[[dict[str, Any]], Any]:
        def get(side: dict[str, Any]) -> float | None:
            value = (side.get("quality") or {}).get(key)
            return None if value is None else scale * value

        return get

    def reindex(size: dict[str, Any]) -> str:
        ours = size["article_qa"]
        share, only = reindex_share(size["articles"], ours.get("reindex_s"), ours.get("index_s"))
        if share is None:
            return "—"
        what = "the only article: a full build" if only else f"{100 * share:.1f}% of the build"
        return f"{ours['reindex_s']:.1f} s ({what})"

    k = sizes[0]["k"] if sizes else 3
    metrics: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("questions (answerable / not)", lambda s: (
            f"{len(s['questions'])} ({sum(bool(x['answers']) for x in s['questions'])} / "
            f"{sum(not x['answers'] for x in s['questions'])})")),
        ("index units: chunks / documents", lambda s: cell(s, lambda d: d["units"], ",")),
        ("index build (s)", lambda s: cell(s, lambda d: d["index_s"], ",.1f")),
        ("index size on disk (MB)", lambda s: cell(s, lambda d: d["index_bytes"] and d["index_bytes"] / 1e6, ".1f")),
        ("peak RSS indexing (MB)", lambda s: cell(s, lambda d: d["index_rss_mb"], ",.0f")),
        ("peak RSS answering (MB)", lambda s: cell(s, lambda d: d["ask_rss_mb"], ",.0f")),
        ("re-index, one article changed (article-qa)", reindex),
        ("warm p50 / question (ms)", lambda s: cell(s, lambda d: d["p50_ms"], ".0f")),
        ("warm p95 / question (ms)", lambda s: cell(s, lambda d: d["p95_ms"], ".0f")),
        ("batch (q/s)", lambda s: cell(s, lambda d: d["throughput_qps"], ".1f")),
        ("EM", lambda s: cell(s, q("em"), ".1f")),
        ("F1", lambda s: cell(s, q("f1"), ".1f")),
        ("abstention precision", lambda s: cell(s, q("abstain_precision"), ".1f", "%")),
        ("abstention recall", lambda s: cell(s, q("abstain_recall"), ".1f", "%")),
        (f"recall@{k}: gold paragraph read", lambda s: cell(s, q("recall_k"), ".1f", "%")),
        ("answered", lambda s: cell(s, q("answered", 1.0), ".0f")),
    ]  # fmt: skip
    head = ["article-qa / Haystack", *(f"{s['articles']} article{'s' if s['articles'] > 1 else ''}" for s in sizes)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([name, *(get(s) for s in sizes)]) + " |" for name, get in metrics]
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a comma list of article counts, got {text!r}") from exc
    if not sizes or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"expected article counts of at least 1, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=parse_sizes, default=[1, 50, 480], help="Sizes, e.g. 1,50,480.")
    parser.add_argument("--questions", type=int, default=1000, help="Questions sampled per size (default 1000).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the question sample (default 0).")
    parser.add_argument("--skip-haystack", action="store_true", help="Measure article-qa only.")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="Also write the raw figures here.")
    parser.add_argument(
        "--summary",
        type=Path,
        default=None,
        metavar="RUN.json",
        help="Only print the Markdown table of a run saved with --json; measures nothing.",
    )
    parser.add_argument("--haystack-worker", nargs=2, type=Path, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.haystack_worker:
        return haystack_worker(*args.haystack_worker)
    if args.summary:
        try:
            saved = json.loads(args.summary.read_text(encoding="utf-8"))
            print(markdown_summary(saved["sizes"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"cannot read a run saved with --json from {args.summary}: {exc}")
        return 0
    if args.questions < 1:
        parser.error("--questions must be at least 1")

    t = time.perf_counter()
    articles = load_articles()
    if max(args.articles) > len(articles):
        parser.error(f"the shared SQuAD data has {len(articles)} articles; --articles asks for {max(args.articles)}")
    log(f"{len(articles)} SQuAD articles read in {time.perf_counter() - t:.1f} s")
    command = " ".join(["python", "benchmarks/archive.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"article-qa archive benchmark\ncommand: {command}\n{machine_line()[0]}\n{versions()}\n", flush=True)
    results = []
    for n in args.articles:
        results.append(bench_size(n, articles, args))
        print(report(results[-1]) + "\n", flush=True)
    sizes = [raw_figures(r) for r in results]
    print("Markdown (the README's table):\n" + markdown_summary(sizes), flush=True)
    if args.json_out:
        out = {"command": command, "machine": machine_line()[0], "versions": versions(), "sizes": sizes}
        args.json_out.write_text(json.dumps(out, indent=1, ensure_ascii=False), encoding="utf-8")
        log(f"raw figures written to {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

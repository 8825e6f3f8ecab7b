"""Benchmark article-qa on the bundled article, per inference backend, side by side with Haystack.

Run from the repository root (the benchmark extra installs Haystack and psutil):

    pip install -e '.[bench]'
    HF_HUB_OFFLINE=1 python benchmarks/bench.py [--repeats N] [--backends onnx,torch] [--skip-haystack]

It builds its own index in a temporary folder (the repo's index/ is never touched), then measures, for
each article-qa backend of `--backends` (ONNX Runtime, torch), one after the other:

* cold start: wall time of a fresh `qa ask "..."` subprocess over the ready index with QA_BACKEND set
  (median of `--cold-runs`, after one untimed run that fills the ONNX cache and the page cache), and
  the peak RSS of that subprocess (from wait4's rusage); all cold starts run before any model loads here;
* warm latency: `Assistant.ask` one question at a time, after warm-up, every question `--repeats` times;
* batch throughput: `Assistant.ask_many` over the questions x4 as one batch, median of `--repeats` runs;
* where the warm question's time goes (benchmarks/stages.py), against this machine's matmul peak;

then the same latency and throughput for a Haystack pipeline (SentenceTransformersTextEmbedder ->
InMemoryEmbeddingRetriever -> TransformersExtractiveReader) with the same embedder and reader folders,
documents split by "period" (its sentence splitter needs NLTK data that cannot be downloaded offline);
how often each backend gives the same answer span as Haystack (or both abstain), and whether the
backends give the same answer text as torch (the issue asks for >= 98%).

Progress goes to stderr, the table to stdout. Timings are only meaningful on an otherwise idle machine:
the table warns when other work ran during the measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Before anything imports huggingface_hub / haystack: no network here, no telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# benchmarks/ is not a package: stages.py (the per-stage breakdown) is imported from beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import stages

from qa.metrics import percentile

ROOT = Path(__file__).resolve().parent.parent
ARTICLE = ROOT / "seeds" / "pentagon-ukraine-long-range-strikes.txt"
QUESTIONS = Path(__file__).resolve().parent / "questions.txt"
BACKENDS = ("onnx", "torch", "auto")  # what --backends accepts (qa.settings.BACKENDS)
REFERENCE_BACKEND = "torch"  # the fallback: the other backends' answers are compared with its answers

# Targets from the issue (the machine it runs on, in one run with the same models).
TARGET_P50_RATIO = 5.0  # warm p50 at least 5x Haystack's
TARGET_THROUGHPUT_RATIO = 8.0  # batch throughput at least 8x Haystack's
TARGET_COLD_S = 3.0  # cold `qa ask`, index built
TARGET_RSS_MB = 1000.0  # 1 GB (the earlier memory target)
TARGET_SAME_ANSWERS = 0.98  # the same answer text as torch
TARGET_READ_OVER_LIMIT = 2.0  # where the ratios are not reached: the read stage within 2x of the FLOP limit
BATCH_COPIES = 4  # "the same questions x4 as one batch"

# Haystack's DocumentSplitter(split_by="period") counts sentences; 4 with 1 of overlap is close to
# article-qa's 600/200-character chunks on this article.
HAYSTACK_SPLIT_LENGTH = 4
HAYSTACK_SPLIT_OVERLAP = 1


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def read_questions(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@dataclass
class Span:
    """An answer as a document span; None offsets when the system abstained."""

    text: str | None
    start: int | None = None
    end: int | None = None

    @property
    def abstained(self) -> bool:
        return self.text is None

    def same_as(self, other: Span) -> bool:
        if self.abstained or other.abstained:
            return self.abstained and other.abstained
        if (self.start, self.end) == (other.start, other.end):
            return True
        return norm(self.text) == norm(other.text)

    def same_text(self, other: Span) -> bool:
        """The same answer text exactly (or both abstain): the issue's "answers unchanged"."""
        return self.text == other.text


def norm(text: str | None) -> str:
    return " ".join((text or "").split()).strip(" .,;:!?\"'“”‘’()").lower()


@dataclass
class SystemFigures:
    name: str
    latencies_s: list[float] = field(default_factory=list)
    batch_s: list[float] = field(default_factory=list)
    answers: list[Span] = field(default_factory=list)
    warm_up_s: float = float("nan")
    batch_questions: int = 0  # questions in one batch run

    @property
    def p50_ms(self) -> float:
        return (percentile(self.latencies_s, 50) or float("nan")) * 1000

    @property
    def p95_ms(self) -> float:
        return (percentile(self.latencies_s, 95) or float("nan")) * 1000

    @property
    def throughput(self) -> float:
        return self.batch_questions / statistics.median(self.batch_s) if self.batch_s else float("nan")


def time_single(
    ask: Callable[[str], Span], questions: list[str], repeats: int, label: str
) -> tuple[list[float], list[Span]]:
    """One untimed pass (first-call costs), then every question `repeats` times, one at a time."""
    answers = [ask(q) for q in questions]
    latencies: list[float] = []
    for r in range(repeats):
        for q in questions:
            t0 = time.perf_counter()
            ask(q)
            latencies.append(time.perf_counter() - t0)
        p50 = (percentile(latencies, 50) or 0) * 1000
        log(f"{label}: latency pass {r + 1}/{repeats} done (p50 so far {p50:.1f} ms)")
    return latencies, answers


def time_batch(run_all: Callable[[list[str]], Any], questions: list[str], repeats: int, label: str) -> list[float]:
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        run_all(questions)
        times.append(time.perf_counter() - t0)
        log(f"{label}: batch pass {r + 1}/{repeats}: {len(questions) / times[-1]:.2f} q/s")
    return times


# --- article-qa ------------------------------------------------------------------------------


@dataclass
class ColdStart:
    wall_s: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    output: str = ""
    error: str | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.wall_s) if self.wall_s else float("nan")

    @property
    def max_rss_mb(self) -> float:
        return max(self.peak_rss_mb) if self.peak_rss_mb else float("nan")


@dataclass
class BackendRun:
    """article-qa on one backend: what was asked for, what ran, and its figures."""

    wanted: str  # as given to --backends
    figures: SystemFigures
    cold: ColdStart
    backend: str = ""  # what the reader ran on (auto resolves to onnx or torch)
    dtype: str = ""
    embedder_backend: str = ""
    breakdown: Any = None  # stages.Breakdown
    reader: str = ""  # as given to --reader-model, when several readers are measured
    peaks: Any = None  # this reader's matmul peaks (stages.Peaks): its FLOP limit

    @property
    def label(self) -> str:
        backend = f"auto={self.backend}" if self.wanted == "auto" and self.backend else self.wanted
        return f"{self.reader} {backend}" if self.reader else backend


def ours_span(result: Any) -> Span:
    if not result.answers:
        return Span(None)
    a = result.answers[0]
    return Span(a.text, a.start, a.end)


def bench_article_qa(
    seeds: Path, index: Path, questions: list[str], repeats: int, reader: str, backend: str, cold: ColdStart
) -> BackendRun:
    from qa.assistant import Assistant
    from qa.settings import Settings

    name = f"article-qa {backend}"
    run = BackendRun(backend, SystemFigures(name, batch_questions=len(questions) * BATCH_COPIES), cold)
    figures = run.figures
    t0 = time.perf_counter()
    # As `qa ask` resolves its settings (flags over environment), with the backend chosen here.
    settings = Settings.resolve(seeds=seeds, index_dir=index, reader_model=reader, backend=backend)
    assistant = Assistant(settings=settings, log=log).warm_up()
    figures.warm_up_s = time.perf_counter() - t0
    run.backend = getattr(assistant.reader, "backend", "") or "?"
    run.dtype = getattr(assistant.reader, "dtype", "") or "?"
    run.embedder_backend = getattr(assistant.embedder, "backend", "") or "?"
    log(
        f"{name}: index and models loaded in {figures.warm_up_s:.1f} s (reader on {run.backend} in {run.dtype}, "
        f"query embedder on {run.embedder_backend})"
    )
    figures.latencies_s, figures.answers = time_single(lambda q: ours_span(assistant.ask(q)), questions, repeats, name)
    batch = questions * BATCH_COPIES

    def ask_batch(qs: list[str]) -> Any:
        return assistant.ask_many(qs, batch_size=len(qs))  # one batch, as the issue measures it

    ask_batch(batch)  # untimed: first batched call
    figures.batch_s = time_batch(ask_batch, batch, repeats, name)
    log(f"{name}: stage breakdown over {len(questions)} questions")
    run.breakdown = stages.measure_stages(assistant, questions)
    return run  # the assistant (its models) goes with this frame; the caller collects it


def qa_command() -> list[str]:
    """The `qa` script of the environment this Python runs in (not another `qa` on PATH, such as a shim
    that would run another interpreter), else the module."""
    beside = Path(sys.executable).with_name("qa")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-m", "qa.cli"]


def build_index(seeds: Path, index: Path) -> None:
    """The index the cold starts and the in-process runs share, built by `qa index` in a subprocess."""
    cmd = [*qa_command(), "index", str(seeds), "--index-dir", str(index)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    log(f"index: {done.stdout.strip()} ({time.perf_counter() - t0:.1f} s)")


def bench_cold_start(seeds: Path, index: Path, question: str, runs: int, reader: str | None, backend: str) -> ColdStart:
    """Wall time and peak RSS of fresh `qa ask` processes over the ready index (wait4 gives each child's rusage).

    One untimed run first: it exports the models for ONNX Runtime when the cache has no export yet
    (a once-per-model cost, not a cold start's) and brings the files into the page cache.
    """
    cold = ColdStart()
    cmd = [*qa_command(), "ask", question, "--json", "--seeds", str(seeds), "--index-dir", str(index)]
    if reader:
        cmd += ["--reader-model", reader]
    env = {**os.environ, "QA_BACKEND": backend}
    log(f"cold start: QA_BACKEND={backend} {' '.join(cmd)}")
    for i in range(runs + 1):
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        if proc.returncode != 0:
            cold.error = f"exit {proc.returncode}: {stderr.strip()[-500:]}"
            log(f"cold start ({backend}): qa ask failed ({cold.error})")
            return cold
        if i == 0:
            log(f"cold start ({backend}): untimed first run {wall:.2f} s")
            continue
        cold.wall_s.append(wall)
        cold.peak_rss_mb.append(usage.ru_maxrss * 1024 / 1e6)  # ru_maxrss is in KiB on Linux
        cold.output = stdout.strip()
        log(f"cold start ({backend}) {i}/{runs}: {wall:.2f} s, peak RSS {cold.peak_rss_mb[-1]:.0f} MB")
    return cold


# --- Haystack ---------------------------------------------------------------------------------


def haystack_query_pipeline(store: Any, reader_path: str, embed_path: str, passages: int) -> Any:
    """Question embedder -> embedding retriever (top `passages`) -> extractive reader over `store`, with
    the same models, window and stride as article-qa, warmed up (archive.py uses it too)."""
    import torch
    from haystack import Pipeline
    from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
    from haystack.utils import ComponentDevice
    from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersTextEmbedder
    from haystack_integrations.components.readers.transformers import TransformersExtractiveReader

    from qa.reader import ReaderSettings

    settings = ReaderSettings.load(reader_path)  # same window size and stride as article-qa reads with
    cpu = ComponentDevice.from_str("cpu")
    pipe = Pipeline()
    pipe.add_component(
        "embedder",
        SentenceTransformersTextEmbedder(
            model=embed_path, device=cpu, normalize_embeddings=True, progress_bar=False, local_files_only=True
        ),
    )
    pipe.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store, top_k=passages))
    pipe.add_component(
        "reader",
        TransformersExtractiveReader(
            model=reader_path,
            device=cpu,
            top_k=1,  # one answer plus Haystack's no-answer, which wins when that answer's score is below 0.5
            no_answer=True,
            max_seq_length=settings.max_length,
            stride=settings.stride,
            model_kwargs={"dtype": torch.float32},  # as article-qa loads it (the checkpoint may be saved in fp16)
        ),
    )
    pipe.connect("embedder.embedding", "retriever.query_embedding")
    pipe.connect("retriever.documents", "reader.documents")
    pipe.warm_up()
    return pipe


def bench_haystack(
    article: Path, questions: list[str], repeats: int, reader_path: str, embed_path: str, passages: int
) -> SystemFigures:
    from haystack import Document
    from haystack.components.preprocessors import DocumentSplitter
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack.utils import ComponentDevice
    from haystack_integrations.components.embedders.sentence_transformers import (
        SentenceTransformersDocumentEmbedder,
    )

    figures = SystemFigures("Haystack", batch_questions=len(questions) * BATCH_COPIES)
    cpu = ComponentDevice.from_str("cpu")
    t0 = time.perf_counter()

    splitter = DocumentSplitter(
        split_by="period", split_length=HAYSTACK_SPLIT_LENGTH, split_overlap=HAYSTACK_SPLIT_OVERLAP
    )
    text = article.read_text(encoding="utf-8")
    docs = splitter.run(documents=[Document(content=text, meta={"doc_id": article.name})])["documents"]
    doc_embedder = SentenceTransformersDocumentEmbedder(
        model=embed_path, device=cpu, normalize_embeddings=True, progress_bar=False, local_files_only=True
    )
    doc_embedder.warm_up()
    store = InMemoryDocumentStore(embedding_similarity_function="dot_product")
    store.write_documents(doc_embedder.run(documents=docs)["documents"])

    pipe = haystack_query_pipeline(store, reader_path, embed_path, passages)
    figures.warm_up_s = time.perf_counter() - t0
    log(f"Haystack: {len(docs)} documents (split by period) indexed and models loaded in {figures.warm_up_s:.1f} s")

    def ask(q: str) -> Span:
        answers = pipe.run({"embedder": {"text": q}, "reader": {"query": q}})["reader"]["answers"]
        top = answers[0] if answers else None
        if top is None or top.data is None or top.document is None or top.document_offset is None:
            return Span(None)
        base = int(top.document.meta.get("split_idx_start", 0))
        return Span(top.data, base + top.document_offset.start, base + top.document_offset.end)

    figures.latencies_s, figures.answers = time_single(ask, questions, repeats, "Haystack")
    # Haystack's extractive reader takes one query per run and Pipeline has no batch call,
    # so its "batch" is the same questions x4 through the pipeline in a loop.
    figures.batch_s = time_batch(lambda qs: [ask(q) for q in qs], questions * BATCH_COPIES, repeats, "Haystack")
    return figures


# --- report -----------------------------------------------------------------------------------


def mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    if value is None or value != value:  # None or NaN
        return "—"
    return format(value, spec) + suffix


class CpuWatch:
    """How much CPU other processes took while the benchmark ran (from /proc/stat minus our own rusage).

    The load average cannot tell: it counts this benchmark's own threads too.
    """

    def __init__(self) -> None:
        self.start = self._sample()
        self.wall0 = time.perf_counter()

    @staticmethod
    def _sample() -> tuple[float, float] | None:
        import resource

        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy_s = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        own = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return busy_s, sum(u.ru_utime + u.ru_stime for u in own)

    def others_share(self, cores: int) -> float | None:
        """Share (0-1) of the machine's CPU capacity used by other processes since construction."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = time.perf_counter() - self.wall0
        others = (end[0] - self.start[0]) - (end[1] - self.start[1])
        with contextlib.suppress(OSError):  # /proc/stat counts every CPU it sees, maybe more than we may use
            cores = sum(line.startswith("cpu") for line in Path("/proc/stat").read_text().splitlines()) - 1 or cores
        return max(others, 0.0) / max(wall * max(cores, 1), 1e-9)


def machine_line() -> tuple[str, int]:
    import torch

    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    cpu = _cpu_model()
    policy = os.environ.get("OMP_WAIT_POLICY") or "unset"
    line = (
        f"machine: {usable} usable CPU core(s) of {cores}{f' ({cpu})' if cpu else ''}, torch {torch.__version__} "
        f"with {torch.get_num_threads()} thread(s) (OMP_WAIT_POLICY {policy}), Python {platform.python_version()}, "
        f"{platform.machine()}"
    )
    return line, usable


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    packages = (
        "onnxruntime",
        "transformers",
        "sentence-transformers",
        "faiss-cpu",
        "haystack-ai",
        "transformers-haystack",
    )
    for pkg in packages:
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            parts.append(f"{pkg} (not installed)")
    return ", ".join(parts)


@dataclass
class Agreement:
    """How many questions get the same answer text (or both abstain) on `backend` as on the reference."""

    backend: str
    reference: str
    same: int
    total: int
    differ: list[int]  # question indices

    @property
    def share(self) -> float:
        return self.same / self.total if self.total else float("nan")


def answers_unchanged(runs: Sequence[BackendRun]) -> list[Agreement]:
    """Each backend's answers against the reference backend's (torch, the fallback), question by question."""
    out = []
    for r in runs:
        # Within one reader: two readers are expected to answer differently.
        reference = next((x for x in runs if x.backend == REFERENCE_BACKEND and x.reader == r.reader), None)
        if reference is None or r is reference:
            continue
        pairs = list(zip(r.figures.answers, reference.figures.answers, strict=True))
        differ = [i for i, (a, b) in enumerate(pairs) if not a.same_text(b)]
        out.append(Agreement(r.label, reference.label, len(pairs) - len(differ), len(pairs), differ))
    return out


def report(
    questions_path: Path,
    questions: list[str],
    repeats: int,
    runs: list[BackendRun],
    hay: SystemFigures | None,
    hay_note: str | None,
    reader: str,
    embedder: str,
    load_before: float,
    bench_rss_mb: float,
    parent_rss_mb: float,
    watch: CpuWatch,
    command: str,
    peaks: Any,
) -> str:
    machine, cores = machine_line()
    others = watch.others_share(cores)
    busy = load_before > 0.5 * max(cores, 1) or (others is not None and others > 0.10)
    others_text = "unknown" if others is None else f"{others:.0%}"
    how = "; ".join(
        f"{r.label}: reader on {r.backend} in {r.dtype}, query embedder on {r.embedder_backend}" for r in runs
    )
    lines = [
        f"article-qa benchmark: {ARTICLE.relative_to(ROOT)}, {len(questions)} questions "
        f"({_rel(questions_path)}), {repeats} repeat(s); batch = the questions x{BATCH_COPIES} "
        f"({len(questions) * BATCH_COPIES}) as one batch",
        f"command: {command}",
        machine,
        f"other processes used {others_text} of the CPU during the run (load average {load_before:.2f} at the start)",
        versions(),
        f"reader: {reader}",
        f"embedder: {embedder}",
        f"backends: {how}",
    ]
    if busy:
        lines.append(
            "WARNING: the machine was busy while measuring; timings are inflated, "
            "rerun on an idle machine for the figures to report."
        )
    lines.append("")
    lines += table(runs, hay, peaks)
    lines.append("")
    lines.append(
        "speed-up = Haystack latency / article-qa latency, or article-qa throughput / Haystack throughput. "
        "Latency: Assistant.ask / Pipeline.run, one question at a time after an untimed pass; "
        f"throughput: Assistant.ask_many over the questions x{BATCH_COPIES} as one batch "
        "(Haystack: Pipeline.run in a loop, it has no batch call). "
        f"The read stage's share of the FLOP limit is the fallback target: read within {TARGET_READ_OVER_LIMIT:.0f}x "
        "of the limit where the speed-ups are not reached."
    )
    lines.append(
        f"Peak RSS is the largest of the `qa ask` subprocesses (wait4 rusage; spawned while this process held "
        f"{parent_rss_mb:.0f} MB). In process, article-qa peaked at {bench_rss_mb:.0f} MB (every backend measured "
        "here, both models each, index, warm caches, before Haystack loaded)."
    )
    for r in runs:
        if r.cold.error:
            lines.append(f"cold start ({r.label}) failed: {r.cold.error}")
    if hay_note:
        lines.append(f"Haystack: {hay_note}")

    # Where the time goes, per backend.
    for r in runs:
        if r.breakdown is not None:
            lines.append("")
            first, *rest = r.breakdown.lines(r.peaks)
            lines += [f"stages, {r.reader + ' ' if r.reader else ''}{first}", *rest]
    for reader_peaks in dict.fromkeys(r.peaks for r in runs if r.breakdown is not None):
        found = [r.breakdown for r in runs if r.breakdown is not None and r.peaks is reader_peaks]
        lines.append("")
        lines.append(reader_peaks.line())
        lines += stages.fraction_lines(found, reader_peaks)

    lines.append("")
    agreements = answers_unchanged(runs)
    if not agreements:
        lines.append(f"answers unchanged: not measured (needs {REFERENCE_BACKEND} and another backend in --backends)")
    for a in agreements:
        differ = f"; differ on question(s) {', '.join(str(i + 1) for i in a.differ)}" if a.differ else ""
        lines.append(
            f"answers unchanged ({a.backend} vs {a.reference}): {a.same}/{a.total} questions ({a.share:.0%}) get the "
            f"same answer text or both abstain{differ}; target >= {TARGET_SAME_ANSWERS:.0%}: "
            f"{mark(a.share >= TARGET_SAME_ANSWERS)}"
        )
    for r in runs:
        ours = r.figures
        answered = sum(not a.abstained for a in ours.answers)
        if hay is None:
            lines.append(f"article-qa {r.label} answered {answered}/{len(questions)} questions")
            continue
        pairs = list(zip(ours.answers, hay.answers, strict=True))
        same = sum(a.same_as(b) and not a.abstained for a, b in pairs)
        both_abstain = sum(a.abstained and b.abstained for a, b in pairs)
        hay_answered = sum(not b.abstained for b in hay.answers)
        lines.append(
            f"agreement with Haystack ({r.label}): {same + both_abstain}/{len(questions)} questions ({same} same "
            f"answer span, {both_abstain} both abstain); article-qa answered {answered}, Haystack answered "
            f"{hay_answered}"
        )
    lines.append("")
    lines += answers_table(questions, runs, hay)
    return "\n".join(lines)


def table(runs: Sequence[BackendRun], hay: SystemFigures | None, peaks: Any) -> list[str]:
    """metric | one column per backend | Haystack | speed-up per backend | target | PASS/MISS per backend."""
    h = hay

    def per(fn: Callable[[BackendRun], Any]) -> list[Any]:
        return [fn(r) for r in runs]

    def ratio(mine: float, theirs: float | None) -> float | None:
        return None if theirs is None or not mine else theirs / mine

    lat = per(lambda r: ratio(r.figures.p50_ms, h and h.p50_ms))
    p95 = per(lambda r: ratio(r.figures.p95_ms, h and h.p95_ms))
    thr = per(lambda r: None if h is None else r.figures.throughput / h.throughput)
    over = per(lambda r: _over_limit(r, r.peaks))
    blank = [""] * len(runs)

    def marks(values: list[Any], ok: Callable[[Any], bool]) -> list[str]:
        return [mark(None if v is None or v != v else ok(v)) for v in values]

    cold_s = per(lambda r: None if r.cold.error else r.cold.median_s)
    rss = per(lambda r: None if r.cold.error else r.cold.max_rss_mb)
    cold_runs = max((len(r.cold.wall_s) for r in runs), default=0)
    rows: list[list[str]] = [
        ["warm latency p50 (ms)", *per(lambda r: fmt(r.figures.p50_ms, ".1f")), fmt(h and h.p50_ms, ".1f"),
         *(fmt(x, ".2f", "x") for x in lat), f">= {TARGET_P50_RATIO:.0f}x Haystack",
         *marks(lat, lambda x: x >= TARGET_P50_RATIO)],
        ["warm latency p95 (ms)", *per(lambda r: fmt(r.figures.p95_ms, ".1f")), fmt(h and h.p95_ms, ".1f"),
         *(fmt(x, ".2f", "x") for x in p95), "", *blank],
        ["batch throughput (q/s)", *per(lambda r: fmt(r.figures.throughput, ".2f")), fmt(h and h.throughput, ".2f"),
         *(fmt(x, ".2f", "x") for x in thr), f">= {TARGET_THROUGHPUT_RATIO:.0f}x Haystack",
         *marks(thr, lambda x: x >= TARGET_THROUGHPUT_RATIO)],
        [f"cold `qa ask` (s, median of {cold_runs})", *(fmt(x, ".2f") for x in cold_s), "", *blank,
         f"<= {TARGET_COLD_S:.0f} s", *marks(cold_s, lambda x: x <= TARGET_COLD_S)],
        ["peak RSS of `qa ask` (MB)", *(fmt(x, ".0f") for x in rss), "", *blank,
         f"<= {TARGET_RSS_MB:.0f} MB (1 GB)", *marks(rss, lambda x: x <= TARGET_RSS_MB)],
        ["read stage / FLOP limit", *(fmt(x, ".1f", "x") for x in over), "", *blank,
         f"<= {TARGET_READ_OVER_LIMIT:.0f}x (fallback)", *marks(over, lambda x: x <= TARGET_READ_OVER_LIMIT)],
        ["load + warm-up in process (s)", *per(lambda r: fmt(r.figures.warm_up_s, ".1f")),
         fmt(h and h.warm_up_s, ".1f"), *blank, "", *blank],
    ]  # fmt: skip
    labels = [r.label for r in runs]
    headers = [
        "metric",
        *(f"article-qa {x}" for x in labels),
        "Haystack",
        *(f"{x} speed-up" for x in labels),
        "target",
        *labels,
    ]
    n = len(runs)
    align = ["<", *[">"] * (2 * n + 1), "<", *["<"] * n]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def row(cells: Sequence[str]) -> str:
        return "  ".join(format(str(c), f"{a}{w}") for c, a, w in zip(cells, align, widths, strict=True)).rstrip()

    return [row(headers), row(["-" * w for w in widths]), *(row(r) for r in rows)]


def _over_limit(run: BackendRun, peaks: Any) -> float | None:
    """How many times the FLOP limit the read stage takes (1.0 = at the limit)."""
    fraction = run.breakdown.fraction(peaks) if run.breakdown is not None else None
    return 1 / fraction if fraction else None


def answers_table(questions: list[str], runs: Sequence[BackendRun], hay: SystemFigures | None) -> list[str]:
    """Each question's answer per backend (and Haystack's); = / ≠ against the first backend's answer."""
    qw = min(max(len(q) for q in questions), 60)
    names = [f"article-qa {r.label}" for r in runs] + (["Haystack"] if hay else [])
    cols = [r.figures.answers for r in runs] + ([hay.answers] if hay else [])
    out = [f"{'#':>2}  {'question':<{qw}}  " + "  ".join(f"{n:<32}" for n in names).rstrip()]
    for i, q in enumerate(questions):
        first = cols[0][i]
        cells = [f"  {show(first):<30}"]
        for k, col in enumerate(cols[1:], 1):
            other = col[i]
            same = other.same_as(first) if hay is not None and k == len(cols) - 1 else other.same_text(first)
            cells.append(f"{'=' if same else '≠'} {show(other):<30}")
        qs = q if len(q) <= qw else q[: qw - 1] + "…"
        out.append(f"{i + 1:>2}  {qs:<{qw}}" + "  ".join(cells).rstrip())
    return out


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def show(span: Span | None) -> str:
    if span is None:
        return ""
    if span.abstained:
        return "(abstains)"
    text = " ".join((span.text or "").split())
    return text if len(text) <= 30 else text[:29] + "…"


def parse_backends(text: str) -> list[str]:
    wanted = [b.strip().lower() for b in text.split(",") if b.strip()]
    bad = [b for b in wanted if b not in BACKENDS]
    if not wanted or bad:
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(BACKENDS)}, got {text!r}")
    return list(dict.fromkeys(wanted))  # in order, once each


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="Timed passes over the questions (default 5).")
    parser.add_argument("--cold-runs", type=int, default=3, help="Fresh `qa ask` processes to time (default 3).")
    parser.add_argument(
        "--backends",
        type=parse_backends,
        default=["onnx", "torch"],
        help="article-qa backends to measure, a comma list of onnx, torch, auto (default onnx,torch).",
    )
    parser.add_argument("--skip-haystack", action="store_true", help="Measure article-qa only.")
    parser.add_argument(
        "--reader-model",
        default=None,
        help="Reader (v3, v2, a folder), or a comma list of them measured one after the other; Haystack runs the "
        "first [default: $QA_READER_MODEL, else shipped].",
    )
    parser.add_argument("--questions", type=Path, default=QUESTIONS, help="Questions file, one per line.")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="Also write the raw figures here.")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.cold_runs < 1:
        parser.error("--repeats and --cold-runs must be at least 1")

    from qa.loading import resolve_embed_model, resolve_reader_model
    from qa.settings import Settings

    questions_path = args.questions.resolve()
    questions = read_questions(questions_path)
    names = [n.strip() for n in (args.reader_model or "").split(",") if n.strip()] or [None]
    folders = {n: resolve_reader_model(n) for n in names}  # merges a LoRA reader once, before any timing
    reader = folders[names[0]]
    embedder = resolve_embed_model()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    watch = CpuWatch()
    log(f"{len(questions)} questions; reader {reader}; embedder {embedder}; backends {', '.join(args.backends)}")

    with tempfile.TemporaryDirectory(prefix="qa-bench-") as tmp:
        seeds, index = Path(tmp) / "seeds", Path(tmp) / "index"
        seeds.mkdir()
        shutil.copy2(ARTICLE, seeds / ARTICLE.name)  # the bundled article alone, whatever else seeds/ holds
        build_index(seeds, index)
        passages = Settings.resolve(seeds=seeds, index_dir=index).passages  # what article-qa reads, for Haystack
        # Cold starts first, while this process is still small: a child's ru_maxrss starts from the RSS of
        # the process it was spawned from (Linux keeps the old mm's high-water mark across exec).
        parent_rss_mb = _self_peak_rss_mb()
        plan = [(n, b) for n in names for b in args.backends]
        colds = {(n, b): bench_cold_start(seeds, index, questions[0], args.cold_runs, n, b) for n, b in plan}
        runs = []
        for n, b in plan:
            run = bench_article_qa(seeds, index, questions, args.repeats, folders[n], b, colds[n, b])
            run.reader = n if len(names) > 1 and n else ""
            runs.append(run)
            gc.collect()  # one backend's models before the next loads
        bench_rss_mb = _self_peak_rss_mb()

    found = [r.breakdown for r in runs if r.breakdown is not None]
    tokens = round(sum(sum(b.windows) for b in found) / max(sum(b.questions for b in found), 1)) or 480
    log("matmul peak of this machine (in a fresh process: this one's thread pools were seen to lower it)")
    by_folder = {f: fresh_matmul_peaks(f, tokens) for f in dict.fromkeys(folders.values())}
    for r, (n, _b) in zip(runs, plan, strict=True):
        r.peaks = by_folder[folders[n]]
    peaks = by_folder[reader]

    hay: SystemFigures | None = None
    hay_note: str | None = None
    if args.skip_haystack:
        hay_note = "skipped (--skip-haystack)"
    else:
        try:
            hay = bench_haystack(ARTICLE, questions, args.repeats, reader, embedder, passages)
            hay_note = (
                f"DocumentSplitter(split_by='period', split_length={HAYSTACK_SPLIT_LENGTH}, "
                f"split_overlap={HAYSTACK_SPLIT_OVERLAP}) -> InMemoryEmbeddingRetriever(top_k={passages}) -> "
                "TransformersExtractiveReader(top_k=1, no_answer=True), same embedder and reader folders, fp32 torch, "
                "cpu; article-qa uses hybrid (FAISS + BM25) retrieval."
            )
        except ImportError as exc:
            hay_note = f"not measured ({exc}); install the extra: pip install -e '.[bench]'"
            log(f"Haystack skipped: {exc}")

    print(
        report(
            questions_path,
            questions,
            args.repeats,
            runs,
            hay,
            hay_note,
            reader,
            embedder,
            load_before,
            bench_rss_mb,
            parent_rss_mb,
            watch,
            " ".join(["python", _rel(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)]),
            peaks,
        )
    )
    if args.json_out:
        raw = {
            "questions": questions,
            "backends": [r.label for r in runs],
            "batch_questions": len(questions) * BATCH_COPIES,
            "article_qa": {r.label: _raw_run(r, r.peaks) for r in runs},
            "haystack": _raw(hay) if hay else None,
            "matmul_peak": peaks.as_dict(),
            "answers_unchanged": [
                {"backend": a.backend, "reference": a.reference, "same": a.same, "total": a.total, "differ": a.differ}
                for a in answers_unchanged(runs)
            ],
            "in_process_peak_rss_mb": bench_rss_mb,
            "load_average_before": load_before,
        }
        args.json_out.write_text(json.dumps(raw, indent=2), encoding="utf-8")
        log(f"raw figures written to {args.json_out}")
    return 0


def _raw(f: SystemFigures) -> dict[str, Any]:
    return {
        "p50_ms": f.p50_ms,
        "p95_ms": f.p95_ms,
        "throughput_qps": f.throughput,
        "warm_up_s": f.warm_up_s,
        "latencies_s": f.latencies_s,
        "batch_s": f.batch_s,
        "answers": [{"text": a.text, "start": a.start, "end": a.end} for a in f.answers],
    }


def _raw_run(r: BackendRun, peaks: Any) -> dict[str, Any]:
    return {
        "backend": r.backend,
        "reader_dtype": r.dtype,
        "embedder_backend": r.embedder_backend,
        **_raw(r.figures),
        "cold_start_s": r.cold.wall_s,
        "cold_peak_rss_mb": r.cold.peak_rss_mb,
        "cold_error": r.cold.error,
        "stages": r.breakdown.as_dict(peaks) if r.breakdown is not None else None,
    }


def fresh_matmul_peaks(reader: str, tokens: int) -> Any:
    """stages.matmul_peaks measured in a new Python process, so nothing this benchmark loaded competes."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import stages; "
        "p = stages.matmul_peaks(stages.reader_shape(sys.argv[2]), int(sys.argv[3])); "
        "print(json.dumps([p.fp32, p.bf16, p.detail]))"
    )
    where = str(Path(__file__).resolve().parent)
    done = subprocess.run(
        [sys.executable, "-c", code, where, reader, str(tokens)], capture_output=True, text=True, check=True
    )
    fp32, bf16, detail = json.loads(done.stdout.strip().splitlines()[-1])
    return stages.Peaks(fp32, bf16, detail)


def _self_peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


if __name__ == "__main__":
    sys.exit(main())

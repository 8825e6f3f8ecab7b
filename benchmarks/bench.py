"""Benchmark article-qa on the bundled article, side by side with the same models behind Haystack.

Run from the repository root (the benchmark extra installs Haystack and psutil):

    pip install -e '.[bench]'
    HF_HUB_OFFLINE=1 python benchmarks/bench.py [--repeats N] [--skip-haystack]

It builds its own index in a temporary folder (the repo's index/ is never touched), then measures:

* warm latency: `Assistant.ask` one question at a time, after warm-up, every question `--repeats` times;
* batch throughput: `Assistant.ask_many` over all questions, median of `--repeats` runs;
* cold start: wall time of a fresh `qa ask "..."` subprocess over the ready index (median of `--cold-runs`),
  and the peak RSS of that subprocess (from wait4's rusage);
* the same latency and throughput for a Haystack pipeline (SentenceTransformersTextEmbedder ->
  InMemoryEmbeddingRetriever -> TransformersExtractiveReader) with the same embedder and reader folders,
  documents split by "period" (its sentence splitter needs NLTK data that cannot be downloaded offline);
* how often both give the same answer span (or both abstain).

Progress goes to stderr, the table to stdout. Timings are only meaningful on an otherwise idle machine:
the table warns when the load average says other work is running.
"""

from __future__ import annotations

import argparse
import contextlib
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

from qa.metrics import percentile

ROOT = Path(__file__).resolve().parent.parent
ARTICLE = ROOT / "seeds" / "pentagon-ukraine-long-range-strikes.txt"
QUESTIONS = Path(__file__).resolve().parent / "questions.txt"

# Targets from the issue (2 CPU cores).
TARGET_P50_MS = 60.0
TARGET_COLD_S = 4.0
TARGET_RSS_MB = 1000.0  # 1 GB
TARGET_THROUGHPUT_RATIO = 3.0

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


def norm(text: str | None) -> str:
    return " ".join((text or "").split()).strip(" .,;:!?\"'“”‘’()").lower()


@dataclass
class SystemFigures:
    name: str
    latencies_s: list[float] = field(default_factory=list)
    batch_s: list[float] = field(default_factory=list)
    answers: list[Span] = field(default_factory=list)
    warm_up_s: float = float("nan")
    n_questions: int = 0

    @property
    def p50_ms(self) -> float:
        return (percentile(self.latencies_s, 50) or float("nan")) * 1000

    @property
    def p95_ms(self) -> float:
        return (percentile(self.latencies_s, 95) or float("nan")) * 1000

    @property
    def throughput(self) -> float:
        return self.n_questions / statistics.median(self.batch_s) if self.batch_s else float("nan")


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


def ours_span(result: Any) -> Span:
    if not result.answers:
        return Span(None)
    a = result.answers[0]
    return Span(a.text, a.start, a.end)


def bench_article_qa(seeds: Path, index: Path, questions: list[str], repeats: int, reader: str | None) -> SystemFigures:
    from qa.assistant import Assistant

    figures = SystemFigures("article-qa", n_questions=len(questions))
    t0 = time.perf_counter()
    assistant = Assistant(seeds, index, reader_model=reader, log=log).warm_up()
    figures.warm_up_s = time.perf_counter() - t0
    log(f"article-qa: index and models loaded in {figures.warm_up_s:.1f} s")
    figures.latencies_s, figures.answers = time_single(
        lambda q: ours_span(assistant.ask(q)), questions, repeats, "article-qa"
    )
    assistant.ask_many(questions)  # untimed: first batched call
    figures.batch_s = time_batch(assistant.ask_many, questions, repeats, "article-qa")
    return figures


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


def qa_command() -> list[str]:
    exe = shutil.which("qa")
    return [exe] if exe else [sys.executable, "-m", "qa.cli"]


def build_index(seeds: Path, index: Path) -> None:
    """The index the cold starts and the in-process runs share, built by `qa index` in a subprocess."""
    cmd = [*qa_command(), "index", str(seeds), "--index-dir", str(index)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    log(f"index: {done.stdout.strip()} ({time.perf_counter() - t0:.1f} s)")


def bench_cold_start(seeds: Path, index: Path, question: str, runs: int, reader: str | None) -> ColdStart:
    """Wall time and peak RSS of fresh `qa ask` processes over the ready index (wait4 gives each child's rusage)."""
    cold = ColdStart()
    cmd = [*qa_command(), "ask", question, "--json", "--seeds", str(seeds), "--index-dir", str(index)]
    if reader:
        cmd += ["--reader-model", reader]
    log(f"cold start: {' '.join(cmd)}")
    for i in range(runs):
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        if proc.returncode != 0:
            cold.error = f"exit {proc.returncode}: {stderr.strip()[-500:]}"
            log(f"cold start: qa ask failed ({cold.error})")
            return cold
        cold.wall_s.append(wall)
        cold.peak_rss_mb.append(usage.ru_maxrss * 1024 / 1e6)  # ru_maxrss is in KiB on Linux
        cold.output = stdout.strip()
        log(f"cold start {i + 1}/{runs}: {wall:.2f} s, peak RSS {cold.peak_rss_mb[-1]:.0f} MB")
    return cold


# --- Haystack ---------------------------------------------------------------------------------


def bench_haystack(
    article: Path, questions: list[str], repeats: int, reader_path: str, embed_path: str, passages: int
) -> SystemFigures:
    import torch
    from haystack import Document, Pipeline
    from haystack.components.preprocessors import DocumentSplitter
    from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack.utils import ComponentDevice
    from haystack_integrations.components.embedders.sentence_transformers import (
        SentenceTransformersDocumentEmbedder,
        SentenceTransformersTextEmbedder,
    )
    from haystack_integrations.components.readers.transformers import TransformersExtractiveReader

    from qa.reader import ReaderSettings

    figures = SystemFigures("Haystack", n_questions=len(questions))
    settings = ReaderSettings.load(reader_path)  # same window size and stride as article-qa reads with
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
    # so its "batch" is all questions through the pipeline in a loop.
    figures.batch_s = time_batch(lambda qs: [ask(q) for q in qs], questions, repeats, "Haystack")
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
    line = (
        f"machine: {usable} usable CPU core(s) of {cores}{f' ({cpu})' if cpu else ''}, torch {torch.__version__} "
        f"with {torch.get_num_threads()} thread(s), Python {platform.python_version()}, {platform.machine()}"
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
    for pkg in ("transformers", "sentence-transformers", "faiss-cpu", "haystack-ai", "transformers-haystack"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            parts.append(f"{pkg} (not installed)")
    return ", ".join(parts)


def report(
    questions_path: Path,
    questions: list[str],
    repeats: int,
    ours: SystemFigures,
    hay: SystemFigures | None,
    hay_note: str | None,
    cold: ColdStart,
    reader: str,
    embedder: str,
    load_before: float,
    bench_rss_mb: float,
    parent_rss_mb: float,
    watch: CpuWatch,
    command: str,
) -> str:
    machine, cores = machine_line()
    others = watch.others_share(cores)
    busy = load_before > 0.5 * max(cores, 1) or (others is not None and others > 0.10)
    others_text = "unknown" if others is None else f"{others:.0%}"
    lines = [
        f"article-qa benchmark: {ARTICLE.relative_to(ROOT)}, {len(questions)} questions "
        f"({_rel(questions_path)}), {repeats} repeat(s)",
        f"command: {command}",
        machine,
        f"other processes used {others_text} of the CPU during the run (load average {load_before:.2f} at the start)",
        versions(),
        f"reader: {reader}",
        f"embedder: {embedder}",
    ]
    if busy:
        lines.append(
            "WARNING: the machine was busy while measuring; timings are inflated, "
            "rerun on an idle machine for the figures to report."
        )
    lines.append("")

    h = hay
    lat_ratio = (h.p50_ms / ours.p50_ms) if h else None
    p95_ratio = (h.p95_ms / ours.p95_ms) if h else None
    thr_ratio = (ours.throughput / h.throughput) if h else None
    cold_ok = None if cold.error else cold.median_s <= TARGET_COLD_S
    rss_ok = None if cold.error else cold.max_rss_mb <= TARGET_RSS_MB
    rows = [
        ("warm latency p50 (ms)", fmt(ours.p50_ms, ".1f"), fmt(h and h.p50_ms, ".1f"), fmt(lat_ratio, ".2f", "x"),
         f"<= {TARGET_P50_MS:.0f} ms", mark(ours.p50_ms <= TARGET_P50_MS)),
        ("warm latency p95 (ms)", fmt(ours.p95_ms, ".1f"), fmt(h and h.p95_ms, ".1f"), fmt(p95_ratio, ".2f", "x"),
         "", ""),
        ("batch throughput (q/s)", fmt(ours.throughput, ".2f"), fmt(h and h.throughput, ".2f"),
         fmt(thr_ratio, ".2f", "x"), f">= {TARGET_THROUGHPUT_RATIO:.0f}x Haystack",
         mark(None if thr_ratio is None else thr_ratio >= TARGET_THROUGHPUT_RATIO)),
        (f"cold `qa ask` (s, median of {len(cold.wall_s)})", fmt(cold.median_s, ".2f"), "", "",
         f"<= {TARGET_COLD_S:.0f} s", mark(cold_ok)),
        ("peak RSS of `qa ask` (MB)", fmt(cold.max_rss_mb, ".0f"), "", "", f"<= {TARGET_RSS_MB:.0f} MB (1 GB)",
         mark(rss_ok)),
        ("load + warm-up in process (s)", fmt(ours.warm_up_s, ".1f"), fmt(h and h.warm_up_s, ".1f"), "", "", ""),
    ]  # fmt: skip
    headers = ("metric", "article-qa", "Haystack", "speed-up", "target", "")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    align = ("<", ">", ">", ">", "<", "<")

    def row(cells: Sequence[str]) -> str:
        return "  ".join(format(str(c), f"{a}{w}") for c, a, w in zip(cells, align, widths, strict=True)).rstrip()

    lines += [row(headers), row(["-" * w for w in widths]), *(row(r) for r in rows)]
    lines.append("")
    lines.append(
        "speed-up = Haystack latency / article-qa latency, or article-qa throughput / Haystack throughput. "
        "Latency: Assistant.ask / Pipeline.run, one question at a time after an untimed pass; "
        "throughput: Assistant.ask_many over all questions (Haystack: Pipeline.run in a loop, it has no batch call)."
    )
    lines.append(
        f"Peak RSS is the largest of the `qa ask` subprocesses (wait4 rusage; spawned while this process held "
        f"{parent_rss_mb:.0f} MB). In process, article-qa peaked at {bench_rss_mb:.0f} MB (both models, index, "
        "warm caches, before Haystack loaded)."
    )
    if cold.error:
        lines.append(f"cold start failed: {cold.error}")
    if hay_note:
        lines.append(f"Haystack: {hay_note}")

    lines.append("")
    ours_answered = sum(not a.abstained for a in ours.answers)
    if h is not None:
        same = sum(a.same_as(b) and not a.abstained for a, b in zip(ours.answers, h.answers, strict=True))
        both_abstain = sum(a.abstained and b.abstained for a, b in zip(ours.answers, h.answers, strict=True))
        hay_answered = sum(not b.abstained for b in h.answers)
        lines.append(
            f"agreement: {same + both_abstain}/{len(questions)} questions ({same} same answer span, "
            f"{both_abstain} both abstain); article-qa answered {ours_answered}, Haystack answered {hay_answered}"
        )
    else:
        lines.append(f"article-qa answered {ours_answered}/{len(questions)} questions")
    lines.append("")
    qw = min(max(len(q) for q in questions), 70)
    lines.append(f"{'#':>2}  {'question':<{qw}}  {'article-qa':<32}  {'Haystack' if h else ''}")
    for i, q in enumerate(questions):
        a = ours.answers[i]
        b = h.answers[i] if h else None
        same = "" if b is None else ("=" if a.same_as(b) else "≠")
        qs = q if len(q) <= qw else q[: qw - 1] + "…"
        lines.append(f"{i + 1:>2}  {qs:<{qw}}  {show(a):<32}  {same} {show(b) if b else ''}".rstrip())
    return "\n".join(lines)


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="Timed passes over the questions (default 5).")
    parser.add_argument("--cold-runs", type=int, default=3, help="Fresh `qa ask` processes to time (default 3).")
    parser.add_argument("--skip-haystack", action="store_true", help="Measure article-qa only.")
    parser.add_argument("--reader-model", default=None, help="Reader folder [default: $QA_READER_MODEL, else shipped].")
    parser.add_argument("--questions", type=Path, default=QUESTIONS, help="Questions file, one per line.")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="Also write the raw figures here.")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.cold_runs < 1:
        parser.error("--repeats and --cold-runs must be at least 1")

    from qa.assistant import DEFAULT_PASSAGES
    from qa.models import resolve_embed_model, resolve_reader_model

    questions_path = args.questions.resolve()
    questions = read_questions(questions_path)
    reader = resolve_reader_model(args.reader_model)
    embedder = resolve_embed_model()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    watch = CpuWatch()
    log(f"{len(questions)} questions; reader {reader}; embedder {embedder}")

    with tempfile.TemporaryDirectory(prefix="qa-bench-") as tmp:
        seeds, index = Path(tmp) / "seeds", Path(tmp) / "index"
        seeds.mkdir()
        shutil.copy2(ARTICLE, seeds / ARTICLE.name)  # the bundled article alone, whatever else seeds/ holds
        build_index(seeds, index)
        # Cold starts first, while this process is still small: a child's ru_maxrss starts from the RSS of
        # the process it was spawned from (Linux keeps the old mm's high-water mark across exec).
        parent_rss_mb = _self_peak_rss_mb()
        cold = bench_cold_start(seeds, index, questions[0], args.cold_runs, reader)
        ours = bench_article_qa(seeds, index, questions, args.repeats, reader)
        bench_rss_mb = _self_peak_rss_mb()

    hay: SystemFigures | None = None
    hay_note: str | None = None
    if args.skip_haystack:
        hay_note = "skipped (--skip-haystack)"
    else:
        try:
            hay = bench_haystack(ARTICLE, questions, args.repeats, reader, embedder, DEFAULT_PASSAGES)
            hay_note = (
                f"DocumentSplitter(split_by='period', split_length={HAYSTACK_SPLIT_LENGTH}, "
                f"split_overlap={HAYSTACK_SPLIT_OVERLAP}) -> InMemoryEmbeddingRetriever(top_k={DEFAULT_PASSAGES}) -> "
                "TransformersExtractiveReader(top_k=1, no_answer=True), same embedder and reader folders, fp32, cpu; "
                "article-qa uses hybrid (FAISS + BM25) retrieval."
            )
        except ImportError as exc:
            hay_note = f"not measured ({exc}); install the extra: pip install -e '.[bench]'"
            log(f"Haystack skipped: {exc}")

    print(
        report(
            questions_path,
            questions,
            args.repeats,
            ours,
            hay,
            hay_note,
            cold,
            reader,
            embedder,
            load_before,
            bench_rss_mb,
            parent_rss_mb,
            watch,
            " ".join(["python", _rel(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)]),
        )
    )
    if args.json_out:
        raw = {
            "questions": questions,
            "article_qa": _raw(ours),
            "haystack": _raw(hay) if hay else None,
            "cold_start_s": cold.wall_s,
            "cold_peak_rss_mb": cold.peak_rss_mb,
            "cold_error": cold.error,
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


def _self_peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


if __name__ == "__main__":
    sys.exit(main())

"""Where a warm question's time goes, stage by stage, against what this CPU can do.

For the questions of benchmarks/questions.txt about the bundled article, one at a time, warm:
ms per stage (embed the query, retrieve, tokenize, read, decode), the reader's FLOPs per
question, this machine's measured matmul peak (float32, and bfloat16 where the CPU has it) and
so the share of the limit the read stage reaches, for each inference backend in turn:

    python benchmarks/stages.py [--backend onnx|torch|both]

It indexes the bundled article in a temporary folder (the repository's index/ is never touched).
`benchmarks/bench.py` prints the same breakdown below its table (`stage_breakdown`, `measure_stages`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ARTICLE = ROOT / "seeds" / "pentagon-ukraine-long-range-strikes.txt"
QUESTIONS = HERE / "questions.txt"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from load import cpu_name  # noqa: E402  (benchmarks/load.py, beside this script)

STAGES = ("embed query", "retrieve", "tokenize", "read (model forward)", "decode")
READ = "read (model forward)"
OTHER = "other (spans, checks)"
SQUARE = 1024  # the square matmul of the peak measurement
WARM_QUESTIONS = 3  # asked untimed before measuring


def read_questions(path: Path = QUESTIONS) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# --- the machine's limit ------------------------------------------------------------------


def matmul_peak(dtype: Any, m: int = SQUARE, k: int = SQUARE, n: int = SQUARE, repeats: int = 20) -> float:
    """GFLOP/s of an (m x k) @ (k x n) torch matmul on this machine (the best of `repeats`)."""
    import torch

    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    torch.mm(a, b)  # first-call costs (oneDNN primitive creation) are not the peak
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


@dataclass(frozen=True)
class Peaks:
    """The measured matmul peak in GFLOP/s: the best of a square matmul and, where the reader's config
    is known, the shape of its feed-forward matmul over one question's windows."""

    fp32: float
    bf16: float | None  # None: the CPU has no native bfloat16 (it would be emulated, slower)
    detail: str  # what was measured, for the report

    def for_dtype(self, dtype: str) -> float:
        return self.bf16 if dtype == "bfloat16" and self.bf16 else self.fp32

    def line(self) -> str:
        bf16 = f"{self.bf16:.0f}" if self.bf16 else "— (no native bf16 on this CPU)"
        return f"matmul peak: float32 {self.fp32:.0f} GFLOP/s, bfloat16 {bf16} ({self.detail})"

    def as_dict(self) -> dict[str, Any]:
        return {"fp32_gflops": self.fp32, "bf16_gflops": self.bf16, "measured": self.detail}


def matmul_peaks(config: ModelShape | None = None, tokens: int = 480) -> Peaks:
    """float32 (and bfloat16 where native) peak, measured once; `tokens` ~ one question's windows."""
    import torch

    from qa.loading import cpu_has_bf16

    shapes = [(SQUARE, SQUARE, SQUARE)]
    if config is not None:
        shapes.append((tokens, config.hidden, config.intermediate))
    detail = " and ".join(f"{m}x{k} @ {k}x{n}" for m, k, n in shapes)
    detail = f"best of {detail}, {torch.get_num_threads()} torch thread(s)"
    fp32 = max(matmul_peak(torch.float32, *s) for s in shapes)
    bf16 = max(matmul_peak(torch.bfloat16, *s) for s in shapes) if cpu_has_bf16() else None
    return Peaks(fp32, bf16, detail)


# --- the reader's work --------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    intermediate: int
    layers: int


def reader_shape(model: str) -> ModelShape | None:
    """The encoder's sizes from the reader folder's config.json (an ONNX session has no `.config`);
    a hub id goes through transformers' AutoConfig. None when they cannot be read."""
    try:
        path = Path(model) / "config.json"
        if path.is_file():
            raw = json.loads(path.read_text(encoding="utf-8"))
        else:
            from transformers import AutoConfig

            raw = AutoConfig.from_pretrained(model).to_dict()
    except Exception:  # a missing or odd config only costs the FLOP figures
        return None

    def first(*keys: str) -> int | None:
        return next((int(raw[k]) for k in keys if isinstance(raw.get(k), int)), None)

    hidden = first("hidden_size", "dim", "d_model")
    ff = first("intermediate_size", "hidden_dim", "ffn_dim")
    layers = first("num_hidden_layers", "n_layers", "num_layers")
    if hidden is None or layers is None:
        return None
    return ModelShape(hidden, ff or 4 * hidden, layers)


def reader_flops(shape: ModelShape, seq_lengths: Sequence[int]) -> float:
    """Multiply-adds x 2 of a BERT-style encoder plus its QA head over the given windows."""
    h, ff, layers = shape.hidden, shape.intermediate, shape.layers
    tokens = sum(seq_lengths)
    dense = tokens * layers * (4 * h * h + 2 * h * ff)
    attention = sum(layers * 2 * s * s * h for s in seq_lengths)
    return 2.0 * (dense + attention + tokens * h * 2)


# --- measuring ----------------------------------------------------------------------------


class Timer:
    """Wraps a function so each call's time adds up under its stage's name."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t

        return timed


@contextmanager
def _patched(target: Any, name: str, make: Callable[[Any], Any]) -> Iterator[bool]:
    """`target.name` replaced by make(original) inside the block, put back after; False (and nothing
    patched) when the target has no such attribute (the stage then shows as not measured)."""
    if target is None or not hasattr(target, name):
        yield False
        return
    own = name in getattr(target, "__dict__", {})
    original = getattr(target, name)
    setattr(target, name, make(original))
    try:
        yield True
    finally:
        if own:
            setattr(target, name, original)
        else:
            delattr(target, name)  # an instance attribute over the class's method: remove it


@dataclass
class Breakdown:
    """One backend's warm questions, stage by stage (mean ms per question)."""

    backend: str
    dtype: str
    questions: int
    ms: dict[str, float]  # stage -> mean ms a question; absent when that stage could not be timed
    whole_ms: float
    p50_ms: float
    windows: list[int]  # tokens of every window read
    flops: float | None  # of the read, per question

    @property
    def read_ms(self) -> float | None:
        return self.ms.get(READ)

    def limit_ms(self, peaks: Peaks) -> float | None:
        if self.flops is None:
            return None
        return self.flops / (peaks.for_dtype(self.dtype) * 1e9) * 1000

    def fraction(self, peaks: Peaks) -> float | None:
        """Share of the matmul peak the read stage reaches (1.0 = at the hardware's limit)."""
        limit, read = self.limit_ms(peaks), self.read_ms
        return limit / read if limit and read else None

    def lines(self, peaks: Peaks | None = None) -> list[str]:
        out = [
            f"{self.backend} backend, reader in {self.dtype}; {self.questions} questions, one at a time, warm; "
            "mean ms per question:"
        ]
        for name in (*STAGES, OTHER):
            value = self.ms.get(name)
            out.append(f"  {name:22} {'—' if value is None else format(value, '7.1f'):>7}")
        out.append(f"  {'whole question':22} {self.whole_ms:7.1f}   (p50 {self.p50_ms:.1f})")
        if self.windows:
            per_window = sum(self.windows) / len(self.windows)
            gflop = "? GFLOP (no encoder sizes in the reader's config)"
            if self.flops is not None:
                gflop = f"{self.flops / 1e9:.2f} GFLOP"
            out.append(
                f"read: {gflop} a question over {len(self.windows) / self.questions:.1f} windows "
                f"of {per_window:.0f} tokens"
            )
        if peaks is not None:
            limit, fraction, read = self.limit_ms(peaks), self.fraction(peaks), self.read_ms
            if limit is not None and fraction is not None and read is not None and self.flops is not None:
                which = "bfloat16" if peaks.for_dtype(self.dtype) == peaks.bf16 else "float32"
                out.append(
                    f"read stage: {self.flops / 1e9 / (read / 1000):.0f} GFLOP/s = {fraction:.0%} of the {which} "
                    f"peak (limit {limit:.1f} ms, {read / limit:.1f}x above it)"
                )
        return out

    def as_dict(self, peaks: Peaks | None = None) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "dtype": self.dtype,
            "questions": self.questions,
            "ms": self.ms,
            "whole_ms": self.whole_ms,
            "p50_ms": self.p50_ms,
            "windows_per_question": len(self.windows) / self.questions if self.questions else None,
            "tokens_per_window": sum(self.windows) / len(self.windows) if self.windows else None,
            "read_gflop": None if self.flops is None else self.flops / 1e9,
            "limit_ms": self.limit_ms(peaks) if peaks else None,
            "fraction_of_peak": self.fraction(peaks) if peaks else None,
        }


def measure_stages(assistant: Any, questions: Sequence[str]) -> Breakdown:
    """Time each stage of `assistant.ask` over `questions` (after a few untimed ones).

    The stages are timed by wrapping the functions the question path calls, and unwrapped after:
    the embedder's `encode_queries`, the retriever's `retrieve` (less the embedding inside it),
    `qa.reader.window_encodings` (a module global that `Reader.read` calls), the reader's `logits`
    (it counts the tokens of every window too) and `qa.assistant.decode`.
    """
    import qa.assistant
    import qa.reader

    assistant.warm_up()
    for q in questions[:WARM_QUESTIONS]:
        assistant.ask(q)
    reader = assistant.reader
    timer = Timer()
    windows: list[int] = []

    def counting(real: Callable[..., Any]) -> Callable[..., Any]:
        def logits(w: Any, *args: Any, **kwargs: Any) -> Any:
            windows.extend(len(e.ids) for e in w.encodings)
            return real(w, *args, **kwargs)

        return timer.wrap(READ, logits)

    totals: list[float] = []
    with (
        _patched(assistant.embedder, "encode_queries", lambda f: timer.wrap("embed query", f)),
        _patched(assistant.retriever, "retrieve", lambda f: timer.wrap("retrieve (with embedding)", f)) as retr,
        _patched(qa.reader, "window_encodings", lambda f: timer.wrap("tokenize", f)),
        _patched(reader, "logits", counting),
        _patched(qa.assistant, "decode", lambda f: timer.wrap("decode", f)),
    ):
        for q in questions:
            t = time.perf_counter()
            assistant.ask(q)
            totals.append(time.perf_counter() - t)
    n = len(questions)
    ms = {k: 1000 * v / n for k, v in timer.spent.items()}
    if retr:
        ms["retrieve"] = ms.pop("retrieve (with embedding)", 0.0) - ms.get("embed query", 0.0)
    whole = 1000 * sum(totals) / n
    ms[OTHER] = whole - sum(ms.get(name, 0.0) for name in STAGES)
    shape = reader_shape(reader.model_name)
    flops = reader_flops(shape, windows) / n if shape is not None and windows else None
    return Breakdown(
        backend=getattr(reader, "backend", "") or "?",
        dtype=getattr(reader, "dtype", "") or "?",
        questions=n,
        ms=ms,
        whole_ms=whole,
        p50_ms=1000 * statistics.median(totals),
        windows=windows,
        flops=flops,
    )


def stage_breakdown(assistant: Any, questions: Sequence[str], peaks: Peaks | None = None) -> list[str]:
    """The breakdown's lines for one assistant (its reader's backend); measures the peak when not given."""
    found = measure_stages(assistant, questions)
    if peaks is None:
        peaks = matmul_peaks(reader_shape(assistant.reader.model_name))
        return [*found.lines(peaks), peaks.line()]
    return found.lines(peaks)


def fraction_lines(found: Sequence[Breakdown], peaks: Peaks) -> list[str]:
    """One line: the share of the FLOP limit the read stage reaches, per backend."""
    parts = []
    for b in found:
        fraction, limit = b.fraction(peaks), b.limit_ms(peaks)
        if fraction is None or limit is None or b.read_ms is None:
            parts.append(f"{b.backend} —")
        else:
            parts.append(f"{b.backend} {fraction:.0%} ({b.read_ms:.1f} ms against a limit of {limit:.1f} ms)")
    return ["read stage, share of the FLOP limit: " + "; ".join(parts)]


# --- the command --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", choices=("onnx", "torch", "both"), default="both", help="Which backend(s) to measure."
    )
    parser.add_argument("--questions", type=Path, default=QUESTIONS, help="Questions file, one per line.")
    parser.add_argument("--reader-model", default=None, help="Reader folder [default: $QA_READER_MODEL, else shipped].")
    args = parser.parse_args(argv)
    # As `qa` runs (see benchmarks/load.py); before torch or onnxruntime start their thread pools.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from qa.assistant import Assistant
    from qa.loading import resolve_reader_model
    from qa.settings import Settings

    backends = ["onnx", "torch"] if args.backend == "both" else [args.backend]
    questions = read_questions(args.questions)
    reader = resolve_reader_model(args.reader_model)
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads")
    found: list[Breakdown] = []
    with tempfile.TemporaryDirectory(prefix="qa-stages-") as tmp:
        seeds, index = Path(tmp) / "seeds", Path(tmp) / "index"
        seeds.mkdir()
        shutil.copy2(ARTICLE, seeds / ARTICLE.name)
        for backend in backends:
            settings = Settings(seeds=seeds, index_dir=index, reader_model=reader, backend=backend)
            assistant = Assistant(settings=settings, log=lambda m: None)
            assistant.build_index(progress=False)  # the first backend indexes the article, without a progress bar
            found.append(measure_stages(assistant, questions))
            del assistant
    peaks = matmul_peaks(reader_shape(reader), _tokens_per_question(found))
    for b in found:
        print()
        print("\n".join(b.lines(peaks)))
    print()
    print(peaks.line())
    print("\n".join(fraction_lines(found, peaks)))
    return 0


def _tokens_per_question(found: Sequence[Breakdown]) -> int:
    b = next((b for b in found if b.windows), None)
    return round(sum(b.windows) / b.questions) if b else 480


if __name__ == "__main__":
    sys.exit(main())

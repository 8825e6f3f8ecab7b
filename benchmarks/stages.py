"""Where a warm question's time goes, stage by stage, against what this CPU can do.

For the questions of benchmarks/questions.txt about the bundled article, one at a time, warm:
ms per stage (embed the query, retrieve, tokenize, read, decode), the reader's FLOPs per
question, this machine's measured matmul peak (float32, and bfloat16 where the CPU has it) and
so the share of the limit the read stage reaches.

    python benchmarks/stages.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `qa` runs (see benchmarks/load.py)

from load import cpu_name  # noqa: E402  (benchmarks/load.py, beside this script)


def matmul_peak(dtype: object, n: int = 1024, repeats: int = 20) -> float:
    """GFLOP/s of a square matmul on this machine (the best of `repeats`)."""
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def reader_flops(config: object, tokens: int, seq_lengths: list[int]) -> float:
    """Multiply-adds x 2 of a BERT-style encoder plus its QA head over the given windows."""
    h = config.hidden_size  # type: ignore[attr-defined]
    ff = config.intermediate_size  # type: ignore[attr-defined]
    layers = config.num_hidden_layers  # type: ignore[attr-defined]
    dense = tokens * layers * (4 * h * h + 2 * h * ff)
    attention = sum(layers * 2 * s * s * h for s in seq_lengths)
    return 2.0 * (dense + attention + tokens * h * 2)


class Timer:
    """Wraps a function so each call's time adds up under its stage's name."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, name: str, fn: object) -> object:
        def timed(*args: object, **kwargs: object) -> object:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)  # type: ignore[operator]
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t

        return timed


def main() -> None:
    import torch

    import qa.assistant
    import qa.reader
    from qa.assistant import Assistant
    from qa.models import cpu_has_bf16

    questions = [q.strip() for q in (ROOT / "benchmarks" / "questions.txt").read_text().splitlines() if q.strip()]
    assistant = Assistant(ROOT / "seeds", ROOT / "index", log=lambda m: None).warm_up()
    for q in questions[:3]:
        assistant.ask(q)
    timer = Timer()
    reader = assistant.reader
    windows: list[int] = []
    real_logits = reader.logits

    def logits(encoding: object) -> object:
        windows.extend(len(ids) for ids in encoding["input_ids"])  # type: ignore[index]
        return real_logits(encoding)

    embed = timer.wrap("embed query", assistant.embedder.encode_queries)
    assistant.embedder.encode_queries = embed  # type: ignore[method-assign]
    retrieve = timer.wrap("retrieve (with embedding)", assistant.retriever.retrieve)
    assistant._retriever.retrieve = retrieve  # type: ignore[union-attr]
    qa.reader.tokenize_windows = timer.wrap("tokenize", qa.reader.tokenize_windows)  # type: ignore[assignment]
    reader.logits = timer.wrap("read (model forward)", logits)  # type: ignore[method-assign]
    qa.assistant.decode = timer.wrap("decode", qa.assistant.decode)  # type: ignore[assignment]
    totals = []
    for q in questions:
        t = time.perf_counter()
        assistant.ask(q)
        totals.append(time.perf_counter() - t)
    n = len(questions)
    spent = {k: 1000 * v / n for k, v in timer.spent.items()}
    spent["retrieve (with embedding)"] -= spent.get("embed query", 0.0)
    spent["retrieve"] = spent.pop("retrieve (with embedding)")
    whole = 1000 * sum(totals) / n
    flops = reader_flops(reader._model.config, sum(windows), windows) / n  # type: ignore[attr-defined]
    fp32 = matmul_peak(torch.float32)
    bf16 = matmul_peak(torch.bfloat16) if cpu_has_bf16() else None
    peak = bf16 if reader.dtype == "bfloat16" and bf16 else fp32  # type: ignore[attr-defined]
    read_ms = spent["read (model forward)"]
    limit_ms = flops / (peak * 1e9) * 1000
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"reader in {reader.dtype}; {n} questions, one at a time, warm; mean ms per question:")  # type: ignore[attr-defined]
    for name in ("embed query", "retrieve", "tokenize", "read (model forward)", "decode"):
        print(f"  {name:22} {spent.get(name, 0.0):7.1f}")
    rest = whole - sum(spent.values())
    print(f"  {'other (spans, checks)':22} {rest:7.1f}")
    print(f"  {'whole question':22} {whole:7.1f}   (p50 {1000 * statistics.median(totals):.1f})")
    per_window = sum(windows) / len(windows)
    print(f"read: {flops / 1e9:.2f} GFLOP a question over {len(windows) / n:.1f} windows of {per_window:.0f} tokens")
    bf16_text = f"{bf16:.0f}" if bf16 else "no native bf16"
    print(f"matmul peak: float32 {fp32:.0f} GFLOP/s, bfloat16 {bf16_text}")
    print(
        f"read stage: {flops / 1e9 / (read_ms / 1000):.0f} GFLOP/s = {limit_ms / read_ms:.0%} of the peak "
        f"(limit {limit_ms:.1f} ms, {read_ms / limit_ms:.1f}x above it)"
    )


if __name__ == "__main__":
    main()

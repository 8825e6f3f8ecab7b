"""How far the flat index goes: search time, memory and disk of FAISS's exact index, and BM25's, by size.

    python benchmarks/flat_index.py [--sizes 4251,38000,100000,1000000] [--bm25-max 100000]

The index is exact (`faiss.IndexFlatIP`: every question is compared with every chunk), which is
what keeps its answers reproducible, but its cost grows with the folder. This measures, for a
folder of N chunks (the archive benchmark's 50 articles are 4,251 chunks, all 480 about 38,000):
vectors on disk and in memory, the time to load them, one question's search for the passages
the assistant reads (k=10, hybrid's depth for 3 passages) and for a whole ranking (what
`--doc` asks for), a batch of 64 questions, and the same for the stored BM25 index over real
SQuAD paragraphs (repeated past the data's 20,000). The vectors are random unit vectors of the
embedder's 384 dimensions: a flat index's cost does not depend on what they hold. Chunk text
and metadata add their own bytes per chunk (`--index-dir` measures them on a real index).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `qa` runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
SQUAD = ROOT.parent / "shared" / "data" / "squad" / "squad-train-442.json"
DIM = 384
SEARCH_DEPTH = 10


def p50_ms(run: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def faiss_row(n: int, rng: object, queries: object, folder: Path) -> dict[str, float]:
    import faiss
    import numpy as np

    vectors = rng.standard_normal((n, DIM), dtype=np.float32)  # type: ignore[attr-defined]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    del vectors
    path = folder / f"v{n}.faiss"
    faiss.write_index(index, str(path))
    t = time.perf_counter()
    loaded = faiss.read_index(str(path))
    load_s = time.perf_counter() - t
    one = queries[:1]  # type: ignore[index]
    row = {
        "disk_mb": path.stat().st_size / 1e6,
        "load_s": load_s,
        "search_ms": p50_ms(lambda: loaded.search(one, SEARCH_DEPTH), 30),
        "rank_all_ms": p50_ms(lambda: loaded.search(one, n), 5),
        "batch64_ms_per_q": p50_ms(lambda: loaded.search(queries, SEARCH_DEPTH), 5) / len(queries),  # type: ignore[arg-type]
    }
    path.unlink()
    return row


def bm25_row(n: int, paragraphs: list[str], questions: list[str], folder: Path) -> dict[str, float]:
    from qa.bm25 import BM25

    texts = [paragraphs[i % len(paragraphs)] for i in range(n)]
    t = time.perf_counter()
    built = BM25.build(texts)
    build_s = time.perf_counter() - t
    path = folder / f"bm25-{n}"
    built.save(path)
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
    loaded = BM25.load(path, n)
    assert loaded is not None
    qs = iter(questions * 100)
    return {
        "build_s": build_s,
        "disk_mb": disk,
        "search_ms": p50_ms(lambda: loaded.search([next(qs)], SEARCH_DEPTH), 30),
        "rank_all_ms": p50_ms(lambda: loaded.search([next(qs)], n), 5),
    }


def per_chunk_bytes(index_dir: Path) -> tuple[int, float] | None:
    """Chunks and bytes a chunk of a real index's current generation, vectors excluded."""
    manifest = index_dir / "manifest.json"
    if not manifest.is_file():
        return None
    info = json.loads(manifest.read_text(encoding="utf-8"))
    gen = index_dir / info["generation"]
    other = sum(f.stat().st_size for f in gen.rglob("*") if f.is_file() and f.name != "vectors.faiss")
    return info["chunks"], other / max(info["chunks"], 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4251,38000,100000,1000000", help="Chunk counts to measure.")
    parser.add_argument("--bm25-max", type=int, default=100_000, help="Largest size BM25 is built at.")
    parser.add_argument("--index-dir", type=Path, default=ROOT / "index", help="A real index to size chunks by.")
    args = parser.parse_args()

    import faiss
    import numpy as np
    from bench import _cpu_model

    sizes = [int(s) for s in args.sizes.split(",")]
    data = json.loads(SQUAD.read_text(encoding="utf-8"))["data"]
    paragraphs = [p["context"] for a in data for p in a["paragraphs"]]
    questions = [q["question"] for a in data[:5] for p in a["paragraphs"] for q in p["qas"]][:200]
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((64, DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    print("article-qa flat-index benchmark")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine: {cores} usable core(s) ({_cpu_model()}); "
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} thread(s)"
    )
    sized = per_chunk_bytes(args.index_dir)
    if sized:
        print(f"{args.index_dir}: {sized[0]} chunks, {sized[1] / 1000:.2f} KB a chunk besides its vector")
    print(
        f"\n{'chunks':>9}  {'vectors MB':>10}  {'load s':>7}  {'k=10 ms':>8}  {'rank all ms':>11}  {'batch ms/q':>10}"
        f"  {'BM25 build s':>12}  {'BM25 MB':>8}  {'BM25 k=10 ms':>12}  {'BM25 all ms':>11}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            f = faiss_row(n, rng, queries, Path(tmp))
            b = bm25_row(n, paragraphs, questions, Path(tmp)) if n <= args.bm25_max else None
            line = (
                f"{n:>9,}  {f['disk_mb']:>10.1f}  {f['load_s']:>7.3f}  {f['search_ms']:>8.2f}  "
                f"{f['rank_all_ms']:>11.1f}  {f['batch64_ms_per_q']:>10.2f}"
            )
            if b:
                line += (
                    f"  {b['build_s']:>12.1f}  {b['disk_mb']:>8.1f}  {b['search_ms']:>12.2f}  {b['rank_all_ms']:>11.1f}"
                )
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

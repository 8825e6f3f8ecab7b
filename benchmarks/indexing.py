"""How fast chunks are embedded for the index, per backend, against this CPU's FLOP limit.

    python benchmarks/indexing.py [--articles N] [--backends onnx,torch,sentence-transformers]

Chunks the first N articles of the shared SQuAD data (paragraphs joined by blank lines, as the
archive benchmark writes them) as `qa index` does, then embeds them all with each way of running
the encoder, one after the other in one process: chunks/s, GFLOP/s and the share of the float32
matmul peak; and checks that each way's vectors stay within cosine 0.999 of sentence-transformers'
(the reference the index was always built with).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `qa` runs
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stages import ModelShape, matmul_peaks, reader_flops

ROOT = Path(__file__).resolve().parent.parent
SQUAD = ROOT.parent / "shared" / "data" / "squad" / "squad-train-442.json"


def articles(n: int) -> list[str]:
    data = json.loads(SQUAD.read_text(encoding="utf-8"))["data"][:n]
    return ["\n\n".join(p["context"] for p in article["paragraphs"]) for article in data]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=10, help="SQuAD articles to chunk (default 10).")
    parser.add_argument("--backends", default="onnx,torch,sentence-transformers")
    args = parser.parse_args()

    import numpy as np

    from qa.chunking import chunk_text
    from qa.embedding import Embedder
    from qa.settings import Settings

    s = Settings()
    texts = [
        c.text
        for i, text in enumerate(articles(args.articles))
        for c in chunk_text(text, f"a{i}.txt", s.chunk_size, s.chunk_overlap)
    ]
    probe = Embedder(backend="onnx")
    probe.warm_up()
    tokens = [len(e.ids) for e in probe._plain[0].encode_batch([t.strip() for t in texts])]  # type: ignore[index]
    config = json.loads((Path(probe.path) / "config.json").read_text(encoding="utf-8"))
    shape = ModelShape(config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"])
    flops = reader_flops(shape, tokens)
    peaks = matmul_peaks(shape)
    print(f"{len(texts)} chunks of {args.articles} SQuAD articles, {sum(tokens) / len(tokens):.0f} tokens on average")
    print(f"{flops / 1e9:.0f} GFLOP in all; {peaks.line()}")
    reference = None
    for backend in args.backends.split(","):
        embedder = Embedder(backend="torch" if backend == "sentence-transformers" else backend)
        if backend == "sentence-transformers":
            embedder._plain_stack = None  # type: ignore[misc]  # force the sentence-transformers path
        embedder.encode(texts[:8])  # loaded and warm
        t = time.perf_counter()
        vectors = embedder.encode(texts)
        spent = time.perf_counter() - t
        if reference is None:
            reference = vectors
        cos = float(np.min(np.sum(vectors * reference, axis=1)))
        rate = flops / spent / 1e9
        print(
            f"  {backend:22} {len(texts) / spent:7.1f} chunks/s  {rate:5.0f} GFLOP/s = {rate / peaks.fp32:4.0%} of the "
            f"float32 peak; min cosine to {args.backends.split(',')[0]}: {cos:.6f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

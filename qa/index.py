"""The persisted index: FAISS vectors, the chunks, and a manifest saying what they were built from.

Layout of `index/`:
    manifest.json          the current generation, embedding model, dimension, chunk
                           settings, every document's sha256, package version
    <generation>/vectors.faiss, <generation>/chunks.jsonl

A build writes a new generation folder, then replaces manifest.json atomically (os.replace);
a crash at any point leaves the previous manifest pointing at the previous, intact files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa import __version__
from qa.chunking import chunk_documents
from qa.errors import IndexStoreError
from qa.types import Chunk, Document

if TYPE_CHECKING:
    import numpy as np

    from qa.embedding import Embedder

INDEX_ENV = "QA_INDEX_DIR"
DEFAULT_INDEX = "index"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def index_dir(path: str | Path | None = None) -> Path:
    return Path(path if path is not None else os.environ.get(INDEX_ENV) or DEFAULT_INDEX)


@dataclass(frozen=True)
class Manifest:
    format_version: int
    package_version: str
    embed_model: str
    dimension: int
    chunk_size: int
    chunk_overlap: int
    documents: dict[str, str]  # doc_id -> sha256
    generation: str
    chunks: int
    created: str

    def staleness(self, docs: list[Document], embed_model: str, chunk_size: int, chunk_overlap: int) -> str | None:
        """Why this index cannot answer for these documents and settings, or None if it can."""
        if self.format_version != FORMAT_VERSION:
            return f"it was written in index format {self.format_version}, this version reads {FORMAT_VERSION}"
        if self.embed_model != embed_model:
            return f"it was built with embedding model {self.embed_model!r}, not {embed_model!r}"
        if (self.chunk_size, self.chunk_overlap) != (chunk_size, chunk_overlap):
            return (
                f"it was built with chunks of {self.chunk_size}/{self.chunk_overlap} characters, "
                f"not {chunk_size}/{chunk_overlap}"
            )
        current = {d.doc_id: d.sha256 for d in docs}
        added = sorted(set(current) - set(self.documents))
        removed = sorted(set(self.documents) - set(current))
        changed = sorted(k for k in set(current) & set(self.documents) if current[k] != self.documents[k])
        for what, names in (("changed", changed), ("added", added), ("removed", removed)):
            if names:
                return f"{len(names)} article(s) {what} since it was built ({', '.join(names[:3])})"
        return None


@dataclass
class Index:
    """Chunks and their vectors, loaded in memory; `search` returns (chunk position, score)."""

    manifest: Manifest
    chunks: list[Chunk]
    faiss_index: Any

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        k = min(k, len(self.chunks))
        scores, ids = self.faiss_index.search(query_vectors, k)
        return [
            [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]


def read_manifest(folder: Path) -> Manifest | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Manifest(**raw)
    except (OSError, ValueError, TypeError) as exc:
        raise IndexStoreError(f"index manifest {path} is corrupt ({exc}); rebuild it with: qa index --force") from exc


def load_index(folder: Path, manifest: Manifest) -> Index:
    import faiss

    gen = folder / manifest.generation
    try:
        chunks = [Chunk(**json.loads(line)) for line in (gen / "chunks.jsonl").read_text(encoding="utf-8").splitlines()]
        vectors = faiss.read_index(str(gen / "vectors.faiss"))
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        raise IndexStoreError(
            f"index in {folder} is corrupt or incomplete ({str(exc).splitlines()[0][:200]}); "
            "rebuild it with: qa index --force"
        ) from exc
    if vectors.ntotal != len(chunks) or vectors.d != manifest.dimension or len(chunks) != manifest.chunks:
        raise IndexStoreError(
            f"index in {folder} is inconsistent ({vectors.ntotal} vectors of size {vectors.d}, {len(chunks)} chunks, "
            f"manifest says {manifest.chunks} of size {manifest.dimension}); rebuild it with: qa index --force"
        )
    return Index(manifest, chunks, vectors)


def build_index(
    folder: Path, docs: list[Document], embedder: Embedder, chunk_size: int, chunk_overlap: int, progress: bool = True
) -> Index:
    """Chunk, embed and write a new generation, then switch the manifest to it atomically."""
    import faiss

    chunks = chunk_documents(docs, chunk_size, chunk_overlap)
    vectors = embedder.encode([c.text for c in chunks], progress=progress)
    faiss_index = faiss.IndexFlatIP(vectors.shape[1])  # exact search; vectors are normalised
    faiss_index.add(vectors)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        package_version=__version__,
        embed_model=embedder.name,
        dimension=int(vectors.shape[1]),
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        documents={d.doc_id: d.sha256 for d in docs},
        generation=f"gen-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        chunks=len(chunks),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        old = read_manifest_quietly(folder)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
        staging.chmod(0o755)  # mkdtemp makes it private; the index is as shareable as the repo
        with (staging / "chunks.jsonl").open("w", encoding="utf-8") as f:
            for c in chunks:
                f.write(json.dumps(asdict(c), ensure_ascii=False) + "\n")
        faiss.write_index(faiss_index, str(staging / "vectors.faiss"))
        _fsync_dir(staging)
        staging.rename(folder / manifest.generation)
        _atomic_write(folder / MANIFEST, json.dumps(asdict(manifest), indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise IndexStoreError(f"cannot write the index to {folder} ({exc}); pass a writable --index-dir") from exc
    _remove_old_generations(folder, keep=manifest.generation, previous=old.generation if old else None)
    return Index(manifest, chunks, faiss_index)


def read_manifest_quietly(folder: Path) -> Manifest | None:
    try:
        return read_manifest(folder)
    except IndexStoreError:
        return None


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    for p in path.iterdir():
        with p.open("rb") as f:
            os.fsync(f.fileno())


def _remove_old_generations(folder: Path, keep: str, previous: str | None) -> None:
    """Drop generations no manifest points to (and stale staging folders); never the current one."""
    for p in folder.iterdir():
        if p.is_dir() and p.name != keep and (p.name.startswith(("gen-", ".staging-")) or p.name == previous):
            shutil.rmtree(p, ignore_errors=True)

"""The persisted index: FAISS vectors, the chunks, and a manifest saying what they were built from.

Layout of `index/`:
    manifest.json          the current generation, embedding model, dimension, chunk
                           settings, every document's sha256, package version
    <generation>/vectors.faiss, <generation>/chunks.jsonl, <generation>/bm25/ (`qa.bm25`)
    <generation>/documents.jsonl   the text extracted from each web page and PDF (with its sha256,
                           title, date and URL): the article its chunks are slices of, so an
                           unchanged file is not extracted again and its offsets never move

A build writes a new generation folder, then replaces manifest.json atomically (os.replace);
a crash at any point leaves the previous manifest pointing at the previous, intact files.
The index itself is built in memory (`index_in_memory`) and then written; an article given as
text (`Assistant.from_text`) is answered from that in-memory index, and nothing is written.

Processes sharing the folder coordinate with flock(2), as `flock(1)` does:
    .lock                  held exclusively by a writer for its whole build (`writing`), so two
                           builds never delete each other's generations
    the folder itself      shared by readers while they read the manifest and the generation it
                           names (`reading`); exclusive only while a writer switches the manifest
                           and deletes the old generations. Locking the folder needs no file, so
                           readers of a read-only index (an installed copy) lock it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.bm25 import BM25
from qa.chunking import chunk_documents
from qa.errors import IndexStoreError
from qa.extraction import is_extracted
from qa.files import atomic_write_text
from qa.types import Chunk, Document
from qa.version import package_version

if TYPE_CHECKING:
    import numpy as np

    from qa.protocols import EmbedderLike

MANIFEST = "manifest.json"
BM25_DIR = "bm25"
DOCUMENTS = "documents.jsonl"
WRITER_LOCK = ".lock"
FORMAT_VERSION = 1


def index_dir(path: str | Path | None = None, seeds: Path | None = None) -> Path:
    from qa.settings import default_index, default_seeds

    return Path(path) if path is not None else default_index(seeds if seeds is not None else default_seeds())


def check_index_dir(folder: Path) -> None:
    """Refuse an index path that can never be a folder (a file, a device, or a path under one),
    before any articles are embedded for it."""
    for path in (folder, *folder.parents):  # the nearest part of the path that exists
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return  # cannot look (permissions): writing will say what is wrong
        if stat.S_ISDIR(mode):
            return
        where = "is not a folder" if path == folder else f"cannot be created: {path} is not a folder"
        raise IndexStoreError(f"QA index folder {folder} {where}; pass a folder to --index-dir (or set QA_INDEX_DIR)")


@contextlib.contextmanager
def writing(folder: Path, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Be the only writer of the index in `folder` until the block ends (another waits, saying so).

    Taken before any embedding, so an unwritable folder fails before the work too.
    """
    check_index_dir(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise IndexStoreError(
            f"cannot write the index to {folder} ({exc.strerror}); pass a writable --index-dir (or set QA_INDEX_DIR)"
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None:
                log(f"waiting for another qa index on {folder}…")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock, also when the build failed


def reading(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Read the manifest and the generation it names inside this block: no writer switches or
    deletes generations meanwhile."""
    return _folder_lock(folder, fcntl.LOCK_SH)


@contextlib.contextmanager
def _folder_lock(folder: Path, operation: int) -> Iterator[None]:
    try:
        fd: int | None = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        fd = None  # no folder yet (so nothing to read) or one this user cannot open: nothing to guard
    try:
        if fd is not None:
            # A file system without flock (some network mounts) leaves the folder unguarded, as before.
            with contextlib.suppress(OSError):
                fcntl.flock(fd, operation)
        yield
    finally:
        if fd is not None:
            os.close(fd)


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
    # Articles whose chunks and vectors were copied from the previous generation, not re-embedded.
    reused: list[str] = field(default_factory=list)

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
    path: Path | None = None  # the generation folder (BM25 is stored there too)

    @property
    def bm25_path(self) -> Path | None:
        """Where this generation stores its BM25 index (None: held in memory, nothing stored)."""
        return self.path / BM25_DIR if self.path is not None else None

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        k = min(k, len(self.chunks))
        scores, ids = self.faiss_index.search(query_vectors, k)
        return [
            [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]


_MANIFEST_TYPES: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "package_version": str,
    "embed_model": str,
    "dimension": int,
    "chunk_size": int,
    "chunk_overlap": int,
    "documents": dict,
    "generation": str,
    "chunks": int,
    "created": str,
}
_OPTIONAL_TYPES: dict[str, type] = {"reused": list}


def read_manifest(folder: Path) -> Manifest | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        problem = _manifest_problem(raw)
        if problem:
            raise ValueError(problem)
        return Manifest(**raw)
    except (OSError, ValueError, TypeError) as exc:
        raise IndexStoreError(f"index manifest {path} is corrupt ({exc}); rebuild it with: qa index --force") from exc


def _manifest_problem(raw: object) -> str | None:
    """What is wrong with a manifest's JSON (valid JSON can still hold the wrong types)."""
    if not isinstance(raw, dict):
        return "not a JSON object"
    for key, kind in _MANIFEST_TYPES.items():
        value = raw.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{key!r} should be {getattr(kind, '__name__', kind)}, got {type(value).__name__}"
    for key, kind in _OPTIONAL_TYPES.items():
        if key in raw and not isinstance(raw[key], kind):
            return f"{key!r} should be {kind.__name__}, got {type(raw[key]).__name__}"
    unknown = set(raw) - set(_MANIFEST_TYPES) - set(_OPTIONAL_TYPES)
    if unknown:
        return f"unknown fields {sorted(unknown)}"
    docs = raw["documents"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in docs.items()):
        return "'documents' should map article names to sha256 strings"
    gen = raw["generation"]
    if not gen or "/" in gen or "\\" in gen or gen.startswith("."):
        return f"'generation' {gen!r} is not a folder name of the index"
    return None


def _chunk(line: str) -> Chunk:
    raw = json.loads(line)
    if not isinstance(raw, dict):
        raise ValueError("a chunk line is not a JSON object")
    chunk = Chunk(**raw)
    if not (
        isinstance(chunk.doc_id, str)
        and isinstance(chunk.text, str)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in (chunk.chunk_id, chunk.start, chunk.end))
    ):
        raise ValueError(f"chunk {raw.get('chunk_id')!r} has fields of the wrong type")
    return chunk


def load_index(folder: Path, manifest: Manifest) -> Index:
    """The generation `manifest` names; read the manifest and call this within `reading(folder)`."""
    import faiss

    gen = folder / manifest.generation
    try:
        text = (gen / "chunks.jsonl").read_text(encoding="utf-8")
        chunks = [_chunk(line) for line in text.split("\n") if line]
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
    return Index(manifest, chunks, vectors, gen)


def reusable_vectors(previous: Index | None, embed_model: str, chunks: list[Chunk]) -> dict[int, int]:
    """New chunk position -> previous chunk position, for every chunk whose vector can be copied.

    Only the chunks of an article that is byte-for-byte unchanged (same sha256, same chunk
    settings, same embedding model) qualify, and only when its chunks came out identical.
    """
    if previous is None or previous.manifest.embed_model != embed_model:
        return {}
    old: dict[str, list[int]] = {}
    for i, c in enumerate(previous.chunks):
        old.setdefault(c.doc_id, []).append(i)
    new: dict[str, list[int]] = {}
    for i, c in enumerate(chunks):
        new.setdefault(c.doc_id, []).append(i)
    out: dict[int, int] = {}
    for doc_id, positions in new.items():
        before = old.get(doc_id, [])
        if len(before) != len(positions):
            continue
        pairs = list(zip(positions, before, strict=True))
        if all(previous.chunks[j] == chunks[i] for i, j in pairs):
            out.update(pairs)
    return out


def load_current(folder: Path) -> Index | None:
    """The index the manifest names (None when there is none), read as one consistent snapshot."""
    with reading(folder):
        manifest = read_manifest(folder)
        return load_index(folder, manifest) if manifest is not None else None


def build_index(folder: Path, *args: Any, log: Callable[[str], None] | None = None, **kwargs: Any) -> Index:
    """`write_generation(folder, ...)`, with the same arguments, as the only writer of `folder`
    (waiting, and saying so through `log`, while another build finishes)."""
    with writing(folder, log):
        return write_generation(folder, *args, **kwargs)


def index_in_memory(
    docs: list[Document],
    embedder: EmbedderLike,
    chunk_size: int,
    chunk_overlap: int,
    progress: bool = True,
    previous: Index | None = None,
) -> Index:
    """Chunk and embed the articles into an index held in memory; nothing is written anywhere.

    Its `path` is None, so a Retriever builds its BM25 index in memory too. `write_generation`
    stores what this builds; an article given as text (`Assistant.from_text`) is answered from it
    as it is. With `previous` (the index being replaced), unchanged articles keep their vectors:
    only the added or changed articles are embedded, so the cost follows the change, not the folder.
    """
    import faiss
    import numpy as np

    chunks = chunk_documents(docs, chunk_size, chunk_overlap)
    same_settings = previous is not None and (previous.manifest.chunk_size, previous.manifest.chunk_overlap) == (
        chunk_size,
        chunk_overlap,
    )
    reuse = reusable_vectors(previous if same_settings else None, embedder.name, chunks)
    todo = [i for i in range(len(chunks)) if i not in reuse]
    fresh = embedder.encode([chunks[i].text for i in todo], progress=progress) if todo else None
    if reuse:
        assert previous is not None
        old_vectors = previous.faiss_index.reconstruct_n(0, previous.faiss_index.ntotal)
        dim = old_vectors.shape[1]
        if fresh is not None and fresh.shape[1] != dim:
            raise IndexStoreError(f"the embedder gives {fresh.shape[1]} dimensions, the index {dim}; qa index --force")
        vectors = np.zeros((len(chunks), dim), dtype=np.float32)
        for i, j in reuse.items():
            vectors[i] = old_vectors[j]
        if fresh is not None:
            vectors[todo] = fresh
    else:
        assert fresh is not None
        vectors = np.asarray(fresh, dtype=np.float32)
    faiss_index = faiss.IndexFlatIP(vectors.shape[1])  # exact search; vectors are normalised
    faiss_index.add(vectors)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        package_version=package_version(),
        embed_model=embedder.name,
        dimension=int(vectors.shape[1]),
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        documents={d.doc_id: d.sha256 for d in docs},
        generation=f"gen-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        chunks=len(chunks),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        reused=sorted({chunks[i].doc_id for i in reuse}),
    )
    return Index(manifest, chunks, faiss_index, None)


def write_generation(folder: Path, docs: list[Document], *args: Any, **kwargs: Any) -> Index:
    """Build the index in memory (`index_in_memory(...)`, with the same arguments: the articles, the
    embedder, the chunk size and overlap, `progress`, the `previous` index), write it as a new
    generation, then switch the manifest to it atomically. The caller holds `writing(folder)`."""
    import faiss

    built = index_in_memory(docs, *args, **kwargs)
    manifest, chunks = built.manifest, built.chunks
    staging: Path | None = None
    try:
        old = read_manifest_quietly(folder)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
        staging.chmod(0o755)  # mkdtemp makes it private; the index is as shareable as the repo
        with (staging / "chunks.jsonl").open("w", encoding="utf-8") as f:
            for c in chunks:
                f.write(json.dumps(asdict(c), ensure_ascii=False) + "\n")
        with (staging / DOCUMENTS).open("w", encoding="utf-8") as f:
            for d in docs:
                if is_extracted(d.doc_id):
                    f.write(json.dumps(_stored(d), ensure_ascii=False) + "\n")
        faiss.write_index(built.faiss_index, str(staging / "vectors.faiss"))
        # BM25 is stored with the vectors, so no process rebuilds it at warm-up.
        BM25.build([c.text for c in chunks]).save(staging / BM25_DIR)
        _fsync_dir(staging)
        staging.rename(folder / manifest.generation)
        staging = None
    except (OSError, RuntimeError) as exc:  # faiss reports a full disk as RuntimeError
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1][:200]
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(folder / manifest.generation, ignore_errors=True)
        raise IndexStoreError(
            f"cannot write the index to {folder} ({reason}); free some space or pass a writable --index-dir "
            "(the previous index is unchanged)"
        ) from exc
    with _folder_lock(folder, fcntl.LOCK_EX):  # readers wait out the switch and never see half of it
        try:
            atomic_write_text(
                folder / MANIFEST,
                json.dumps(asdict(manifest), indent=2, ensure_ascii=False) + "\n",
                "--index-dir",
                IndexStoreError,
            )
        except IndexStoreError:
            shutil.rmtree(folder / manifest.generation, ignore_errors=True)
            raise
        _remove_old_generations(folder, keep=manifest.generation, previous=old.generation if old else None)
    return replace(built, path=folder / manifest.generation)


def _stored(doc: Document) -> dict[str, Any]:
    return {k: v for k, v in asdict(doc).items() if k != "path"}


def stored_documents(folder: Path) -> dict[str, Document]:
    """The articles extracted from web pages and PDFs that the current index was built from, by doc id
    (their `path` is empty). Nothing when there is no index or it cannot be read: they are extracted again."""
    out: dict[str, Document] = {}
    with reading(folder):
        try:
            manifest = read_manifest(folder)
            if manifest is None:
                return out
            text = (folder / manifest.generation / DOCUMENTS).read_text(encoding="utf-8")
            for line in text.split("\n"):
                if line:
                    doc = Document(path="", **json.loads(line))
                    if isinstance(doc.text, str) and isinstance(doc.sha256, str):
                        out[doc.doc_id] = doc
        except (OSError, ValueError, TypeError, IndexStoreError):
            return {}
    return out


def read_manifest_quietly(folder: Path) -> Manifest | None:
    try:
        return read_manifest(folder)
    except IndexStoreError:
        return None


def _fsync_dir(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())


def _remove_old_generations(folder: Path, keep: str, previous: str | None) -> None:
    """Drop generations no manifest points to (and staging folders a crashed build left; with the
    writer lock held, no other build has one); never the current one."""
    for p in folder.iterdir():
        if p.is_dir() and p.name != keep and (p.name.startswith(("gen-", ".staging-")) or p.name == previous):
            shutil.rmtree(p, ignore_errors=True)

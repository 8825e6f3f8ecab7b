"""The persisted index: round trip, staleness, atomic writes, corruption; and document reading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qa.documents import load_documents
from qa.embedding import Embedder
from qa.errors import DocumentError, IndexStoreError
from qa.index import MANIFEST, build_index, load_index, read_manifest


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    e = Embedder()
    e.warm_up()
    return e


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(text, encoding="utf-8")
    return p


def index_one(tmp_path: Path, embedder: Embedder, text: str) -> Path:
    """seeds/a.txt holding `text`, indexed into tmp_path/index (chunks 300/100)."""
    seeds = tmp_path / "seeds"
    write(seeds, "a.txt", text)
    build_index(tmp_path / "index", load_documents(seeds), embedder, 300, 100, progress=False)
    return seeds


def test_round_trip(tmp_path: Path, embedder: Embedder, article_text: str) -> None:
    seeds = tmp_path / "seeds"
    write(seeds, "a.txt", article_text)
    write(
        seeds, "b.md", "The second article. It talks about “quotes” and repeats. It talks about “quotes” and repeats."
    )
    docs = load_documents(seeds)
    built = build_index(tmp_path / "index", docs, embedder, 300, 100, progress=False)
    manifest = read_manifest(tmp_path / "index")
    assert manifest is not None and manifest == built.manifest
    assert manifest.embed_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest.dimension == 384 and manifest.chunk_size == 300 and manifest.chunk_overlap == 100
    assert set(manifest.documents) == {"a.txt", "b.md"}
    loaded = load_index(tmp_path / "index", manifest)
    assert loaded.chunks == built.chunks
    texts = {d.doc_id: d.text for d in docs}
    for c in loaded.chunks:
        assert texts[c.doc_id][c.start : c.end] == c.text
    # The stored vectors are the chunks' normalised embeddings, in chunk order.
    query = embedder.encode([loaded.chunks[3].text])
    assert np.isclose(np.linalg.norm(query), 1.0, atol=1e-4)
    assert loaded.search(query, 1)[0][0][0] == 3
    assert manifest.staleness(docs, embedder.name, 300, 100) is None


def test_staleness_names_the_reason(tmp_path: Path, embedder: Embedder) -> None:
    seeds = index_one(tmp_path, embedder, "First version of the article.")
    manifest = read_manifest(tmp_path / "index")
    assert manifest is not None
    assert "other" in manifest.staleness(load_documents(seeds), "other", 300, 100)
    assert "chunks of 300/100" in manifest.staleness(load_documents(seeds), embedder.name, 400, 100)
    write(seeds, "a.txt", "Second version of the article.")
    assert "changed" in manifest.staleness(load_documents(seeds), embedder.name, 300, 100)
    write(seeds, "new.txt", "Another article.")
    (seeds / "a.txt").unlink()
    reason = manifest.staleness(load_documents(seeds), embedder.name, 300, 100)
    assert "added" in reason or "removed" in reason


def test_assistant_rebuilds_a_stale_index_and_never_answers_from_it(tmp_path: Path, tiny_reader: Path) -> None:
    from qa.assistant import Assistant

    seeds = tmp_path / "seeds"
    write(seeds, "a.txt", "The launch was in March. The rocket was red.")
    logs: list[str] = []
    a = Assistant(seeds, tmp_path / "index", reader_model=str(tiny_reader), log=logs.append)
    assert a.ask("When was the launch?").passages[0].chunk.doc_id == "a.txt"
    assert any("no index" in m for m in logs)
    write(seeds, "b.txt", "A brand new article about submarines.")
    fresh = Assistant(seeds, tmp_path / "index", reader_model=str(tiny_reader), log=logs.append)
    result = fresh.ask("What is the new article about?")
    assert any("added" in m for m in logs)
    assert {p.chunk.doc_id for p in result.passages} == {"a.txt", "b.txt"}
    strict = Assistant(seeds, tmp_path / "index", reader_model=str(tiny_reader), auto_index=False)
    write(seeds, "b.txt", "Changed again.")
    with pytest.raises(IndexStoreError, match="qa index"):
        strict.ask("What changed?")


def test_crash_mid_write_keeps_the_old_index(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faiss

    seeds = index_one(tmp_path, embedder, "The old article text.")
    before = (tmp_path / "index" / MANIFEST).read_text()
    write(seeds, "a.txt", "The new article text, never indexed.")

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", crash)
    with pytest.raises(IndexStoreError, match="cannot write the index"):
        build_index(tmp_path / "index", load_documents(seeds), embedder, 300, 100, progress=False)
    monkeypatch.undo()
    assert (tmp_path / "index" / MANIFEST).read_text() == before
    manifest = read_manifest(tmp_path / "index")
    assert manifest is not None
    assert load_index(tmp_path / "index", manifest).chunks[0].text == "The old article text."


def test_corrupt_index_files_give_one_clear_error(tmp_path: Path, embedder: Embedder) -> None:
    index_one(tmp_path, embedder, "Some article. With two sentences.")
    manifest = read_manifest(tmp_path / "index")
    assert manifest is not None
    vectors = tmp_path / "index" / manifest.generation / "vectors.faiss"
    vectors.write_bytes(vectors.read_bytes()[:20])
    with pytest.raises(IndexStoreError, match=r"corrupt.*qa index --force"):
        load_index(tmp_path / "index", manifest)
    (tmp_path / "index" / MANIFEST).write_text("{not json")
    with pytest.raises(IndexStoreError, match=r"manifest.*corrupt"):
        read_manifest(tmp_path / "index")
    (tmp_path / "index" / MANIFEST).write_text(json.dumps({"unexpected": 1}))
    with pytest.raises(IndexStoreError):
        read_manifest(tmp_path / "index")


def test_document_errors(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="does not exist"):
        load_documents(tmp_path / "missing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DocumentError, match=r"no \.txt, \.md, \.html or \.pdf"):
        load_documents(tmp_path / "empty_dir")
    write(tmp_path / "blank", "a.txt", "  \n ")
    with pytest.raises(DocumentError, match="is empty"):
        load_documents(tmp_path / "blank")
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "a.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DocumentError, match="not UTF-8"):
        load_documents(tmp_path / "latin")


def test_documents_are_read_exactly(tmp_path: Path) -> None:
    raw = "Line one “quoted”.\r\nLine two’s  double  space.\r\n"
    (tmp_path / "a.txt").write_bytes(raw.encode("utf-8"))
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF")
    (doc,) = load_documents(tmp_path)
    assert doc.text == raw and doc.doc_id == "a.txt"


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_query_and_chunk_vectors_equal_sentence_transformers_vectors(backend: str) -> None:
    """Both ways of running the encoder give the vectors sentence-transformers gives (else retrieval drifts)."""
    from sentence_transformers import SentenceTransformer

    fresh = Embedder(backend=backend)
    texts = ["Who devised the process?", "x", "  padded  ", "What’s going on with “quotes”? " * 80]
    light = fresh.encode_queries(texts)
    assert fresh._model is None and fresh.backend == backend, "the plain stack must not load sentence-transformers"
    reference = SentenceTransformer(fresh.path, device="cpu").encode(texts, normalize_embeddings=True)
    assert np.abs(light - reference).max() < 1e-5
    assert np.abs(fresh.encode(texts[::-1]) - reference[::-1]).max() < 1e-5  # length-sorted batches, order kept
    assert np.allclose(np.linalg.norm(light, axis=1), 1.0, atol=1e-5)


def test_many_texts_are_tokenized_a_window_at_a_time(embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexing a big folder must not hold every chunk's tokens at once (its memory grew with the
    folder): windows of TOKENIZE_WINDOW texts, each still length-sorted, give the same vectors."""
    import qa.embedding

    texts = [f"Paragraph {i}: " + "the archive grows " * (i % 7) for i in range(23)]
    whole = embedder.encode(texts)
    seen: list[int] = []
    tokenize = embedder._token_rows
    monkeypatch.setattr(embedder, "_token_rows", lambda part: seen.append(len(part)) or tokenize(part))
    monkeypatch.setattr(qa.embedding, "TOKENIZE_WINDOW", 5)
    windowed = embedder.encode(texts)
    assert seen == [5, 5, 5, 5, 3]
    assert windowed.shape == whole.shape and windowed.dtype == np.float32
    assert np.abs(windowed - whole).max() < 1e-5  # the order is kept; padding differs: float noise only


class _NoEncoding:
    name = "never-used"

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        raise AssertionError("nothing may be embedded for an index that cannot be written")


@pytest.mark.parametrize("where", ["file", "file/index"])
def test_an_index_path_that_cannot_be_a_folder_is_refused_before_embedding(tmp_path: Path, where: str) -> None:
    seeds = tmp_path / "seeds"
    write(seeds, "a.txt", "Some article.")
    (tmp_path / "file").write_text("not an index")
    with pytest.raises(IndexStoreError, match=r"QA index folder .* not a folder; pass a folder to --index-dir"):
        build_index(tmp_path / where, load_documents(seeds), _NoEncoding(), 300, 100, progress=False)  # type: ignore[arg-type]
    assert (tmp_path / "file").read_text() == "not an index"

"""The assistant's pipeline with pure-Python fake models: decoding, alternatives, abstention,
articles that change under a running assistant, and where settings come from."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fakes import FakeEmbedder, FakeReader, FakeRetriever

from qa.assistant import Assistant
from qa.errors import DocumentError, InputError
from qa.protocols import EmbedderLike, ReaderLike, RetrieverLike
from qa.settings import PROJECT_ROOT, Settings
from qa.squad import SquadExample, predict_spans
from qa.types import Chunk

TEXT = (
    "The missiles can reach hundreds of miles into Russia. Officials said the policy is new. "
    "Critics say hundreds of miles is not far enough. The Wall Street Journal reported it first."
)


def make(tmp_path: Path, answers: dict[str, str], text: str = TEXT, **kw: object) -> Assistant:
    seeds = tmp_path / "seeds"
    seeds.mkdir(exist_ok=True)
    (seeds / "a.txt").write_text(text, encoding="utf-8")
    return Assistant(
        seeds,
        tmp_path / "index",
        reader=FakeReader(answers, **kw),  # type: ignore[arg-type]
        embedder=FakeEmbedder(),
        chunk_size=120,
        chunk_overlap=40,
        log=lambda msg: None,
    )


def test_the_fakes_meet_the_protocols() -> None:
    assert isinstance(FakeReader({}), ReaderLike) and isinstance(FakeEmbedder(), EmbedderLike)
    assert isinstance(FakeRetriever([]), RetrieverLike)


def test_an_injected_retriever_is_asked_for_one_article_and_kept(tmp_path: Path) -> None:
    q = "Who reported it?"
    other = "Nobody reported anything. The Wall Street Journal was closed that day."
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    texts = {"a.txt": TEXT, "b.txt": other}
    for name, text in texts.items():
        (seeds / name).write_text(text, encoding="utf-8")
    retriever = FakeRetriever([Chunk(name, 0, 0, len(text), text) for name, text in texts.items()])
    assistant = Assistant(
        seeds,
        tmp_path / "index",
        reader=FakeReader({q: "Wall Street Journal"}),
        embedder=FakeEmbedder(),
        retriever=retriever,
        passages=2,
        log=lambda msg: None,
    )
    a = assistant.ask(q, doc_id="b.txt").answer
    assert a is not None and a.doc_id == "b.txt" and other[a.start : a.end] == "Wall Street Journal"
    assert retriever.calls == [(2, "b.txt")]  # the article filter is the retriever's, at the passages asked for
    assert assistant.with_retrieval("bm25").retriever is retriever


def test_alternatives_never_repeat_the_same_words(tmp_path: Path) -> None:
    q = "How far can the missiles reach?"
    assistant = make(tmp_path, {q: "hundreds of miles"})
    result = assistant.ask(q, top_k=3)
    texts = [a.text for a in result.answers]
    assert texts == ["hundreds of miles"]  # the second place says the same thing: not an alternative
    best = result.answers[0]
    assert TEXT[best.start : best.end] == best.text and best.start == TEXT.index("hundreds of miles")


def test_answers_are_exact_and_cite_their_sentence(tmp_path: Path) -> None:
    q = "Who reported it?"
    assistant = make(tmp_path, {q: "Wall Street Journal"})
    a = assistant.ask(q).answer
    assert a is not None and TEXT[a.start : a.end] == "Wall Street Journal"
    assert a.sentence == "The Wall Street Journal reported it first."
    assert TEXT[a.sentence_start : a.sentence_end] == a.sentence
    assert math.isclose(a.score, 1 / (1 + math.exp(-5.0)))


def test_below_the_threshold_it_abstains_and_keeps_the_closest(tmp_path: Path) -> None:
    q = "Who reported it?"
    assistant = make(tmp_path, {q: "Wall Street Journal"}, null_threshold=6.0)
    result = assistant.ask(q)
    assert result.abstained and result.answers == []
    assert result.closest is not None and result.closest.text == "Wall Street Journal"


def test_squad_predict_decodes_like_the_assistant(tmp_path: Path) -> None:
    q = "How far can the missiles reach?"
    reader = FakeReader({q: "hundreds of miles"})
    (pred,) = predict_spans(reader, [SquadExample("1", "T", q, TEXT, ["hundreds of miles"], [0])], progress=False)  # type: ignore[arg-type]
    assert pred.text == "hundreds of miles" and pred.gap == 5.0


def test_many_questions_are_read_in_one_batch_in_input_order(tmp_path: Path) -> None:
    qs = ["Who reported it?", "", "How far can the missiles reach?"]
    assistant = make(tmp_path, {qs[0]: "Wall Street Journal", qs[2]: "hundreds of miles"})
    results = assistant.ask_many(qs)
    assert [r.answer.text if r.answer else r.error for r in results] == [
        "Wall Street Journal",
        "the question is empty; type a question about the article",
        "hundreds of miles",
    ]
    assert len(assistant.reader.calls) == 1  # type: ignore[attr-defined]  # one batched read for both


def test_an_article_changed_under_a_running_assistant_is_reloaded_and_reindexed(tmp_path: Path) -> None:
    q = "Who reported it?"
    assistant = make(tmp_path, {q: "Wall Street Journal"})
    first = assistant.ask(q).answer
    assert first is not None
    new_text = "Update: more news at the top of the page.\n" + TEXT
    (tmp_path / "seeds" / "a.txt").write_text(new_text, encoding="utf-8")
    second = assistant.ask(q).answer
    assert second is not None and second.start == first.start + len(new_text) - len(TEXT)
    assert new_text[second.start : second.end] == second.text
    assert assistant.index_status() is None  # the index on disk was rebuilt for the new text


def test_an_article_emptied_under_a_running_assistant_is_an_error_not_a_stale_answer(tmp_path: Path) -> None:
    q = "Who reported it?"
    assistant = make(tmp_path, {q: "Wall Street Journal"})
    assert assistant.ask(q).answer is not None
    (tmp_path / "seeds" / "a.txt").write_text("", encoding="utf-8")
    with pytest.raises(DocumentError, match="is empty"):
        assistant.ask(q)


def test_settings_flags_beat_environment_beat_defaults(tmp_path: Path) -> None:
    env = {"QA_PASSAGES": "5", "QA_RETRIEVAL": "bm25", "QA_SEEDS": str(tmp_path)}
    s = Settings.resolve(env, passages=2)
    assert (s.passages, s.retrieval, s.seeds) == (2, "bm25", tmp_path)
    assert s.index_dir == Path("index")
    with pytest.raises(InputError, match="QA_PASSAGES must be a whole number"):
        Settings.resolve({"QA_PASSAGES": "many"})
    with pytest.raises(InputError, match="retrieval must be one of"):
        Settings.resolve({}, retrieval="magic")


def test_default_folders_outside_the_checkout_are_the_projects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings.resolve({})
    assert s.seeds == PROJECT_ROOT / "seeds" and s.index_dir == PROJECT_ROOT / "index"
    (tmp_path / "seeds").mkdir()
    s = Settings.resolve({})
    assert s.seeds == Path("seeds") and s.index_dir == Path("index")


class CountingEmbedder(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.encoded: list[str] = []

    def encode(self, texts: list[str], progress: bool = False):  # type: ignore[no-untyped-def]
        self.encoded.extend(texts)
        return super().encode(texts, progress)


def test_changing_one_article_re_embeds_only_that_article(tmp_path: Path) -> None:
    import numpy as np

    from qa.index import load_index, read_manifest

    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for name in ("a", "b", "c"):
        (seeds / f"{name}.txt").write_text(f"Article {name}. " + TEXT, encoding="utf-8")
    embedder = CountingEmbedder()

    def make_one() -> Assistant:
        return Assistant(
            seeds,
            tmp_path / "index",
            embedder=embedder,
            reader=FakeReader({}),  # type: ignore[arg-type]
            chunk_size=120,
            chunk_overlap=40,
            log=lambda m: None,
        )

    first, _ = make_one().build_index()
    n_per_article = len(first.chunks) // 3
    embedder.encoded.clear()

    (seeds / "b.txt").write_text("Article b, rewritten. " + TEXT, encoding="utf-8")
    second, reason = make_one().build_index()
    assert reason is not None and "changed" in reason
    assert all(t in (seeds / "b.txt").read_text() for t in embedder.encoded)  # only b's chunks were embedded
    assert len(embedder.encoded) == len([c for c in second.chunks if c.doc_id == "b.txt"]) <= n_per_article + 1
    manifest = read_manifest(tmp_path / "index")
    assert manifest is not None and manifest.reused == ["a.txt", "c.txt"]
    # the reused vectors are the ones a full rebuild computes
    full = embedder.encode([c.text for c in second.chunks])
    stored = load_index(tmp_path / "index", manifest).faiss_index.reconstruct_n(0, len(second.chunks))
    np.testing.assert_allclose(stored, full, atol=1e-6)

    (seeds / "c.txt").unlink()
    embedder.encoded.clear()
    third, _ = make_one().build_index()
    assert embedder.encoded == [] and {c.doc_id for c in third.chunks} == {"a.txt", "b.txt"}


def test_bm25_is_stored_with_the_index_and_loaded_not_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bm25s

    q = "Who reported it?"
    assistant = make(tmp_path, {q: "Wall Street Journal"})
    index, _ = assistant.build_index()
    assert index.path is not None and (index.path / "bm25").is_dir()
    fresh = make(tmp_path, {q: "Wall Street Journal"})
    fresh.settings = fresh.settings.with_(retrieval="bm25")

    def no_indexing(*args: object, **kw: object) -> None:
        raise AssertionError("BM25 was rebuilt instead of loaded")

    monkeypatch.setattr(bm25s.BM25, "index", no_indexing)
    assert fresh.ask(q).answer is not None


def test_bm25_files_are_the_same_bytes_in_every_process_and_find_what_bm25s_finds(tmp_path: Path) -> None:
    """The vocabulary is numbered in first-seen order, not in a set's (hash-seeded) order, so two
    builds of the same chunks write the same files; the scores are those of bm25s's own build."""
    import subprocess
    import sys

    import bm25s

    from qa.bm25 import BM25, tokens

    texts = [TEXT, "Missiles reach Moscow; the Pentagon reviews every request.", "the of and", "Zelensky asked."]
    build = (
        f"import sys; from pathlib import Path; from qa.bm25 import BM25; BM25.build({texts!r}).save(Path(sys.argv[1]))"
    )
    for seed in ("1", "2"):
        env = {"PATH": "", "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", build, str(tmp_path / seed)], check=True, env=env)
    files = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*") if p.is_file())
    assert files
    for name in files:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name

    theirs = bm25s.BM25()
    theirs.index([tokens(t) for t in texts], show_progress=False)
    questions = ["Who reviews the requests?", "Moscow missiles", "the", "Zelensky"]
    assert BM25.build(texts).search(questions, 4) == BM25(theirs, len(texts)).search(questions, 4)

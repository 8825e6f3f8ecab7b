"""Chunk invariants: every chunk is an exact slice, chunks cover the text, and overlap."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa.chunking import chunk_text, sentence_at, sentence_spans
from qa.errors import InputError

SENTENCES = [
    "The Pentagon said so.",
    "“What’s going on, it’s crazy,” Trump remarked.",
    "It’s crazy!",
    "Why are we doing that?",
    "Policy director Eldridge Colby devised a process.",
    "A.T.A.C.M.S. is a missile (Army Tactical Missile System).",
    "Short.",
    "x" * 50,
]
SEPARATORS = [" ", "  ", "\n", "\r\n", "\n\n", "\t", " \r\n "]


def check_invariants(text: str, size: int, overlap: int) -> None:
    chunks = chunk_text(text, "doc", size, overlap)
    if not text.strip():
        assert chunks == []
        return
    assert chunks, "non-blank text must give at least one chunk"
    for i, c in enumerate(chunks):
        assert c.chunk_id == i
        assert c.doc_id == "doc"
        assert 0 <= c.start < c.end <= len(text)
        assert c.text == text[c.start : c.end]
        assert len(c.text) <= size
        assert not c.text[0].isspace() and not c.text[-1].isspace()
    for a, b in itertools.pairwise(chunks):
        assert a.start < b.start and a.end < b.end, "chunks move forward"
        assert b.start <= a.end or text[a.end : b.start].strip() == "", "no text is skipped between chunks"
    # Every non-space character lies in some chunk.
    covered = [False] * len(text)
    for c in chunks:
        covered[c.start : c.end] = [True] * (c.end - c.start)
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))


texts = st.lists(st.tuples(st.sampled_from(SENTENCES), st.sampled_from(SEPARATORS)), max_size=40).map(
    lambda parts: "".join(s + sep for s, sep in parts)
)


@settings(max_examples=300, deadline=None)
@given(text=texts, size=st.integers(20, 400), overlap_share=st.floats(0, 0.9))
def test_chunks_are_exact_slices_of_generated_texts(text: str, size: int, overlap_share: float) -> None:
    check_invariants(text, size, int(size * overlap_share))


@settings(max_examples=200, deadline=None)
@given(text=st.text(min_size=0, max_size=600), size=st.integers(5, 200))
def test_chunks_are_exact_slices_of_arbitrary_text(text: str, size: int) -> None:
    check_invariants(text, size, size // 3)


def test_repeated_sentences_keep_their_own_offsets() -> None:
    text = "The missile flew. " * 30 + "The end."
    chunks = chunk_text(text, "doc", 60, 20)
    starts = [c.start for c in chunks]
    assert len(set(starts)) == len(starts)
    for c in chunks:
        assert text[c.start : c.end] == c.text


def test_one_sentence_and_empty_text() -> None:
    assert [c.text for c in chunk_text("Just one sentence.", "d", 100, 10)] == ["Just one sentence."]
    assert chunk_text("", "d", 100, 10) == []
    assert chunk_text(" \n\r\n ", "d", 100, 10) == []


def test_curly_quotes_and_crlf_are_kept(article_text: str) -> None:
    text = article_text.replace("\n", "\r\n")
    chunks = chunk_text(text, "d", 300, 100)
    assert any("’" in c.text for c in chunks) and any("“" in c.text for c in chunks)
    assert any("\r\n" in c.text for c in chunks)
    check_invariants(text, 300, 100)


def test_consecutive_chunks_overlap_by_whole_sentences(article_text: str) -> None:
    chunks = chunk_text(article_text, "d", 600, 200)
    assert len(chunks) > 1
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end, "consecutive chunks share text"
    sentence_starts = {s for s, _ in sentence_spans(article_text)}
    assert all(c.start in sentence_starts for c in chunks), "chunks start at sentence starts"


def test_sentence_at_finds_the_enclosing_sentence(article_text: str) -> None:
    spans = sentence_spans(article_text)
    start = article_text.index("Eldridge Colby")
    s, e = sentence_at(article_text, spans, start, start + len("Eldridge Colby"))
    assert article_text[s:e].startswith("Policy director Eldridge Colby")
    assert article_text[s:e].endswith("from US sources.")


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 100), (100, -1)])
def test_bad_chunk_settings_are_rejected(size: int, overlap: int) -> None:
    with pytest.raises(InputError):
        chunk_text("Some text.", "d", size, overlap)

"""Sentence-aware, overlapping chunks whose offsets are computed while splitting.

Sentences are found with `re.finditer`, so every boundary is a position in the original
text; chunks are slices `text[start:end]` built from those positions. Nothing is searched for
afterwards (repeated sentences cannot be misplaced) and nothing is cleaned (curly quotes,
CRLF and double spaces stay as they are).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from qa.errors import InputError
from qa.types import Chunk, Document

DEFAULT_CHUNK_SIZE = 600
DEFAULT_CHUNK_OVERLAP = 200

# A sentence runs to ., ! or ? (plus closing quotes/brackets) followed by whitespace, or to
# a line break, or to the end of the text.
_SENTENCE = re.compile(r"\S(?:.*?)(?:[.!?][\"'”’)\]]*(?=\s)|(?=\r?\n)|$)", re.DOTALL)
_WORD = re.compile(r"\S+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, trimmed of surrounding whitespace."""
    spans = []
    for m in _SENTENCE.finditer(text):
        start, end = m.start(), m.end()
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def sentence_at(text: str, spans: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """The sentence(s) covering [start, end): from the one holding `start` to the one holding `end`."""
    lo, hi = start, end
    for s, e in spans:
        if s <= start < e or (s >= start and s < end):
            lo = min(lo, s)
            hi = max(hi, e)
    return lo, hi


def _pieces(text: str, spans: list[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    """Sentences, with any sentence longer than `size` cut at word boundaries."""
    for s, e in spans:
        if e - s <= size:
            yield s, e
            continue
        cur_s = cur_e = None
        for w in _WORD.finditer(text, s, e):
            if cur_s is None:
                cur_s, cur_e = w.start(), w.end()
            elif w.end() - cur_s <= size:
                cur_e = w.end()
            else:
                yield cur_s, cur_e
                cur_s, cur_e = w.start(), w.end()
            while cur_e - cur_s > size:  # a single "word" longer than size
                yield cur_s, cur_s + size
                cur_s += size
        if cur_s is not None and cur_e is not None and cur_e > cur_s:
            yield cur_s, cur_e


def chunk_text(
    text: str, doc_id: str, size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_CHUNK_OVERLAP
) -> list[Chunk]:
    """Pack whole sentences into windows of at most `size` characters; consecutive windows
    share about `overlap` characters (whole sentences) so an answer near a border is whole
    in at least one chunk."""
    if size < 1:
        raise InputError(f"chunk size must be at least 1, got {size}")
    if not 0 <= overlap < size:
        raise InputError(f"chunk overlap must be between 0 and the chunk size ({size}), got {overlap}")
    pieces = list(_pieces(text, sentence_spans(text), size))
    chunks: list[Chunk] = []
    i = 0
    while i < len(pieces):
        j = i
        while j + 1 < len(pieces) and pieces[j + 1][1] - pieces[i][0] <= size:
            j += 1
        start, end = pieces[i][0], pieces[j][1]
        chunks.append(Chunk(doc_id, len(chunks), start, end, text[start:end]))
        if j + 1 >= len(pieces):
            break
        # The next window reaches back over whole pieces that fit in the overlap, but never so
        # far that it could not also take the next new piece (it must move forward).
        nxt = j + 1
        while nxt - 1 > i and end - pieces[nxt - 1][0] <= overlap and pieces[j + 1][1] - pieces[nxt - 1][0] <= size:
            nxt -= 1
        i = nxt
    return chunks


def chunk_documents(
    docs: list[Document], size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_CHUNK_OVERLAP
) -> list[Chunk]:
    return [c for d in docs for c in chunk_text(d.text, d.doc_id, size, overlap)]

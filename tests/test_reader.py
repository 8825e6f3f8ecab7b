"""Reader span mapping: windows, offsets, scores; and the answer invariant through the Assistant."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from qa.reader import Reader, ReaderSettings, decode_window, whole_words


def test_decode_window_picks_the_best_context_span() -> None:
    seq_ids = [None, 0, 0, None, 1, 1, 1, 1, None]
    start = torch.full((9,), -5.0)
    end = torch.full((9,), -5.0)
    start[0], end[0] = 1.0, 1.0  # null score 2
    start[5], end[6] = 4.0, 3.0  # best span 5..6 scores 7
    start[1], end[2] = 9.0, 9.0  # a question span must never win
    spans = decode_window(start, end, seq_ids, max_answer_tokens=30, n_best=3)
    assert spans[0][:2] == (5, 6)
    assert spans[0][2:] == (pytest.approx(7.0), pytest.approx(2.0))  # span logit, no-answer logit
    assert all(seq_ids[s] == 1 and seq_ids[e] == 1 and s <= e for s, e, _, _ in spans)


def test_decode_window_respects_max_answer_length() -> None:
    seq_ids = [None] + [1] * 10
    start = torch.zeros(11)
    end = torch.zeros(11)
    start[1], end[10] = 10.0, 10.0
    spans = decode_window(start, end, seq_ids, max_answer_tokens=4, n_best=5)
    assert all(e - s < 4 for s, e, _, _ in spans)


def test_whole_words_widens_cut_words() -> None:
    text = "deploy the ATACMS missile"
    s = text.index("ATACM")
    assert whole_words(text, s, s + 5) == (s, s + 6)
    assert whole_words(text, s + 1, s + 6) == (s, s + 6)
    assert whole_words(text, 0, 6) == (0, 6)


def test_spans_map_to_exact_offsets_in_later_windows(tiny_reader: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the model to point at a word in the last window; the span must be that word."""
    reader = Reader(str(tiny_reader))
    words = [f"word{i}" for i in range(120)]
    context = "  ".join(words[:60]) + " \u201cTarget\u2019s\u201d " + " ".join(words[60:])
    target = "Target’s"
    enc_holder: dict = {}
    original = reader.logits

    def forced(encoding):  # type: ignore[no-untyped-def]
        enc_holder["enc"] = encoding
        out = original(encoding)
        lo, hi = context.index(target), context.index(target) + len(target)
        target_tokens = {}
        for w in range(len(out)):
            offsets, seq = encoding.encodings[w].offsets, encoding.encodings[w].sequence_ids
            toks = [i for i, sid in enumerate(seq) if sid == 1 and offsets[i][0] >= lo and offsets[i][1] <= hi]
            if toks:
                target_tokens[w] = toks
        last = max(target_tokens)
        assert last > 0, "the target must sit past the first window"
        forced_out = []
        for w, (s, e) in enumerate(out):
            s, e = np.full_like(s, -10.0), np.full_like(e, -10.0)
            if w == last:
                s[target_tokens[w][0]], e[target_tokens[w][-1]] = 10.0, 10.0
            forced_out.append((s, e))
        return forced_out

    monkeypatch.setattr(reader, "logits", forced)
    (spans,) = reader.read(["Which word?"], [context], n_best=3)
    assert len(enc_holder["enc"].encodings) > 2, "the context needs several windows"
    best = spans[0]
    assert context[best.start : best.end] == target
    assert best.gap == pytest.approx(40.0)


def test_read_batches_many_pairs_and_keeps_pair_order(tiny_reader: Path) -> None:
    reader = Reader(str(tiny_reader))
    contexts = [f"Context number {i} says the value is {i * 7}. " * (1 + i % 4) for i in range(9)]
    results = reader.read([f"What is value {i}?" for i in range(9)], contexts, n_best=4)
    assert len(results) == 9
    for ctx, spans in zip(contexts, results, strict=True):
        assert spans, "every pair gets candidates"
        assert [s.gap for s in spans] == sorted((s.gap for s in spans), reverse=True)
        for s in spans:
            assert 0 <= s.start < s.end <= len(ctx)
            assert ctx[s.start : s.end].strip() == ctx[s.start : s.end]


def test_settings_load_and_score(tmp_path: Path) -> None:
    (tmp_path / "qa_reader.json").write_text('{"null_threshold": 1.5, "calib_a": 2.0, "calib_b": -3.0, "x": 1}')
    s = ReaderSettings.load(tmp_path)
    assert s.null_threshold == 1.5
    assert s.score(1.5) == pytest.approx(1 / (1 + pytest.importorskip("math").exp(0.0)))
    assert 0.0 <= s.score(-1000) <= s.score(0) <= s.score(1000) <= 1.0
    assert ReaderSettings.load(tmp_path / "nowhere") == ReaderSettings()


def test_answers_are_exact_spans_over_many_documents_and_questions(tmp_path: Path, tiny_reader: Path) -> None:
    """The product's invariant: document[start:end] == answer, for every answer shown."""
    from qa.assistant import Assistant

    rng = random.Random(7)
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    pieces = [
        "The Pentagon’s “process” began.",
        "Colby  devised it.",
        "It’s crazy!",
        "ATACMS flew 300 km.",
        "Repeat me.",
        "Repeat me.",
        "Zelensky met leaders.\r\n",
        "A B-2A Spirit flew over.",
    ]
    for d in range(6):
        body = " ".join(rng.choice(pieces) for _ in range(rng.randint(3, 60)))
        (seeds / f"doc{d}.txt").write_text(body, encoding="utf-8", newline="")
    assistant = Assistant(
        seeds, tmp_path / "index", reader_model=str(tiny_reader), chunk_size=200, chunk_overlap=80, log=lambda m: None
    )
    questions = [
        f"{w} {rng.choice(['who', 'what', 'when'])}?"
        for w in ["Colby", "ATACMS", "process", "B-2A", "Zelensky", "repeat", "crazy"] * 3
    ]
    results = assistant.ask_many(questions, top_k=3)
    assert len(results) == len(questions)
    shown = 0
    for r in results:
        for a in r.answers:
            doc = assistant.documents[a.doc_id].text
            assert doc[a.start : a.end] == a.text
            assert doc[a.sentence_start : a.sentence_end] == a.sentence
            assert a.sentence_start <= a.start and a.end <= a.sentence_end
            assert 0.0 <= a.score <= 1.0
            shown += 1
        spans = [(a.doc_id, a.start, a.end) for a in r.answers]
        for i, x in enumerate(spans):
            for y in spans[i + 1 :]:
                assert not (x[0] == y[0] and x[1] < y[2] and y[1] < x[2]), "overlapping answers are merged"
    assert shown > len(questions), "the tiny reader (threshold -1000) always answers"

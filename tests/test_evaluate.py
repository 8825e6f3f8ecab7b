"""`qa eval`: the metric functions on hand-computed cases, the gold-file checks, and a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from qa.errors import InputError
from qa.evaluate import (
    GoldItem,
    QuestionRecord,
    abstention_precision,
    abstention_recall,
    citation_exactness,
    contains_answer,
    evaluate,
    exact_match,
    f1_score,
    format_table,
    load_gold,
    make_record,
    parse_gold,
    recall_at,
    summarize,
)
from qa.metrics import percentile
from qa.types import Answer, Chunk, Document, Passage, Result

DOC_TEXT = (
    "A report from The Wall Street Journal cites a US official. "
    "Policy director Eldridge Colby devised the process. Trump met Putin in Alaska."
)
DOCS = {"a.txt": Document("a.txt", "a.txt", DOC_TEXT, "0" * 64)}
WSJ, COLBY, ALASKA = DOC_TEXT.index("The Wall"), DOC_TEXT.index("Colby"), DOC_TEXT.index("Alaska")
# Chunk texts need not be real slices here: only their text is searched for gold answers.
CHUNK_NONE = Chunk("a.txt", 0, 0, 10, "Nothing useful in this one.")
CHUNK_WSJ = Chunk("a.txt", 1, 0, 58, DOC_TEXT[:58])
CHUNK_COLBY = Chunk("a.txt", 2, 59, 110, DOC_TEXT[59:110])


def answer(text: str, start: int, chunk_id: int = 0) -> Answer:
    return Answer(text, start, start + len(text), 0.9, "a.txt", chunk_id, text, start, start + len(text))


def passages(*chunks: Chunk) -> list[Passage]:
    return [Passage(c, 1.0 / rank, rank) for rank, c in enumerate(chunks, 1)]


def gold(answers: list[str], qid: str = "q") -> GoldItem:
    return GoldItem(qid, "a question?", answers, 1)


@pytest.fixture()
def records() -> list[QuestionRecord]:
    """Six hand-scored cases; the expected figures are worked out in each test."""
    cases = [
        # 1. right, with an article the normalisation drops: EM 1, F1 1; gold found at rank 2.
        (
            gold(["Wall Street Journal"], "right"),
            Result("q", answers=[answer("The Wall Street Journal", WSJ)], passages=passages(CHUNK_NONE, CHUNK_WSJ)),
        ),
        # 2. partial: "colby" vs "eldridge colby" is P 1, R 1/2, F1 2/3 (vs the longer gold only 0.4).
        (
            gold(["Eldridge Colby", "Policy director Eldridge Colby"], "partial"),
            Result("q", answers=[answer("Colby", COLBY)], passages=passages(CHUNK_COLBY, CHUNK_NONE)),
        ),
        # 3. abstained on an unanswerable question: EM 1, F1 1.
        (gold([], "abstain-right"), Result("q", passages=passages(CHUNK_NONE))),
        # 4. abstained on an answerable one: 0, and the gold is in no retrieved chunk.
        (gold(["Alaska"], "abstain-wrong"), Result("q", passages=passages(CHUNK_NONE, CHUNK_WSJ))),
        # 5. answered an unanswerable question, with offsets that do not cut out its text: 0.
        (gold([], "answered-unanswerable"), Result("q", answers=[Answer("Alaska", 0, 6, 0.7, "a.txt", 0, "", 0, 0)])),
        # 6. abstained on an unanswerable question again: EM 1, F1 1.
        (gold([], "abstain-right-2"), Result("q")),
    ]
    return [make_record(g, r, DOCS) for g, r in cases]


def test_exact_match_and_f1(records: list[QuestionRecord]) -> None:
    assert [r.em for r in records] == [1, 0, 1, 0, 0, 1]
    assert [r.f1 for r in records] == pytest.approx([1, 2 / 3, 1, 0, 0, 1])
    assert exact_match(records) == pytest.approx(3 / 6)
    assert f1_score(records) == pytest.approx((1 + 2 / 3 + 1 + 1) / 6)  # 11/18


def test_abstention_precision_and_recall(records: list[QuestionRecord]) -> None:
    # Abstained on 3, 4, 6: two of the three are unanswerable.
    assert abstention_precision(records) == pytest.approx(2 / 3)
    # Unanswerable: 3, 5, 6; it abstained on two.
    assert abstention_recall(records) == pytest.approx(2 / 3)
    answered_only = [records[0], records[1]]
    assert abstention_precision(answered_only) is None  # never abstained: nothing to count
    assert abstention_recall(answered_only) is None  # no unanswerable question


def test_citation_exactness(records: list[QuestionRecord]) -> None:
    # Answers shown in 1, 2, 5; the one in 5 claims "Alaska" at 0:6, where the text is "A repo".
    assert [r.citations for r in records] == [[True], [True], [], [], [False], []]
    assert citation_exactness(records) == pytest.approx(2 / 3)
    assert citation_exactness(records[2:4]) is None


def test_recall_at_k(records: list[QuestionRecord]) -> None:
    # Answerable: 1 (gold at rank 2), 2 (rank 1), 4 (not retrieved).
    assert [r.gold_rank for r in records] == [2, 1, None, None, None, None]
    assert recall_at(records, 1) == pytest.approx(1 / 3)
    assert recall_at(records, 2) == pytest.approx(2 / 3)
    assert recall_at(records, 10) == pytest.approx(2 / 3)
    assert recall_at(records[2:3], 1) is None


def test_summary_and_table(records: list[QuestionRecord]) -> None:
    for r, s in zip(records, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], strict=True):
        r.seconds = s
    s = summarize(records, k=2)
    assert (s.questions, s.answerable, s.errors) == (6, 3, 0)
    assert s.f1_answerable == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert s.recall_1 == pytest.approx(1 / 3) and s.recall_k == pytest.approx(2 / 3)
    assert s.p50 == pytest.approx(0.35) and s.p95 == pytest.approx(0.575)
    table = format_table([("dense", s), ("hybrid", s)], mark="hybrid").splitlines()
    assert table[0].startswith("retrieval") and "F1 ans" in table[0]
    assert table[0].split()[-6:] == ["R@1", "R@2", "p50", "ms", "p95", "ms"]
    assert table[2].split() == ["hybrid*", "50.0", "61.1", "55.6", "66.7", "66.7", "66.7", "33.3", "66.7", "350", "575"]
    one = format_table([("bm25", summarize(records, k=1))]).splitlines()
    assert one[0].split()[-5:] == ["R@1", "p50", "ms", "p95", "ms"]  # not R@1 twice
    assert one[1].split() == ["bm25", "50.0", "61.1", "55.6", "66.7", "66.7", "66.7", "33.3", "350", "575"]


def test_error_result_is_a_miss() -> None:
    rec = make_record(gold([]), Result("q", error="the question is empty"), DOCS)
    assert (rec.em, rec.f1, rec.abstained) == (0.0, 0.0, False)


def test_contains_answer() -> None:
    assert contains_answer("cites The Wall Street Journal.", ["Wall Street Journal"])
    assert contains_answer("REPORTED BY THE WALL STREET JOURNAL'S TEAM", ["the Wall Street Journal"]) is False
    assert contains_answer("reported by the wall street journal, today", ["The Wall Street Journal"])
    assert contains_answer("U.S. officials said", ["US"])  # after normalisation, on whole tokens
    assert not contains_answer("the focus is elsewhere", ["US"])
    assert not contains_answer("anything at all", [])
    assert not contains_answer("anything at all", ["", "the"])  # answers that normalise to nothing


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)


# --- the gold file ------------------------------------------------------------------------------


def test_parse_gold() -> None:
    text = (
        '{"id": "a", "question": " Who? ", "answers": ["X", "the X"], "tags": ["who"]}\n'
        "\n"
        '{"question": "Why?", "answers": []}\n'
        '{"id": 7, "question": "When?", "answers": ["1999"]}\n'
    )
    items = parse_gold(text)
    assert [(g.id, g.question, g.answers, g.line) for g in items] == [
        ("a", "Who?", ["X", "the X"], 1),
        ("3", "Why?", [], 3),  # no id: the line number
        ("7", "When?", ["1999"], 4),
    ]
    assert [g.answerable for g in items] == [True, False, True]
    assert items[0].tags == ["who"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"question": "Q?", "answers": []}\n{not json}\n', "line 2 is not valid JSON"),
        ('["Q?", []]\n', "line 1 is not a JSON object"),
        ('{"answers": ["x"]}\n', "line 1: question must be text"),
        ('{"question": "   ", "answers": ["x"]}\n', "line 1: the question is empty"),
        ('{"question": "Q?"}\n', "line 1 needs 'answers'"),
        ('{"question": "Q?", "answers": "x"}\n', "line 1 needs 'answers'"),
        ('{"question": "Q?", "answers": [1]}\n', "line 1 needs 'answers'"),
        ('{"question": "Q?", "answers": [""]}\n', "line 1 lists only blank answers"),
        (
            '{"id": "a", "question": "Q?", "answers": []}\n{"id": "a", "question": "R?", "answers": []}\n',
            "line 2 repeats id 'a' (first on line 1)",
        ),
        ('{"id": [1], "question": "Q?", "answers": []}\n', "line 1 has an 'id'"),
        ('{"question": "Q?", "answers": [], "tags": "x"}\n', "line 1 has 'tags'"),
        ("\n\n", "has no questions"),
    ],
)
def test_parse_gold_errors(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        parse_gold(text, source="g.jsonl")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("g.jsonl")


def test_load_gold_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_gold(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="is a folder"):
        load_gold(tmp_path)
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"question": "Où?", "answers": []}\n'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_gold(bad)


def test_bundled_gold_file_is_consistent(article_text: str) -> None:
    """Every gold answer is an exact span of the bundled article, and there are enough of each kind."""
    items = load_gold(Path(__file__).resolve().parent.parent / "eval" / "gold.jsonl")
    assert len(items) >= 30
    assert sum(not g.answerable for g in items) >= 10
    assert sum("paraphrase" in g.tags for g in items) >= 5
    for g in items:
        for a in g.answers:
            assert a in article_text, (g.id, a)


# --- real models --------------------------------------------------------------------------------

TINY_GOLD = [
    {"id": "colby", "question": "Who devised a process to evaluate requests for long-range missile strikes?",
     "answers": ["Eldridge Colby", "Policy director Eldridge Colby"]},
    {"id": "place", "question": "Where did Trump meet Putin?", "answers": ["Alaska"]},
    {"id": "none", "question": "How much does a single ATACMS missile cost?", "answers": []},
]  # fmt: skip


def write_gold(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_evaluate_with_real_models(assistant, tmp_path: Path) -> None:
    items = load_gold(write_gold(tmp_path / "gold.jsonl", TINY_GOLD))
    records = evaluate(assistant, items)
    assert [r.id for r in records] == ["colby", "place", "none"]
    assert all(r.error is None for r in records)
    assert citation_exactness(records) in (None, 1.0)  # every shown span is cut exactly from the article
    # The article is five chunks and four are read: both answers must be in what was retrieved.
    assert recall_at(records, assistant.passages) == 1.0
    for r in records:
        assert 0 < len(r.retrieved) <= assistant.passages
        assert r.seconds > 0
        assert 0.0 <= r.f1 <= 1.0 and r.em in (0.0, 1.0)
        assert (r.prediction is None) == r.abstained


@pytest.mark.slow
def test_with_retrieval_shares_models(assistant) -> None:
    other = assistant.with_retrieval("bm25" if assistant.retrieval != "bm25" else "dense")
    assert other.retrieval != assistant.retrieval
    assert other.reader is assistant.reader and other.embedder is assistant.embedder
    assert other.index_dir == assistant.index_dir and other.passages == assistant.passages
    assert assistant.with_retrieval(assistant.retrieval) is assistant


@pytest.mark.slow
def test_eval_command_end_to_end(assistant, tmp_path: Path) -> None:
    from qa.cli import cli

    gold_path = write_gold(tmp_path / "gold.jsonl", TINY_GOLD)
    report = tmp_path / "report.jsonl"
    args = ["eval", str(gold_path), "--seeds", str(assistant.seeds), "--index-dir", str(assistant.index_dir)]
    result = CliRunner().invoke(cli, [*args, "--compare", "--report", str(report)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("3 questions (2 answerable, 1 not)")
    assert lines[1].split()[:3] == ["retrieval", "EM", "F1"]
    assert [line.split()[0].rstrip("*") for line in lines[2:5]] == ["dense", "bm25", "hybrid"]
    for line in lines[2:5]:
        assert line.split()[6] in ("100.0", "n/a")  # citation exactness
    rows = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
    assert [(r["retrieval"], r["id"]) for r in rows] == [
        (m, q) for m in ("dense", "bm25", "hybrid") for q in ("colby", "place", "none")
    ]
    for r in rows:
        assert {"gold", "prediction", "f1", "em", "retrieved", "gold_rank", "abstained"} <= set(r)
        assert all(set(c) == {"doc_id", "chunk_id"} for c in r["retrieved"])
    assert rows[2]["gold"] == [] and rows[2]["answerable"] is False

    # One method (the --retrieval option) gives one row.
    single = CliRunner().invoke(cli, [*args, "--retrieval", "bm25"])
    assert single.exit_code == 0, single.output
    assert [line.split()[0] for line in single.stdout.splitlines()[2:-2]] == ["bm25"]
    assert single.stdout.splitlines()[-2].startswith("confidence (P that the answer is right")


def test_eval_command_bad_gold_file(tmp_path: Path) -> None:
    from qa.cli import cli

    gold_path = tmp_path / "gold.jsonl"
    gold_path.write_text('{"question": "Q?", "answers": []}\n{"question": "R?"}\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["eval", str(gold_path), "--seeds", str(tmp_path / "nowhere")])
    # The file is checked before any article or model is looked for (the seeds folder does not exist).
    assert result.exit_code != 0
    assert "line 2 needs 'answers'" in result.output + str(result.exception)

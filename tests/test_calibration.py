"""Calibration: the probability that an answer is right, fitted on how the whole assistant behaves,
and the one rule for answering (`qa.calibration`). Fake models make the pipeline run in
milliseconds; the CLI cases run the real `qa` process with the tiny random reader."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from fakes import FakeEmbedder, FakeReader
from test_bad_input import one_line_error, qa

from qa.assistant import Assistant
from qa.calibrate import calibrate_assistant
from qa.calibration import (
    CALIBRATION_FILE,
    Calibration,
    Observation,
    coverage_at,
    expected_calibration_error,
    fit,
    score,
)
from qa.errors import InputError, ModelError
from qa.evaluate import GoldItem
from qa.reader import ReaderSettings

ARTICLE = (
    "Policy director Eldridge Colby devised a process to evaluate strike requests. "
    "Defense Secretary Pete Hegses holds the ultimate authority over ATACMS. "
    "Trump met Putin in Alaska on August 15th. A B-2A Spirit flew over Elmendorf Air Force Base. "
    "The Wall Street Journal reported the story, citing an unnamed US official."
)
# question -> (the fake reader's span, its gap, the gold answers)
CASES = {
    "Who devised the process?": ("Eldridge Colby", 6.0, ["Eldridge Colby"]),
    "Who holds the authority?": ("Pete Hegses", 5.5, ["Pete Hegses"]),
    "Where did Trump meet Putin?": ("Alaska", 5.0, ["Alaska"]),
    "When did Trump and Putin meet?": ("August 15th", 4.5, ["August 15th"]),
    "What flew over the base?": ("B-2A Spirit", 4.0, ["B-2A Spirit"]),
    "Which newspaper reported it?": ("Wall Street Journal", 6.5, ["The Wall Street Journal"]),
    "Who was cited?": ("unnamed US official", 3.5, ["an unnamed US official"]),
    "Which base saw the flyover?": ("Elmendorf Air Force Base", 3.0, ["Elmendorf Air Force Base"]),
    # The article does not answer these; the fake reader still offers a span, with a low gap.
    "How far can ATACMS fly?": ("ATACMS", 0.5, []),
    "What did Putin say?": ("Putin", 0.0, []),
    "Who won the 2018 World Cup?": ("Trump", -0.5, []),
    "How many strikes were approved?": ("strike requests", 1.0, []),
}


def make(tmp_path: Path, cases: dict[str, tuple[str, float, list[str]]] = CASES) -> Assistant:
    seeds = tmp_path / "seeds"
    seeds.mkdir(exist_ok=True)
    (seeds / "a.txt").write_text(ARTICLE, encoding="utf-8")
    reader = FakeReader({q: (text, gap) for q, (text, gap, _) in cases.items()}, null_threshold=100.0)
    return Assistant(seeds, tmp_path / "index", reader=reader, embedder=FakeEmbedder(), log=lambda m: None)


def gold(cases: dict[str, tuple[str, float, list[str]]] = CASES) -> list[GoldItem]:
    return [GoldItem(f"q{i}", q, answers, i) for i, (q, (_, _, answers)) in enumerate(cases.items(), 1)]


def test_the_reader_settings_rule_is_the_same_rule_as_a_calibration() -> None:
    settings = ReaderSettings(null_threshold=2.0, calib_a=0.5, calib_b=-1.0)
    cal = Calibration.from_reader_settings(settings)
    for gap in (-3.0, 1.99, 2.0, 2.01, 9.0):
        p = cal.probability({"gap": gap})
        assert math.isclose(p, 1 / (1 + math.exp(-(0.5 * gap - 1.0))))
        assert cal.confident(p) == (gap > 2.0)  # answer only when the gap beats the threshold


def test_ece_and_coverage_by_hand() -> None:
    # bins: 0.9 (two, one right), 0.3 (one, wrong): |0.9-0.5|*2/3 + |0.3-0|*1/3 = 0.3667
    assert expected_calibration_error([0.9, 0.9, 0.3], [True, False, False]) == pytest.approx(0.36667, abs=1e-4)
    assert expected_calibration_error([], []) is None
    # most confident first: right, right, wrong, right -> 80% kept up to 2 of 5 (then 2/3), 4/5 -> 3/4 = 75%
    confidences = [0.9, 0.8, 0.7, 0.6, None]
    right = [True, True, False, True, False]
    assert coverage_at(confidences, right, 0.8) == pytest.approx(2 / 5)
    assert coverage_at(confidences, right, 0.7) == pytest.approx(4 / 5)


def test_a_fit_orders_by_what_predicts_being_right_and_is_calibrated_where_fitted() -> None:
    rng = random.Random(0)
    obs = []
    for _ in range(600):
        gap = rng.uniform(-4, 8)
        right = rng.random() < 1 / (1 + math.exp(-(gap - 2)))
        features = {"gap": gap, "logit": gap + 3, "null": 3.0, "margin": 1.0}
        obs.append(Observation("wiki", "q", True, features, 1.0 if right else 0.0))
    cal = fit(obs, ("gap", "logit", "null", "margin"))
    assert cal.probability({"gap": 6, "logit": 9, "null": 3, "margin": 1}) > cal.probability(
        {"gap": 0, "logit": 3, "null": 3, "margin": 1}
    )
    s = score(cal, obs)
    assert s.ece is not None and s.ece < 0.05
    assert 0.0 < cal.min_confidence < 1.0


def test_a_calibration_round_trips_and_damage_is_one_line(tmp_path: Path) -> None:
    from qa.files import OutputFile

    cal = Calibration(("gap", "null"), (1.0, 2.0), (2.0, 1.0), (1.5, -0.5), 0.2, 0.4, {"name": "r"}, {"mode": "m"})
    path = tmp_path / CALIBRATION_FILE
    cal.save(OutputFile(path))
    back = Calibration.load(path)
    assert back.probability({"gap": 3, "null": 1}) == pytest.approx(cal.probability({"gap": 3, "null": 1}))
    assert back.min_confidence == 0.4 and back.fitted == {"mode": "m"}
    raw = json.loads(path.read_text())
    for damage in ([1, 2, 3], {**raw, "weights": [1.0]}, {**raw, "min_confidence": 2}, {**raw, "features": ["x"]}):
        path.write_text(json.dumps(damage))
        with pytest.raises(ModelError, match="damaged") as err:
            Calibration.load(path)
        assert "\n" not in str(err.value)


def test_calibrating_the_pipeline_on_tiny_data_with_fakes(tmp_path: Path) -> None:
    assistant = make(tmp_path)
    assert assistant.ask("Who devised the process?").abstained  # the reader's own threshold is far too high
    items = gold() * 2  # 24 questions: enough for the two-number refit
    report = calibrate_assistant(assistant, {"mine": items}, mode="recalibrate", progress=False)
    cal = report.calibration
    assert report.after.f1 > report.before.f1  # cross-validated, so no question judged by a fit that saw it
    assert cal.fitted["data"]["mine"] == {
        "articles": "seeds",  # the folder by name, not where it was on the machine that fitted it
        "questions": 24,
        "answerable": 16,
        "unanswerable": 8,
    }
    assert cal.reader["name"] == "fake-reader"
    # Written beside the index, the next assistant over the same folder uses it.
    from qa.files import OutputFile

    cal.save(OutputFile(tmp_path / "index" / CALIBRATION_FILE))
    fresh = make(tmp_path)
    result = fresh.ask("Who devised the process?")
    assert result.answer is not None and result.answer.text == "Eldridge Colby"
    assert fresh.ask("Who won the 2018 World Cup?").abstained
    assert result.answer.score == pytest.approx(cal.probability(result.features or {}))


def test_min_confidence_is_the_line_between_answering_and_not(tmp_path: Path) -> None:
    assistant = make(tmp_path)
    q = "Who devised the process?"
    assert assistant.ask(q, min_confidence=0.0).answer is not None
    assert assistant.ask(q, min_confidence=1.0).abstained
    closest = assistant.ask(q, min_confidence=1.0).closest
    assert closest is not None and closest.text == "Eldridge Colby"
    records = assistant.ask_many(list(CASES), min_confidence=0.0)
    # Every question with a word in the article is answered at 0; the World Cup one has none.
    assert [r.question for r in records if r.answer is None] == ["Who won the 2018 World Cup?"]
    for bad in (-0.1, 1.5, "high", float("nan")):
        with pytest.raises(InputError, match="from 0 to 1"):
            assistant.ask(q, min_confidence=bad)  # type: ignore[arg-type]


def test_the_page_takes_a_min_confidence(tmp_path: Path) -> None:
    from qa.handlers import ask_handler

    assistant = make(tmp_path)
    q = "Who devised the process?"
    assert ask_handler(assistant, q, 1, None, 0.0).status.startswith("### Eldridge Colby")
    assert ask_handler(assistant, q, 1, None, 1.0).abstained
    assert "from 0 to 1" in ask_handler(assistant, q, 1, None, "lots").status


def write_gold(path: Path, n_answerable: int, n_unanswerable: int) -> Path:
    lines = [
        {"id": f"a{i}", "question": f"Who devised process number {i}?", "answers": ["Eldridge Colby"]}
        for i in range(n_answerable)
    ]
    lines += [{"id": f"u{i}", "question": f"Who won cup number {i}?", "answers": []} for i in range(n_unanswerable)]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("answerable", "unanswerable", "needle"),
    [(10, 5, "at least 20"), (25, 0, "no unanswerable"), (0, 25, "no answerable")],
)
def test_qa_calibrate_refuses_too_little_data_and_writes_nothing(
    tmp_path: Path, answerable: int, unanswerable: int, needle: str
) -> None:
    index = tmp_path / "index"
    env = {"QA_INDEX_DIR": str(index)}
    one_line_error(qa(env, "calibrate", str(write_gold(tmp_path / "g.jsonl", answerable, unanswerable))), needle)
    assert not index.exists()


@pytest.mark.parametrize("value", ["1.5", "-0.2", "sure", "nan"])
def test_a_bad_min_confidence_is_one_line_in_ask_and_batch(tmp_path: Path, value: str) -> None:
    q = tmp_path / "q.txt"
    q.write_text("Who devised the process?\n", encoding="utf-8")
    one_line_error(qa({}, "ask", "Who?", "--min-confidence", value), "from 0 to 1")
    one_line_error(qa({"QA_MIN_CONFIDENCE": value}, "batch", str(q)), "QA_MIN_CONFIDENCE", "from 0 to 1")


def test_qa_calibrate_writes_beside_the_index_and_ask_and_batch_use_it(place: dict[str, str], tmp_path: Path) -> None:
    """The real CLI with the tiny random reader: calibrate, then --min-confidence decides."""
    gold_path = write_gold(tmp_path / "g.jsonl", 16, 8)
    done = qa(place, "calibrate", str(gold_path))
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert "before" in out and "after" in out and "ECE" in out
    written = Path(place["QA_INDEX_DIR"]) / CALIBRATION_FILE
    cal = Calibration.load(written)
    assert cal.fitted["data"]["g"]["questions"] == 24 and cal.fitted["fit"] == "recalibrate"
    # --min-confidence 0 answers everything, 1 nothing; through ask and batch alike.
    ask = json.loads(qa(place, "ask", "Who devised the process?", "--json", "--min-confidence", "0").stdout)
    assert ask["answers"] and 0.0 <= ask["answers"][0]["score"] <= 1.0
    ask = json.loads(qa(place, "ask", "Who devised the process?", "--json", "--min-confidence", "1").stdout)
    assert ask["abstained"]
    q = tmp_path / "q.txt"
    q.write_text("Who devised the process?\nWhere did Trump meet Putin?\n", encoding="utf-8")
    for value, answered in (("0", 2), ("1", 0)):
        batch = qa(place, "batch", str(q), "--min-confidence", value)
        assert batch.returncode == 0, batch.stderr
        records = [json.loads(line) for line in batch.stdout.decode().splitlines()]
        assert sum(r["answer"] is not None for r in records) == answered
    written.unlink()


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory, tiny_reader: Path) -> dict[str, str]:
    import shutil

    from conftest import ARTICLE as BUNDLED

    seeds = tmp_path_factory.mktemp("cal-seeds")
    shutil.copy(BUNDLED, seeds / BUNDLED.name)
    index = tmp_path_factory.mktemp("cal-index")
    return {"QA_SEEDS": str(seeds), "QA_INDEX_DIR": str(index), "QA_READER_MODEL": str(tiny_reader)}


def test_observations_skip_questions_with_no_candidate(tmp_path: Path) -> None:
    cases = {**CASES, "What is the capital of Peru?": ("", 0.0, [])}
    assistant = make(tmp_path, cases)
    report = calibrate_assistant(assistant, {"mine": gold(cases) * 2}, mode="recalibrate", progress=False)
    assert report.before.questions == 26
    with pytest.raises(InputError):
        from qa.calibration import check_gold_counts

        check_gold_counts(gold(cases))  # 13 questions


# --- the cut for an expected share of unanswerable questions -------------------------------------


def synthetic(domain: str, n_answerable: int, n_unanswerable: int, seed: int) -> list[Observation]:
    """Answerable questions score gaps around 2 (right), unanswerable ones around -1: overlapping."""
    rng = random.Random(seed)
    out = [Observation(domain, f"q{i}", True, {"gap": rng.gauss(2.0, 1.5)}, 1.0) for i in range(n_answerable)]
    out += [Observation(domain, f"u{i}", False, {"gap": rng.gauss(-1.0, 1.5)}, 0.0) for i in range(n_unanswerable)]
    return out


GAP_ONLY = Calibration(("gap",), (0.0,), (1.0,), (1.0,), 0.0, 0.5)


def test_share_weights_give_each_domain_the_share_asked_for() -> None:
    from qa.calibration import share_weights

    obs = synthetic("wiki", 60, 40, 1) + synthetic("news", 20, 5, 2)
    for share in (0.0, 0.2, 0.38):
        w = share_weights(obs, share)
        for domain in ("wiki", "news"):
            mine = [(o, x) for o, x in zip(obs, w, strict=True) if o.domain == domain]
            total = sum(x for _, x in mine)
            assert total == pytest.approx(len(obs) / 2)  # each domain weighs the same in total
            assert sum(x for o, x in mine if not o.answerable) / total == pytest.approx(share)
    assert share_weights(obs, None) == pytest.approx(
        [len(obs) / (2 * (100 if o.domain == "wiki" else 25)) for o in obs]
    )


def test_the_cut_falls_with_the_share_of_unanswerable_questions() -> None:
    from qa.calibration import cut_curve, share_weights, weighted_f1, with_cut

    obs = synthetic("wiki", 300, 200, 3) + synthetic("news", 80, 20, 4)
    probs = [GAP_ONLY.probability(o.features or {}) for o in obs]
    curve = dict(cut_curve(probs, obs))
    assert curve[0.1] <= curve[0.2] <= curve[0.4]
    assert curve[0.2] < curve[0.4]  # fewer unanswerable questions: answer more
    assert curve[0.0] <= min(p for p, o in zip(probs, obs, strict=True) if o.answerable) + 1e-9  # answer all
    cal = with_cut(GAP_ONLY, obs, 0.2)
    assert cal.min_confidence == pytest.approx(curve[0.2]) and dict(cal.cuts) == curve
    # The cut chosen for a share is the best one for that share: no cut on the curve beats it there.
    weights = share_weights(obs, 0.2)
    best = weighted_f1(probs, obs, cal.min_confidence, weights)
    assert all(weighted_f1(probs, obs, c, weights) <= best + 1e-12 for c in curve.values())
    # Between the stored shares the cut is read off the curve linearly.
    assert cal.cut_for(0.225) == pytest.approx((curve[0.2] + curve[0.25]) / 2)
    assert cal.cut_for(0.99) == curve[0.6]


def test_fitting_for_a_share_stores_the_curve_and_it_round_trips(tmp_path: Path) -> None:
    from qa.files import OutputFile

    obs = synthetic("wiki", 300, 200, 5) + synthetic("news", 80, 20, 6)
    natural = fit(obs, ("gap",))
    fifth = fit(obs, ("gap",), expect_unanswerable=0.2)
    assert fifth.min_confidence < natural.min_confidence  # 20% unanswerable vs the 31% asked here
    assert fifth.min_confidence == pytest.approx(fifth.cut_for(0.2)) and len(fifth.cuts) == 13
    path = tmp_path / CALIBRATION_FILE
    fifth.save(OutputFile(path))
    back = Calibration.load(path)
    assert back.cuts == fifth.cuts and back.cut_for(0.2) == pytest.approx(fifth.min_confidence)
    raw = json.loads(path.read_text())
    for damage in ({**raw, "cuts": [[0.2]]}, {**raw, "cuts": [[0.2, 1.5]]}, {**raw, "cuts": [[0.2, 0.1], [0.2, 0.3]]}):
        path.write_text(json.dumps(damage))
        with pytest.raises(ModelError, match=r"damaged.*cuts"):
            Calibration.load(path)


def test_expect_unanswerable_reads_the_cut_off_the_curve(tmp_path: Path) -> None:
    from qa.settings import Settings

    obs = synthetic("wiki", 300, 200, 7)
    cal = fit(obs, ("gap",), expect_unanswerable=0.2)
    assistant = make(tmp_path)
    assistant.__dict__["calibration"] = cal
    assert assistant.min_confidence == cal.min_confidence
    assistant.settings = assistant.settings.with_(expect_unanswerable=0.05)
    assert assistant.min_confidence == pytest.approx(cal.cut_for(0.05)) and cal.cut_for(0.05) < cal.min_confidence
    assistant.__dict__["calibration"] = GAP_ONLY  # written before the curve was stored
    with pytest.raises(InputError, match="stores no cuts") as err:
        _ = assistant.min_confidence
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="not both"):
        Settings(min_confidence=0.3, expect_unanswerable=0.2)
    for bad in (1.0, -0.1, "some", float("nan")):
        with pytest.raises(InputError, match="from 0 to below 1"):
            Settings(expect_unanswerable=bad)  # type: ignore[arg-type]


def test_calibrating_for_a_share_with_fakes(tmp_path: Path) -> None:
    from qa.calibrate import format_report

    assistant = make(tmp_path)
    report = calibrate_assistant(
        assistant, {"mine": gold() * 2}, mode="recalibrate", progress=False, expect_unanswerable=0.1
    )
    cal = report.calibration
    assert cal.fitted["expect_unanswerable"] == 0.1
    assert cal.fitted["unanswerable_asked"] == round(8 / 24, 4)
    assert cal.min_confidence == pytest.approx(cal.cut_for(0.1))
    assert set(report.reweighted) == {"share", "before", "after"}
    text = format_report(report, assistant.calibration)
    assert "chosen for 10% unanswerable questions" in text and "reweighted to 10% unanswerable" in text


@pytest.mark.parametrize("value", ["1", "-0.2", "most", "nan"])
def test_a_bad_expected_share_is_one_line(value: str) -> None:
    one_line_error(qa({}, "ask", "Who?", "--expect-unanswerable", value), "from 0 to below 1")
    one_line_error(qa({"QA_EXPECT_UNANSWERABLE": value}, "ask", "Who?"), "QA_EXPECT_UNANSWERABLE")


def test_min_confidence_and_expected_share_together_is_one_line() -> None:
    one_line_error(qa({}, "ask", "Who?", "--expect-unanswerable", "0.2", "--min-confidence", "0.3"), "not both")


def test_qa_calibrate_for_a_share_then_ask_for_another(place: dict[str, str], tmp_path: Path) -> None:
    """The real CLI with the tiny random reader: the cut is chosen for the share given, and ask
    reads another share's off the stored curve."""
    out = tmp_path / "cal.json"
    done = qa(
        place, "calibrate", str(write_gold(tmp_path / "g.jsonl", 16, 8)), "--expect-unanswerable", "0.2", "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "chosen for 20% unanswerable questions" in done.stdout.decode()
    cal = Calibration.load(out)
    assert cal.fitted["expect_unanswerable"] == 0.2 and cal.min_confidence == pytest.approx(cal.cut_for(0.2))
    asked = qa(
        place, "ask", "Who devised the process?", "--json", "--calibration", str(out), "--expect-unanswerable", "0"
    )
    assert asked.returncode == 0, asked.stderr


def test_a_calibration_records_names_not_the_machine_s_paths(tmp_path: Path) -> None:
    from qa.calibrate import folder_name, model_label
    from qa.loading import SHIPPED_READERS

    assert model_label(str(SHIPPED_READERS["v2"])) == "v2"
    merged = tmp_path / "cache" / "merged" / f"{SHIPPED_READERS['v3'].name}-0123456789abcdef"
    merged.mkdir(parents=True)
    assert model_label(str(merged)) == "v3"  # the shipped v3 as merged onto its base in the cache
    (tmp_path / "my-reader").mkdir()
    assert model_label(str(tmp_path / "my-reader")) == "my-reader"
    assert model_label("deepset/roberta-base-squad2") == "deepset/roberta-base-squad2"  # a hub id as it is
    assert folder_name(tmp_path / "seeds") == "seeds"


def test_readers_that_share_their_first_megabyte_have_different_fingerprints(tmp_path: Path) -> None:
    """Readers merged from LoRA adapters on one base share the weights file's header and frozen word
    embeddings (its first MB): a calibration of one must still not pass for the other's."""
    from qa.calibration import reader_fingerprint

    head, tail = bytes(range(256)) * 4096 * 2, b"\x00" * (1 << 20)
    for name, last in (("a", b"\x01"), ("b", b"\x02")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / "model.safetensors").write_bytes(head + tail + last * 4096)
    a, b = reader_fingerprint(str(tmp_path / "a")), reader_fingerprint(str(tmp_path / "b"))
    assert a.startswith("sha256:") and a != b
    assert reader_fingerprint(str(tmp_path / "a")) == a


def test_the_other_shipped_reader_over_the_bundled_index_reads_quietly_with_its_own(tmp_path: Path) -> None:
    """The bundled index is calibrated for v3; `--reader-model v2` there uses v2's own calibration, the
    documented rule, without a note on every call. An index calibrated for a reader of the user's own
    still says why its calibration is set aside."""
    import shutil

    from qa.loading import SHIPPED_READERS

    root = Path(__file__).resolve().parent.parent
    for name in ("seeds", "index"):
        shutil.copytree(root / name, tmp_path / name)
    index_cal = tmp_path / "index" / CALIBRATION_FILE
    v2_own = Calibration.load(SHIPPED_READERS["v2"] / CALIBRATION_FILE)
    assert json.loads(index_cal.read_text())["reader"]["name"] == "v3"

    def calibration_in_effect(reader: str) -> tuple[Calibration, list[str]]:
        logged: list[str] = []
        a = Assistant(tmp_path / "seeds", tmp_path / "index", reader_model=reader, log=logged.append)
        calibration = a.calibration  # no model loads: the reader's folder and fingerprint decide
        return calibration, [line for line in logged if line.startswith("Note:")]  # not v3's "Preparing"

    v3, notes = calibration_in_effect("v3")
    assert v3.min_confidence == pytest.approx(Calibration.load(index_cal).min_confidence) and not notes
    v2, notes = calibration_in_effect("v2")
    assert v2.min_confidence == pytest.approx(v2_own.min_confidence) and not notes

    cal = json.loads(index_cal.read_text())
    cal["reader"]["name"] = "my-reader"
    index_cal.write_text(json.dumps(cal))
    v2, notes = calibration_in_effect("v2")
    assert v2.min_confidence == pytest.approx(v2_own.min_confidence)
    assert len(notes) == 1 and "was fitted for another reader (my-reader)" in notes[0]

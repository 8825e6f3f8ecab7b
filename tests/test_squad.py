"""SQuAD v2.0 metrics (checked by hand), squad-predict/squad-eval, and training end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from qa.calibration import best_threshold
from qa.cli import cli
from qa.metrics import compute_exact, compute_f1, normalize_answer
from qa.squad import SquadExample, SquadPrediction, evaluate_predictions, load_squad

TINY = Path(__file__).parent / "data" / "squad_tiny.json"


def test_normalisation_and_token_f1_by_hand() -> None:
    assert normalize_answer("The  North-Sea!") == "northsea"
    assert normalize_answer("An apple, a pear") == "apple pear"
    assert compute_exact("the North Sea", "North Sea") == 1
    # gold "march 2010" vs pred "in march": common 1; p = 1/2, r = 1/2 -> F1 0.5
    assert compute_f1("March 2010", "in March") == pytest.approx(0.5)
    # gold "cape canaveral" vs "canaveral": p = 1, r = 1/2 -> 2/3
    assert compute_f1("Cape Canaveral", "Canaveral") == pytest.approx(2 / 3)
    assert compute_f1("", "") == 1.0 and compute_f1("", "x") == 0.0 and compute_f1("x", "") == 0.0


def test_evaluate_predictions_matches_hand_computed_figures() -> None:
    examples = load_squad(TINY)
    preds = {
        "r1": "in March",  # max over golds: vs "March 2010" 0.5, vs "in March 2010" p=1 r=2/3 -> 0.8
        "r2": "Cape Canaveral",  # exact
        "r3": "test capsule",  # unanswerable, answered: 0
        "v1": "North Sea",  # exact (normalised)
        # v2 missing: counts as "" -> correct abstention
    }
    s = evaluate_predictions(examples, preds)
    assert s["total"] == 5 and s["HasAns_total"] == 3 and s["NoAns_total"] == 2
    assert s["exact"] == pytest.approx(100 * 3 / 5)
    assert s["f1"] == pytest.approx(100 * (0.8 + 1 + 0 + 1 + 1) / 5)
    assert s["HasAns_f1"] == pytest.approx(100 * (0.8 + 1 + 1) / 3)
    assert s["NoAns_exact"] == pytest.approx(50.0)


def test_best_threshold_maximises_f1() -> None:
    ex = [
        SquadExample("a", "t", "q", "c", ["x"], [0]),
        SquadExample("b", "t", "q", "c", [], []),
        SquadExample("c", "t", "q", "c", ["y"], [0]),
    ]
    preds = [SquadPrediction("a", "x", 5.0), SquadPrediction("b", "z", 1.0), SquadPrediction("c", "y", 3.0)]
    t, f1 = best_threshold(ex, preds)
    assert 1.0 < t < 3.0 and f1 == pytest.approx(100.0)


def test_squad_predict_and_eval_commands(tmp_path: Path, tiny_reader: Path) -> None:
    out = tmp_path / "pred.json"
    runner = CliRunner()
    result = runner.invoke(cli, ["squad-predict", str(TINY), "--out", str(out), "--reader-model", str(tiny_reader)])
    assert result.exit_code == 0, result.output
    preds = json.loads(out.read_text())
    assert set(preds) == {"r1", "r2", "r3", "v1", "v2"}
    contexts = {ex.id: ex.context for ex in load_squad(TINY)}
    assert all(p == "" or p in contexts[qid] for qid, p in preds.items())
    result = runner.invoke(cli, ["squad-eval", str(TINY), str(out), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == evaluate_predictions(load_squad(TINY), preds)
    gold_like = {"r1": "March 2010", "r2": "Cape Canaveral", "r3": "", "v1": "the North Sea", "v2": ""}
    (tmp_path / "perfect.json").write_text(json.dumps(gold_like))
    result = runner.invoke(cli, ["squad-eval", str(TINY), str(tmp_path / "perfect.json")])
    assert "overall       5  100.00  100.00" in result.stdout


def test_training_runs_end_to_end_and_the_model_predicts(tmp_path: Path, tiny_reader: Path) -> None:
    from qa.reader import Reader

    out = tmp_path / "reader"
    result = CliRunner().invoke(
        cli,
        [
            "train-reader",
            "--data",
            str(TINY),
            "--output-dir",
            str(out),
            "--base-model",
            str(tiny_reader),
            "--val-articles",
            "Rivers",
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--max-length",
            "64",
            "--stride",
            "16",
            "--no-bf16",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best at step 2" in result.stdout
    info = json.loads((out / "qa_reader.json").read_text())
    assert info["validation"]["articles"] == ["Rivers"] and "null_threshold" in info
    assert info["max_length"] == 64 and info["training"]["max_steps"] == 2
    reader = Reader(str(out))
    (spans,) = reader.read(["Into which sea does the Rhine flow?"], ["The Rhine flows into the North Sea."])
    assert spans and all(0 <= s.start < s.end for s in spans)


def test_training_rejects_unknown_validation_articles(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["train-reader", "--data", str(TINY), "--output-dir", str(tmp_path), "--val-articles", "Nope"]
    )
    assert result.exit_code == 1 and "validation articles not in" in result.stderr

"""Scoring a reader on the validation articles and choosing its null threshold and calibration.

Every epoch, the model in memory is read on the validation questions (each against its own
paragraph), and the null threshold and Platt scaling are chosen there (`qa.calibration` holds the
choice); at the end, the saved float16 reader is scored and chosen for again, as the assistant
reads it, and calibrated in the deployed mode (`qa.calibrate`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qa.calibration import apply_threshold, best_threshold, fit_calibration
from qa.files import atomic_write_text
from qa.protocols import ReaderLike
from qa.reader import READER_CONFIG, Reader
from qa.squad import SquadExample, evaluate_predictions, predict_spans


def validate(reader: ReaderLike, val: Sequence[SquadExample], progress: bool) -> dict[str, Any]:
    """The threshold and calibration chosen on `val`, and the SQuAD figures at that threshold."""
    preds = predict_spans(reader, val, progress=progress)
    threshold, _ = best_threshold(val, preds)
    calib_a, calib_b = fit_calibration(val, preds)
    metrics = evaluate_predictions(val, apply_threshold(preds, threshold, reader.settings))
    return {"null_threshold": threshold, "calib_a": calib_a, "calib_b": calib_b, "metrics": metrics}


def describe(result: dict[str, Any]) -> str:
    """A validation result in one line: EM, F1 and the null threshold chosen."""
    m = result["metrics"]
    return (
        f"validation EM {m['exact']:.2f} F1 {m['f1']:.2f} "
        f"(HasAns F1 {m.get('HasAns_f1', float('nan')):.2f}, NoAns {m.get('NoAns_f1', float('nan')):.2f}), "
        f"null threshold {result['null_threshold']:.3f}"
    )


def calibrate_saved_reader(
    out_dir: str | Path, val: Sequence[SquadExample], progress: bool = True
) -> dict[str, Any] | None:
    """Choose the null threshold and calibration again on the saved float16 reader, read the way
    the assistant reads it (same dtype), so the stored threshold fits the shipped weights.

    Updates qa_reader.json (validation figures included) and returns the new result; None when
    there is no saved reader yet.
    """
    path = Path(out_dir) / READER_CONFIG
    if not path.is_file():
        return None
    info = json.loads(path.read_text(encoding="utf-8"))
    reader = Reader(str(out_dir))
    result = validate(reader, val, progress)
    info.update(null_threshold=result["null_threshold"], calib_a=result["calib_a"], calib_b=result["calib_b"])
    info["validation"] = {**info["validation"], **result["metrics"], "dtype": reader.dtype}
    atomic_write_text(path, json.dumps(info, indent=2) + "\n", "--output-dir")
    calibrate_in_deployed_mode(out_dir, val, progress)
    print(f"saved reader ({reader.dtype}): {describe(result)}", file=sys.stderr)
    return {**result, "epoch": info["validation"].get("epoch"), "step": info["validation"].get("step")}


def calibrate_in_deployed_mode(out_dir: str | Path, val: Sequence[SquadExample], progress: bool) -> None:
    """The saved reader's calibration.json, fitted on its validation questions asked through the
    assistant (see `qa.calibration`); a run too small to fit one says so and keeps going."""
    from qa.calibrate import calibrate_trained_reader
    from qa.errors import QAError

    try:
        report = calibrate_trained_reader(out_dir, val, progress)
    except QAError as exc:
        print(f"not calibrated in the deployed mode: {exc}", file=sys.stderr)
        return
    print(f"calibrated in the deployed mode: before {report.before.line()}", file=sys.stderr)
    print(f"  after (cross-validated): {report.after.line()}", file=sys.stderr)

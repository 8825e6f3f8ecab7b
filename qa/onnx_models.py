"""The reader and the sentence encoder on ONNX Runtime: exported once, cached, run without torch.

Why: on a CPU without native bfloat16, ONNX Runtime reads ~1.1x faster than torch, and a
question answered through it never imports torch or transformers, which cost more than half
of a cold `qa ask` (`benchmarks/bench.py` measures both, side by side). The export
runs through torch once per model, at first use; what it writes (the graph, and the exact
tokenizer transformers would use, as tokenizer.json) lives in the cache folder under a key made
from the model's files, so a retrained or replaced model is exported again, never read stale.

The cache is `QA_CACHE_DIR`, else `$XDG_CACHE_HOME/article-qa`, else `~/.cache/article-qa`
(the settings resolve it; see `cache_root`).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

# Bump when the export itself changes (inputs, outputs, opset): every cached graph is made again.
EXPORT_FORMAT = 1
OPSET = 17
META = "meta.json"


class ExportError(Exception):
    """torch could not export the model (the message says which and why)."""


def cache_root(env: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """Where exported models are kept (the same rule as Hugging Face's own cache)."""
    env = os.environ if env is None else env
    if env.get("QA_CACHE_DIR", "").strip():
        return Path(env["QA_CACHE_DIR"].strip()).expanduser()
    base = env.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "article-qa"


def onnxruntime_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def model_key(model_dir: str | Path, kind: str) -> str:
    """A name for one model's export that changes whenever a file the export is made from changes.

    Stat data (size, mtimes, inode) of the weights, configs and tokenizer files, as the index's
    article check does: hashing 45-90 MB of weights would cost more than the cold start we save.
    The model card, plots, logs and the reading settings (qa_reader.json, calibration.json, read
    from the folder itself) are not part of the graph, so editing them exports nothing again.
    """
    root = Path(model_dir).resolve()
    h = hashlib.sha256(f"{EXPORT_FORMAT}|{OPSET}|{kind}|{root}".encode())
    for p in sorted(root.iterdir()):
        if p.is_file() and _exported_from(p):
            st = p.stat()
            h.update(f"|{p.name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}".encode())
    return f"{kind}-{root.name}-{h.hexdigest()[:16]}"


def _exported_from(path: Path) -> bool:
    if path.name in {"qa_reader.json", "calibration.json"}:
        return False
    return path.suffix in {".json", ".safetensors", ".bin", ".txt", ".model"}


@dataclass(frozen=True)
class Exported:
    """One cached export: the graph, the tokenizer, and the names of the inputs the graph takes."""

    folder: Path
    inputs: tuple[str, ...]
    pad_id: int

    @property
    def graph(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def tokenizer_file(self) -> Path:
        return self.folder / "tokenizer.json"


def cached_export(
    model_dir: str | Path, kind: str, cache: Path, load: Callable[[], tuple[Any, Any]], log: Any = None
) -> Exported:
    """The model's export in the cache, made now when it is not there yet.

    `load` gives the torch model and its transformers tokenizer, loaded and checked as the torch
    backend loads them (so a reader without a QA head is refused here too).
    """
    folder = cache / "onnx" / model_key(model_dir, kind)
    found = _read_meta(folder)
    if found is not None:
        return found
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"cannot write the ONNX cache folder {folder} ({exc.strerror or exc}); set QA_CACHE_DIR to a "
            "writable folder"
        ) from exc
    model, tokenizer = load()  # first: a model that cannot load is its own one-line error
    if log is not None:
        log(f"Preparing the {kind} for ONNX Runtime (once per model; kept in {cache})...")
    try:
        _export(model, tokenizer, Path(model_dir), kind, folder)
    except Exception as exc:  # the exporter raises many types for what it cannot trace
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(f"could not export the {kind} {model_dir} to ONNX ({first[:200]})") from exc
    found = _read_meta(folder)
    assert found is not None
    _forget_older(folder)
    return found


def _forget_older(current: Path) -> None:
    """Remove the exports of earlier versions of the same model: a retrained model would otherwise
    leave ~90 MB behind each time. An export in use stays readable (open files outlive unlink)."""
    import shutil

    source = json.loads((current / META).read_text(encoding="utf-8"))["source"]
    for other in current.parent.iterdir():
        if other == current or not other.name.startswith(current.name.rsplit("-", 1)[0] + "-"):
            continue
        try:
            if json.loads((other / META).read_text(encoding="utf-8")).get("source") == source:
                shutil.rmtree(other, ignore_errors=True)
        except (OSError, ValueError):
            continue  # another writer's export under way (no meta yet), or not ours: leave it


def export_or_fallback(
    model_dir: str | Path,
    kind: str,
    cache: Path | None,
    load: Callable[[], tuple[Any, Any]],
    log: Callable[[str], None] | None,
    required: bool,
) -> Exported | None:
    """`cached_export`, or None when the model cannot be exported (or the cache not written: a
    read-only home) and ONNX Runtime was only chosen by `auto`: then torch runs it, and `log` says
    so. A ModelError when ONNX Runtime was asked for."""
    try:
        return cached_export(model_dir, kind, cache or cache_root(), load, log)
    except ExportError as exc:
        if required:
            raise ModelError(f"{exc}; use --backend torch") from exc
        if log is not None:
            log(f"{exc}; running the {kind} with torch instead")
        return None


def _read_meta(folder: Path) -> Exported | None:
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        exported = Exported(folder, tuple(meta["inputs"]), int(meta["pad_id"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return exported if exported.graph.is_file() and exported.tokenizer_file.is_file() else None


def _export(model: Any, tokenizer: Any, model_dir: Path, kind: str, folder: Path) -> None:
    """Export through torch's TorchScript exporter (no extra package needed), each file written
    to a private name and renamed into place, meta.json last: a reader sees all or nothing."""
    import inspect

    import torch

    model = model.float().eval()
    params = inspect.signature(model.forward).parameters
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in params]
    outputs = ["start_logits", "end_logits"] if kind == "reader" else ["last_hidden_state"]
    sample = tokenizer(["what is it?"], ["an example passage to trace"], return_tensors="pt")
    graph_tmp = folder / f"model.onnx.{os.getpid()}.partial"
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices are not the user's
        torch.onnx.export(
            _traceable(model, names, outputs), tuple(sample[n] for n in names), str(graph_tmp),
            input_names=names, output_names=outputs, opset_version=OPSET, dynamo=False,
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, *outputs]},
        )  # fmt: skip
    os.replace(graph_tmp, folder / "model.onnx")
    _write(folder / "tokenizer.json", tokenizer.backend_tokenizer.to_str())
    meta = {"source": str(model_dir.resolve()), "kind": kind, "inputs": names, "pad_id": tokenizer.pad_token_id or 0}
    _write(folder / META, json.dumps({**meta, "torch": torch.__version__}, indent=1))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _traceable(model: Any, names: list[str], outputs: list[str]) -> Any:
    """Positional inputs in, the named outputs out: the form torch.onnx.export traces."""
    import torch

    class Traced(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.model(**dict(zip(names, args, strict=True)))
            return tuple(out[name] for name in outputs)

    return Traced().eval()


def session(graph: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime session with OMP_NUM_THREADS threads (else one per usable core) that never
    spin-wait.

    Spinning bought ~4% idle (132 against 137 ms a read on the 2-core EPYC) but the reader's and
    the embedder's sessions each keep a pool: one pool's threads spinning after the query embedding
    took the cores from the other's, and a question took 194 ms instead of 122 (benchmarks/bench.py).
    Spinning also starves a machine that another process shares (benchmarks/load.py).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Explicitly one thread per usable core: ONNX Runtime's own default (0) pins its threads and,
    # without spinning, read 1.3x slower on the 2-core EPYC (174 against 137 ms; benchmarks/bench.py).
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or _usable_cores()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types for a damaged file
        raise ModelError(
            f"ONNX Runtime cannot load {graph} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            f"delete {graph.parent} to export it again"
        ) from exc


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_tokenizer(exported: Exported) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(exported.tokenizer_file))


def pad(rows: list[list[int]], fill: int) -> np.ndarray:
    import numpy as np

    longest = max(len(r) for r in rows)
    out = np.full((len(rows), longest), fill, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out

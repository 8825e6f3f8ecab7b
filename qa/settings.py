"""Every setting in one place, resolved once at the edge: flag > environment > default.

The CLI (and the benchmark) call `Settings.resolve(...)` with their flags; the library takes the
resulting object, or plain arguments, and never reads the environment itself. So a setting has
one name, one default and one check, whichever way it arrives.

Folders: `seeds/` and `index/` are looked for in the current folder; when the current folder
has no `seeds/` but the project checkout the package runs from does (an editable install, as
the README's command makes), that checkout's `seeds/` and `index/` are used, so `qa ask` works
from any folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from qa.errors import InputError

DEFAULT_EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_READER_MODEL = "shipped"  # qa/models/reader, trained by this project
RETRIEVAL_METHODS = ("dense", "bm25", "hybrid")
READER_DTYPES = ("auto", "float32", "bfloat16")
# How the models run: ONNX Runtime (exported once, cached), torch, or chosen for this machine.
BACKENDS = ("auto", "onnx", "torch")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# `qa serve`'s address: local only unless asked (0.0.0.0 opens the page to other machines).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
HOST_ENV, PORT_ENV = "QA_HOST", "QA_PORT"

# `--ray`: how long Ray's actors may take to start before the run stops with what was asked and
# what the cluster has (a cluster without room would otherwise keep them pending forever).
RAY_TIMEOUT_ENV = "QA_RAY_TIMEOUT"
DEFAULT_RAY_TIMEOUT_S = 60.0

# setting name -> environment variable
ENV = {
    "seeds": "QA_SEEDS",
    "index_dir": "QA_INDEX_DIR",
    "embed_model": "QA_EMBED_MODEL",
    "reader_model": "QA_READER_MODEL",
    "retrieval": "QA_RETRIEVAL",
    "passages": "QA_PASSAGES",
    "reader_dtype": "QA_READER_DTYPE",
    "backend": "QA_BACKEND",
    "cache_dir": "QA_CACHE_DIR",
    "calibration": "QA_CALIBRATION",
    "min_confidence": "QA_MIN_CONFIDENCE",
    "expect_unanswerable": "QA_EXPECT_UNANSWERABLE",
}


def default_seeds() -> Path:
    here = Path("seeds")
    if here.is_dir():
        return here
    project = PROJECT_ROOT / "seeds"
    return project if project.is_dir() and (PROJECT_ROOT / "pyproject.toml").is_file() else here


def default_index(seeds: Path) -> Path:
    """The index beside the project's own seeds/, else index/ in the current folder."""
    if seeds.resolve() == (PROJECT_ROOT / "seeds").resolve():
        return PROJECT_ROOT / "index"
    return Path("index")


@dataclass(frozen=True)
class Settings:
    seeds: Path = Path("seeds")
    index_dir: Path = Path("index")
    embed_model: str = DEFAULT_EMBED_MODEL
    reader_model: str = DEFAULT_READER_MODEL
    retrieval: str = "hybrid"
    passages: int = 3
    reader_dtype: str = "auto"  # bfloat16 on CPUs with native bf16, else float32
    backend: str = "auto"  # see qa.loading.choose_backend
    # Where ONNX exports are kept; None: $XDG_CACHE_HOME/article-qa, else ~/.cache/article-qa.
    cache_dir: Path | None = None
    chunk_size: int = 600
    chunk_overlap: int = 200
    # A calibration file (qa calibrate); None: the one beside the index, else the reader's.
    calibration: Path | None = None
    # Answer only when P(answer is right) reaches this; None: the calibration's own choice.
    min_confidence: float | None = None
    # The share of questions expected to be unanswerable: the min confidence is then read from the
    # calibration's stored curve for that share (`qa calibrate`: the share its cut is chosen for).
    expect_unanswerable: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", Path(self.seeds))  # str paths from callers (or Ray) too
        object.__setattr__(self, "index_dir", Path(self.index_dir))
        if self.calibration is not None:
            object.__setattr__(self, "calibration", Path(self.calibration))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())
        if self.min_confidence is not None:
            object.__setattr__(self, "min_confidence", check_min_confidence(self.min_confidence))
        if self.expect_unanswerable is not None:
            object.__setattr__(self, "expect_unanswerable", check_share(self.expect_unanswerable))
            if self.min_confidence is not None:
                raise InputError(
                    "give either a min confidence or an expected share of unanswerable questions, not both "
                    f"(--min-confidence/{ENV['min_confidence']}, --expect-unanswerable/{ENV['expect_unanswerable']})"
                )
        check_retrieval(self.retrieval)
        if not isinstance(self.passages, int) or isinstance(self.passages, bool) or self.passages < 1:
            raise InputError(f"passages must be a whole number of at least 1, got {self.passages!r}")
        if self.reader_dtype not in READER_DTYPES:
            raise InputError(f"reader dtype must be one of {', '.join(READER_DTYPES)}, got {self.reader_dtype!r}")
        if self.backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.chunk_overlap >= self.chunk_size:
            raise InputError(f"chunk overlap ({self.chunk_overlap}) must be smaller than the chunk size")

    @classmethod
    def resolve(cls, env: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Flags (None = not given) over environment variables over defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            flag = flags.pop(f.name, None)
            if flag is not None:
                values[f.name] = flag
            elif f.name in ENV and env.get(ENV[f.name], "").strip():
                values[f.name] = _from_env(f.name, env[ENV[f.name]].strip())
        if flags:
            raise TypeError(f"unknown settings: {', '.join(sorted(flags))}")
        seeds = Path(values.get("seeds") or default_seeds())
        values["seeds"] = seeds
        values["index_dir"] = Path(values.get("index_dir") or default_index(seeds))
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _from_env(name: str, raw: str) -> Any:
    if name == "passages":
        try:
            return int(raw)
        except ValueError as exc:
            raise InputError(f"{ENV[name]} must be a whole number, got {raw!r}") from exc
    if name == "min_confidence":
        return check_min_confidence(raw, ENV[name])
    if name == "expect_unanswerable":
        return check_share(raw, ENV[name])
    if name == "backend":
        if raw.lower() not in BACKENDS:
            raise InputError(f"{ENV[name]} must be one of {', '.join(BACKENDS)}, got {raw!r}")
        return raw.lower()
    if name == "reader_dtype":
        value = {"fp32": "float32", "bf16": "bfloat16"}.get(raw.lower(), raw.lower())
        if value not in READER_DTYPES:
            raise InputError(f"{ENV[name]} must be one of {', '.join(READER_DTYPES)}, got {raw!r}")
        return value
    return raw


def check_min_confidence(value: object, source: str = "min confidence") -> float:
    """A probability from 0 to 1, from a flag, an environment variable or the page; else one line."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source} must be a number from 0 to 1, got {value!r}") from exc
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise InputError(f"{source} must be a number from 0 to 1, got {value!r}")
    return number


def check_share(value: object, source: str = "expected share of unanswerable questions") -> float:
    """A share from 0 to 1 (exclusive of 1: a mix with no answerable question has nothing to answer)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{source} must be a number from 0 to below 1 (0.2: one question in five), got {value!r}"
        ) from exc
    if not math.isfinite(number) or not 0.0 <= number < 1.0:
        raise InputError(f"{source} must be a number from 0 to below 1 (0.2: one question in five), got {value!r}")
    return number


def check_retrieval(method: str) -> str:
    if method not in RETRIEVAL_METHODS:
        raise InputError(f"retrieval must be one of {', '.join(RETRIEVAL_METHODS)}, got {method!r}")
    return method

"""Extractive reader: finds answer spans in passages with a transformers QA model.

Each passage is read on its own, in overlapping stride windows (never truncated, never joined
with other passages), and all windows of a call are batched together. A span is scored by
its start+end logits minus the no-answer (CLS) logits of its own window: this "gap" is
comparable across windows and passages, and the assistant abstains when the best gap is not
above the null threshold stored with the model (chosen on held-out data, SQuAD 2.0 style).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.errors import ModelError
from qa.loading import (
    READER_MODEL_ENV,
    check_backend,
    choose_backend,
    model_load_error,
    quiet_hf,
    reader_dtype,
    resolve_reader_model,
)
from qa.onnx_models import pad

if TYPE_CHECKING:
    import numpy as np

    from qa.settings import Settings

READER_CONFIG = "qa_reader.json"
# The smallest window `qa train-reader --max-length` accepts; a reader never reads with less.
MIN_MAX_LENGTH = 32


@dataclass(frozen=True)
class ReaderSettings:
    """Decoding settings stored with the model in qa_reader.json."""

    max_length: int = 384
    stride: int = 128
    max_answer_tokens: int = 30
    null_threshold: float = 0.0
    # score = sigmoid(calib_a * gap + calib_b), fitted on the validation articles.
    calib_a: float = 1.0
    calib_b: float = 0.0

    @classmethod
    def load(cls, model_dir: str | Path) -> ReaderSettings:
        """The settings in the model's qa_reader.json (defaults when it has none), checked field by field.

        Other keys (the training run's record) are left alone; a wrong type or value is one
        ModelError naming the file, the field and the fix, never a traceback or a silent default.
        """
        path = Path(model_dir) / READER_CONFIG
        if not path.is_file():
            return cls()
        fix = "restore the file from the reader's training run, or retrain it with qa train-reader"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path} is not valid JSON ({exc}); {fix}") from exc
        if not isinstance(raw, dict):
            raise ModelError(f"{path} holds a JSON {_json_kind(raw)}, not an object of reader settings; {fix}")
        values: dict[str, Any] = {}
        for f in fields(cls):  # in declaration order: max_length is checked before stride needs it
            if f.name not in raw:
                continue
            value = raw[f.name]
            rule = _setting_problem(f.name, value, values.get("max_length", cls.max_length))
            if rule is not None:
                shown = json.dumps(value)
                raise ModelError(
                    f"{path}: {f.name!r} must be {rule}, got {shown if len(shown) <= 40 else shown[:37] + '...'}; "
                    f"correct it, or remove it to use the default ({f.default})"
                )
            values[f.name] = value if f.name in _INT_SETTINGS else float(value)
        return cls(**values)

    def confident(self, gap: float, threshold: float | None = None) -> bool:
        """The abstention rule, in one place: answer only when the gap beats the null threshold."""
        return gap > (self.null_threshold if threshold is None else threshold)

    def score(self, gap: float) -> float:
        z = self.calib_a * gap + self.calib_b
        return 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0


# The whole-number settings and their smallest values; the other settings are finite floats.
_INT_SETTINGS = {"max_length": MIN_MAX_LENGTH, "stride": 0, "max_answer_tokens": 1}


def _setting_problem(name: str, value: object, max_length: int) -> str | None:
    """What a qa_reader.json value must be, when it is not that (None when it is fine)."""
    if name in _INT_SETTINGS:
        least = _INT_SETTINGS[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            return f"a whole number of at least {least}"
        if name == "stride" and value >= max_length // 2:
            # The windows must advance: the same rule as qa train-reader's --stride.
            return f"less than half of max_length ({max_length})"
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "a finite number"
    return None


def _json_kind(value: object) -> str:
    names = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}
    return names.get(type(value), "null")


@dataclass(frozen=True)
class Span:
    """A candidate answer inside one passage; offsets are into that passage's text."""

    start: int
    end: int
    gap: float  # span logit minus the no-answer logit of its window
    window: int
    # The two halves of the gap (start+end logits, and the window's no-answer logits): the
    # calibrator reads them apart, because on news text the no-answer logit runs high.
    logit: float = 0.0
    null: float = 0.0


def tokenize_windows(tokenizer: Any, questions: list[str], contexts: list[str], max_length: int, stride: int) -> Any:
    """Question + context in stride windows with offsets; shared by training and reading."""
    return tokenizer(
        [q.lstrip() for q in questions],
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )


def batches_by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, so padding costs little."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def window_encodings(
    tokenizer: Any, questions: list[str], contexts: list[str], max_length: int, stride: int
) -> Windows:
    """`tokenize_windows` done on the `tokenizers` library directly, as transformers' fast
    tokenizer does it (the same calls on the same Rust tokenizer; a test holds them equal), so
    reading needs neither transformers nor torch."""
    set_windows(tokenizer, max_length, stride)
    windows, pairs = [], []
    for i, enc in enumerate(
        tokenizer.encode_batch([(q.lstrip(), c) for q, c in zip(questions, contexts, strict=True)])
    ):
        for window in (enc, *enc.overflowing):
            windows.append(window)
            pairs.append(i)
    return Windows(windows, pairs)


def set_windows(tokenizer: Any, max_length: int, stride: int) -> None:
    """Make `tokenizer` cut stride windows as transformers does; a no-op when it already does.

    Set once per reader (at load), not per call: a tokenizer being changed while another thread
    encodes with it raises "Already borrowed", and readers are shared across a server's threads.
    """
    wanted = {"max_length": max_length, "stride": stride, "strategy": "only_second", "direction": "right"}
    if tokenizer.truncation != wanted or tokenizer.padding is not None:
        tokenizer.enable_truncation(**wanted)
        tokenizer.no_padding()


@dataclass(frozen=True)
class Windows:
    """The windows of a read: `tokenizers` Encodings (ids, type_ids, attention_mask, offsets,
    sequence_ids) and, for each, the index of its (question, passage) pair."""

    encodings: list[Any]
    pairs: list[int]


class Reader:
    """Loads the QA model once; `read` scores spans for many (question, passage) pairs at once.

    Two backends give the same logits (within 1e-4; tested): ONNX Runtime, exported from the
    model on first use and cached (`qa.onnx_models`), and torch, which also runs bfloat16 on CPUs
    with native bf16 and any GPU. `backend="auto"` picks by the measurements in the README.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        batch_size: int = 16,
        device: str | None = None,
        dtype: str = "auto",
        backend: str = "auto",
        cache: Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._requested = model
        self._wanted_dtype = dtype
        self._wanted_backend = check_backend(backend)
        self._cache = cache
        self._log = log
        self.batch_size = batch_size
        self._device = device
        self._model: Any = None  # a torch module, or an ONNX Runtime session
        self._tokenizer: Any = None  # the transformers tokenizer (torch backend only)
        self._windows_tokenizer: Any = None  # a `tokenizers.Tokenizer`, both backends
        self._inputs: tuple[str, ...] = ()
        self._pad_id = 0
        self.dtype = "float32"
        self.backend = ""  # "onnx" or "torch" once loaded

    @cached_property
    def model_name(self) -> str:
        """Resolved on first use, so commands that never read (qa index) need no reader."""
        return resolve_reader_model(self._requested, self._cache, self._log)

    @cached_property
    def settings(self) -> ReaderSettings:
        return ReaderSettings.load(self.model_name) if Path(self.model_name).is_dir() else ReaderSettings()

    @classmethod
    def from_settings(cls, settings: Settings, log: Callable[[str], None] | None = None) -> Reader:
        """The reader the settings name, run the way they say."""
        s = settings
        return cls(s.reader_model, dtype=s.reader_dtype, backend=s.backend, cache=s.cache_dir, log=log)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, settings: ReaderSettings, device: str) -> Reader:
        """Wrap an already loaded model (used while training to validate each epoch)."""
        reader = cls(batch_size=32, device=device, backend="torch")
        reader.__dict__.update(model_name="<in memory>", settings=settings)
        reader._use_torch(model, tokenizer, device)
        return reader

    def warm_up(self) -> None:
        if self._model is not None:
            return
        _ = self.settings  # a damaged qa_reader.json fails before the weights load
        local = Path(self.model_name).is_dir()
        backend = choose_backend(self._wanted_backend, self._wanted_dtype, self._device, local)
        if backend == "onnx" and self._exported_onnx():
            return
        import torch

        device = self._device or _torch_device()
        model, tokenizer = self._load_torch()
        self.dtype = reader_dtype(device, self._wanted_dtype)
        self._use_torch(model.to(device, dtype=getattr(torch, self.dtype)).eval(), tokenizer, device)

    def _load_torch(self) -> tuple[Any, Any]:
        """The model and its tokenizer from transformers, checked: a fast tokenizer and a trained QA head."""
        import torch
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        quiet_hf()
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_name, use_fast=True)
            model, loading = AutoModelForQuestionAnswering.from_pretrained(
                self.model_name, dtype=torch.float32, output_loading_info=True
            )
        except Exception as exc:  # transformers raises many types for a missing/corrupt model
            raise model_load_error("reader model", self.model_name, exc, "--reader-model", READER_MODEL_ENV) from exc
        # transformers initialises head weights the checkpoint lacks at random and loads on: a plain
        # encoder would then "answer" with confidence. The head is what lies outside the base model.
        base = f"{model.base_model_prefix}."
        if any(not key.startswith(base) for key in loading["missing_keys"]):
            raise ModelError(
                f"reader model {self.model_name} has no trained question-answering head (it looks like a plain "
                "encoder); pass a reader trained with qa train-reader (or a hub QA model) to --reader-model"
            )
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(f"reader {self.model_name} has no fast tokenizer; character offsets need one")
        return model, tokenizer

    def _use_torch(self, model: Any, tokenizer: Any, device: str) -> None:
        from tokenizers import Tokenizer

        self._model = model
        self._tokenizer = tokenizer
        # A copy: transformers resets the truncation state of its own on every call.
        self._windows_tokenizer = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        set_windows(self._windows_tokenizer, self.settings.max_length, self.settings.stride)
        self._pad_id = tokenizer.pad_token_id or 0
        self._device = device
        self.backend = "torch"

    def _exported_onnx(self) -> bool:
        """Load the ONNX export (made now if needed). False when `auto` chose it but the model cannot
        be exported (an architecture torch's exporter does not handle): then torch reads."""
        from qa import onnx_models

        required = self._wanted_backend == "onnx"
        exported = onnx_models.export_or_fallback(
            self.model_name, "reader", self._cache, self._load_torch, self._log, required
        )
        if exported is None:
            return False
        self._model = onnx_models.session(exported.graph)
        self._windows_tokenizer = onnx_models.load_tokenizer(exported)
        set_windows(self._windows_tokenizer, self.settings.max_length, self.settings.stride)
        self._inputs, self._pad_id = exported.inputs, exported.pad_id
        self._device, self.dtype, self.backend = "cpu", "float32", "onnx"
        return True

    def logits(self, windows: Windows) -> list[tuple[np.ndarray, np.ndarray]]:
        """Start/end logits (float32 arrays) for every window, batched by length."""
        self.warm_up()
        lengths = [len(w.ids) for w in windows.encodings]
        result: list[Any] = [None] * len(lengths)
        for idx in batches_by_length(lengths, self.batch_size):
            batch = {
                "input_ids": pad([windows.encodings[i].ids for i in idx], self._pad_id),
                "attention_mask": pad([windows.encodings[i].attention_mask for i in idx], 0),
                "token_type_ids": pad([windows.encodings[i].type_ids for i in idx], 0),
            }
            starts, ends = self._forward(batch)
            for row, i in enumerate(idx):
                result[i] = (starts[row, : lengths[i]], ends[row, : lengths[i]])
        return result

    def _forward(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self.backend == "onnx":
            starts, ends = self._model.run(None, {name: batch[name] for name in self._inputs})
            return starts, ends
        import torch

        names = ("input_ids", "attention_mask", "token_type_ids")
        wanted = {n: torch.from_numpy(batch[n]).to(self._device) for n in names if n in self._model_inputs}
        with torch.inference_mode():
            out = self._model(**wanted)
        return out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()

    @cached_property
    def _model_inputs(self) -> frozenset[str]:
        import inspect

        # A peft model's forward takes **kwargs; the inputs are those of the model it wraps.
        inner = self._model.get_base_model() if hasattr(self._model, "get_base_model") else self._model
        return frozenset(inspect.signature(inner.forward).parameters)

    def read(self, questions: list[str], contexts: list[str], n_best: int = 5) -> list[list[Span]]:
        """For each (question, context) pair, its best spans (best first, distinct offsets)."""
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        if not questions:
            return []
        s = self.settings
        self.warm_up()
        windows = window_encodings(self._windows_tokenizer, questions, contexts, s.max_length, s.stride)
        per_pair: list[dict[tuple[int, int], Span]] = [{} for _ in questions]
        for w, (start_logits, end_logits) in enumerate(self.logits(windows)):
            pair, enc = windows.pairs[w], windows.encodings[w]
            for tok_s, tok_e, logit, null in decode_window(
                start_logits, end_logits, enc.sequence_ids, s.max_answer_tokens, n_best
            ):
                start, end = whole_words(contexts[pair], enc.offsets[tok_s][0], enc.offsets[tok_e][1])
                span = Span(start, end, logit - null, w, logit, null)
                key = (span.start, span.end)
                best = per_pair[pair].get(key)
                if best is None or span.gap > best.gap:
                    per_pair[pair][key] = span
        return [sorted(spans.values(), key=lambda sp: -sp.gap)[:n_best] for spans in per_pair]


def _torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a span cut inside a word ("ATACM" of "ATACMS") to the whole word."""
    while start > 0 and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    return start, end


def decode_window(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    sequence_ids: list[int | None],
    max_answer_tokens: int,
    n_best: int,
) -> list[tuple[int, int, float, float]]:
    """Best (start_token, end_token, span logit, no-answer logit) spans of one window, context tokens only."""
    import numpy as np

    ctx = np.array([sid == 1 for sid in sequence_ids], dtype=bool)
    if not ctx.any():
        return []
    start_logits = np.asarray(start_logits, dtype=np.float32)
    end_logits = np.asarray(end_logits, dtype=np.float32)
    null = float(start_logits[0] + end_logits[0])
    n = start_logits.shape[0]
    i = np.arange(n)
    length = i[None, :] - i[:, None]
    valid = (length >= 0) & (length < max_answer_tokens) & ctx[:, None] & ctx[None, :]
    scores = np.where(valid, start_logits[:, None] + end_logits[None, :], -np.inf).ravel()
    k = min(n_best, int(valid.sum()))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(f) // n, int(f) % n, float(scores[f]), null) for f in top]

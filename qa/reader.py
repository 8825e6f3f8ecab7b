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
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.errors import ModelError
from qa.models import READER_MODEL_ENV, model_load_error, quiet_hf, reader_dtype, resolve_reader_model

if TYPE_CHECKING:
    import torch

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


def pad_batch(encoding: Any, idx: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    import torch

    longest = max(len(encoding["input_ids"][i]) for i in idx)
    out: dict[str, torch.Tensor] = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key not in encoding:
            continue
        rows = [list(encoding[key][i]) + [fill] * (longest - len(encoding[key][i])) for i in idx]
        out[key] = torch.tensor(rows, dtype=torch.long)
    return out


class Reader:
    """Loads the QA model once; `read` scores spans for many (question, passage) pairs at once."""

    def __init__(
        self, model: str | None = None, *, batch_size: int = 16, device: str | None = None, dtype: str = "auto"
    ) -> None:
        self._requested = model
        self._wanted_dtype = dtype
        self.batch_size = batch_size
        self._device = device
        self._model: Any = None
        self._tokenizer: Any = None
        self.dtype = "float32"

    @cached_property
    def model_name(self) -> str:
        """Resolved on first use, so commands that never read (qa index) need no reader."""
        return resolve_reader_model(self._requested)

    @cached_property
    def settings(self) -> ReaderSettings:
        return ReaderSettings.load(self.model_name) if Path(self.model_name).is_dir() else ReaderSettings()

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, settings: ReaderSettings, device: str) -> Reader:
        """Wrap an already loaded model (used while training to validate each epoch)."""
        reader = cls(batch_size=32, device=device)
        reader.__dict__.update(model_name="<in memory>", settings=settings)
        reader._model, reader._tokenizer = model, tokenizer
        return reader

    def warm_up(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        _ = self.settings  # a damaged qa_reader.json fails before the weights load
        quiet_hf()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_name, use_fast=True)
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
        if not getattr(self._tokenizer, "is_fast", False):
            raise ModelError(f"reader {self.model_name} has no fast tokenizer; character offsets need one")
        device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = reader_dtype(device, self._wanted_dtype)
        self._model = model.to(device, dtype=getattr(torch, self.dtype)).eval()
        self._device = device

    @property
    def tokenizer(self) -> Any:
        self.warm_up()
        return self._tokenizer

    def logits(self, encoding: Any) -> list[tuple[list[float], list[float]]]:
        """Start/end logits for every window, batched by length."""
        import torch

        self.warm_up()
        lengths = [len(ids) for ids in encoding["input_ids"]]
        result: list[Any] = [None] * len(lengths)
        pad_id = self._tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for idx in batches_by_length(lengths, self.batch_size):
                batch = {k: v.to(self._device) for k, v in pad_batch(encoding, idx, pad_id).items()}
                out = self._model(**batch)
                starts = out.start_logits.float().cpu()
                ends = out.end_logits.float().cpu()
                for row, i in enumerate(idx):
                    result[i] = (starts[row, : lengths[i]], ends[row, : lengths[i]])
        return result

    def read(self, questions: list[str], contexts: list[str], n_best: int = 5) -> list[list[Span]]:
        """For each (question, context) pair, its best spans (best first, distinct offsets)."""
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        if not questions:
            return []
        s = self.settings
        enc = tokenize_windows(self.tokenizer, questions, contexts, s.max_length, s.stride)
        window_logits = self.logits(enc)
        per_pair: list[dict[tuple[int, int], Span]] = [{} for _ in questions]
        for w, (start_logits, end_logits) in enumerate(window_logits):
            pair = enc["overflow_to_sample_mapping"][w]
            seq_ids = enc.sequence_ids(w)
            offsets = enc["offset_mapping"][w]
            for tok_s, tok_e, logit, null in decode_window(
                start_logits, end_logits, seq_ids, s.max_answer_tokens, n_best
            ):
                start, end = whole_words(contexts[pair], offsets[tok_s][0], offsets[tok_e][1])
                span = Span(start, end, logit - null, w, logit, null)
                key = (span.start, span.end)
                best = per_pair[pair].get(key)
                if best is None or span.gap > best.gap:
                    per_pair[pair][key] = span
        return [sorted(spans.values(), key=lambda sp: -sp.gap)[:n_best] for spans in per_pair]


def whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a span cut inside a word ("ATACM" of "ATACMS") to the whole word."""
    while start > 0 and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    return start, end


def decode_window(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    sequence_ids: list[int | None],
    max_answer_tokens: int,
    n_best: int,
) -> list[tuple[int, int, float, float]]:
    """Best (start_token, end_token, span logit, no-answer logit) spans of one window, context tokens only."""
    import torch

    ctx = torch.tensor([sid == 1 for sid in sequence_ids], dtype=torch.bool)
    if not bool(ctx.any()):
        return []
    null = float(start_logits[0] + end_logits[0])
    n = start_logits.shape[0]
    scores = start_logits[:, None] + end_logits[None, :]
    i = torch.arange(n)
    valid = (i[None, :] >= i[:, None]) & (i[None, :] - i[:, None] < max_answer_tokens)
    valid &= ctx[:, None] & ctx[None, :]
    scores = scores.masked_fill(~valid, float("-inf"))
    k = min(n_best, int(valid.sum()))
    top = torch.topk(scores.flatten(), k)
    return [(int(f) // n, int(f) % n, float(v), null) for v, f in zip(top.values, top.indices, strict=True)]

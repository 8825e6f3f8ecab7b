"""Training pairs as tokenized windows in flat numpy arrays, cached beside the run, and batched by length."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.reader import tokenize_windows
from qa.squad import SquadExample
from qa.training.config import TrainConfig
from qa.training.data import KIND_MISSED, Pair, training_pairs

FEATURES_FILE = "features.npz"


@dataclass
class Features:
    """Tokenized windows in flat arrays: ids[offsets[i]:offsets[i+1]] is window i."""

    ids: np.ndarray
    offsets: np.ndarray
    type_start: np.ndarray  # first token of the second segment (token_type_ids 1 from there)
    start: np.ndarray
    end: np.ndarray
    kind: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def batch(self, idx: Sequence[int], pad_id: int, with_token_types: bool) -> dict[str, Any]:
        import torch

        lengths = self.lengths[idx]
        longest = int(lengths.max())
        ids = np.full((len(idx), longest), pad_id, dtype=np.int64)
        for row, i in enumerate(idx):
            ids[row, : lengths[row]] = self.ids[self.offsets[i] : self.offsets[i + 1]]
        positions = np.arange(longest)[None, :]
        mask = positions < lengths[:, None]
        out = {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)),
            "start_positions": torch.from_numpy(self.start[idx].astype(np.int64)),
            "end_positions": torch.from_numpy(self.end[idx].astype(np.int64)),
        }
        if with_token_types:
            types = mask & (positions >= self.type_start[idx][:, None])
            out["token_type_ids"] = torch.from_numpy(types.astype(np.int64))
        return out

    def save(self, path: Path, key: str) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, key=np.array(key), **{k: getattr(self, k) for k in self.__dataclass_fields__})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, key: str) -> Features | None:
        try:
            with np.load(path) as raw:
                if str(raw["key"]) != key:
                    return None
                return cls(**{k: raw[k] for k in cls.__dataclass_fields__})
        except (OSError, KeyError, ValueError):
            return None


def _label(pair: Pair, seq: list[int | None], offsets: list[tuple[int, int]]) -> tuple[int, int, int]:
    """(start token, end token, kind) of one window: the answer's tokens, or CLS (0, 0) when the
    pair has no answer or the window misses it."""
    if pair.label is None:
        return 0, 0, pair.kind
    ctx = [i for i, sid in enumerate(seq) if sid == 1]
    s_char = pair.label[1]
    e_char = s_char + len(pair.label[0])
    if ctx and offsets[ctx[0]][0] <= s_char and offsets[ctx[-1]][1] >= e_char:
        s_tok = next(i for i in ctx if offsets[i][1] > s_char)
        e_tok = next(i for i in reversed(ctx) if offsets[i][0] < e_char)
        return s_tok, e_tok, pair.kind
    return 0, 0, KIND_MISSED


def build_features(
    tokenizer: Any, pairs: Sequence[Pair], max_length: int, stride: int, progress: bool = True, chunk: int = 2000
) -> Features:
    """Tokenize in chunks so only one chunk's Python objects exist at a time."""
    from tqdm import tqdm

    id_dtype = np.uint16 if len(tokenizer) < 2**16 else np.int32
    ids: list[np.ndarray] = []
    type_start: list[int] = []
    labels: list[tuple[int, int, int]] = []
    bar = tqdm(total=len(pairs), desc="tokenize", unit="q", disable=not progress)
    for c in range(0, len(pairs), chunk):
        part = pairs[c : c + chunk]
        enc = tokenize_windows(tokenizer, [p.question for p in part], [p.context for p in part], max_length, stride)
        for w in range(len(enc["input_ids"])):
            seq = enc.sequence_ids(w)
            labels.append(_label(part[enc["overflow_to_sample_mapping"][w]], seq, enc["offset_mapping"][w]))
            ids.append(np.asarray(enc["input_ids"][w], dtype=id_dtype))
            # The second segment starts after the question's [SEP] (the first None after the question).
            first_q = next((i for i, sid in enumerate(seq) if sid == 0), 0)
            type_start.append(next((i for i in range(first_q, len(seq)) if seq[i] is None), len(seq)) + 1)
        bar.update(len(part))
    bar.close()
    starts, ends, kinds = zip(*labels, strict=True) if labels else ((), (), ())
    return Features(
        ids=np.concatenate(ids) if ids else np.zeros(0, dtype=id_dtype),
        offsets=np.concatenate([[0], np.cumsum([len(row) for row in ids])]).astype(np.int64),
        type_start=np.asarray(type_start, dtype=np.int16),
        start=np.asarray(starts, dtype=np.int16),
        end=np.asarray(ends, dtype=np.int16),
        kind=np.asarray(kinds, dtype=np.int8),
    )


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A name for what the tokenizer does (its vocabulary, normalizer, templates), wherever it was loaded from."""
    # The parts that decide the ids, not the whole serialisation: that differs between versions of
    # `tokenizers` (and carries the truncation state transformers sets per call).
    raw = json.loads(tokenizer.backend_tokenizer.to_str())
    parts = {k: raw.get(k) for k in ("normalizer", "pre_tokenizer", "post_processor")}
    parts["vocab"] = sorted(tokenizer.get_vocab().items())
    parts["model"] = (raw.get("model") or {}).get("type")
    return "sha256:" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def features_key(cfg: TrainConfig, tokenizer_name: str) -> str:
    """What the cached features depend on; a different key means tokenize again.

    The data files by name and content, not path or time, so features built on one machine are
    reused by the same run on another (a stage on a new machine, or a GPU)."""
    files = [[Path(path).name, Path(path).stat().st_size, file_digest(path)] for path in cfg.data]
    parts = [
        files,
        tokenizer_name,
        cfg.max_length,
        cfg.stride,
        cfg.negatives,
        cfg.unanswerable_repeats,
        cfg.seed,
        cfg.max_train_questions,
        sorted(cfg.val_articles),
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def cached_features(
    cfg: TrainConfig, tokenizer: Any, tokenizer_name: str, train: Sequence[SquadExample], progress: bool
) -> Features:
    """The run's features: the cached ones when they were built from the same data and settings."""
    path = Path(cfg.output_dir) / FEATURES_FILE
    key = features_key(cfg, tokenizer_name)
    feats = Features.load(path, key)
    if feats is None:
        pairs = training_pairs(train, cfg.negatives, random.Random(cfg.seed), cfg.unanswerable_repeats)
        feats = build_features(tokenizer, pairs, cfg.max_length, cfg.stride, progress)
        del pairs
        feats.save(path, key)
    return feats


def shuffled_length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Random batches of similar length: shuffle, sort within pools of 50 batches, shuffle batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for i in range(0, len(order), pool):
        part = sorted(order[i : i + pool], key=lambda j: lengths[j])
        batches.extend(part[k : k + batch_size] for k in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The same order for an epoch every time, so --resume can skip what was done."""
    return shuffled_length_batches(lengths, batch_size, random.Random(seed * 1000 + epoch))

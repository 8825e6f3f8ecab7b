"""Fine-tune an extractive QA reader on SQuAD v2.0-format data (`qa train-reader`).

Standard SQuAD preprocessing: question + context in stride windows; the answer is mapped to
token positions through the fast tokenizer's offsets; windows that miss the answer and
unanswerable questions point at position 0 (CLS). Besides SQuAD's own unanswerable questions,
a share of answerable questions is paired with another paragraph of the same article that does
not hold the answer, labelled no-answer: the assistant reads several retrieved chunks and
usually only one holds the answer, so the reader must learn to say "not here" to the others.

Built for 2 CPU cores and ~100k questions:
- features live in flat numpy arrays (token ids as uint16), not Python lists, so memory stays
  at a few hundred MB whatever the data size, and they are cached beside the run for --resume;
- eager attention under bf16 autocast (measured 0.43 s a step against 0.63 s for SDPA);
- `--time-budget` plans the learning-rate schedule from the measured step time, so the run
  decays to zero and validates before the budget ends; a checkpoint every ~10 minutes and
  `--resume` continue an interrupted run exactly where it stopped.

Validation articles are split off by article, never trained on, and used to pick the best
checkpoint, the null threshold and the score calibration, all saved with the model in
qa_reader.json.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import math
import os
import random
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import InputError
from qa.files import atomic_write_text
from qa.metrics import evaluate_predictions
from qa.reader import READER_CONFIG, Reader, ReaderSettings, tokenize_windows
from qa.settings import PROJECT_ROOT
from qa.squad import SquadExample, apply_threshold, best_threshold, fit_calibration, load_squad, predict_spans

# Held out by article: a mix of articles with and without unanswerable questions (about 11%
# of squad-train-38.json's questions, 38% of them unanswerable).
VALIDATION_ARTICLES = ("Economic_inequality", "Rhine", "Harvard_University", "Kenya")
# ../shared/ beside the checkout (as in CI), wherever the command is run from.
SHARED_SQUAD = PROJECT_ROOT.parent / "shared" / "data" / "squad"
DEFAULT_DATA = (str(SHARED_SQUAD / "squad-train-442.json"), str(SHARED_SQUAD / "squad-train-38.json"))
CHECKPOINT_DIR = "checkpoint"
FEATURES_FILE = "features.npz"
LOG_FILE = "training_log.jsonl"

# What a training window teaches (for the log's mix figures).
KIND_ANSWER, KIND_MISSED, KIND_UNANSWERABLE, KIND_OTHER_PARAGRAPH = 0, 1, 2, 3


@dataclass
class TrainConfig:
    data: Sequence[str] = DEFAULT_DATA
    output_dir: str = "runs/reader"
    base_model: str | None = None
    epochs: float = 2.0
    learning_rate: float = 1e-4  # chosen from pilot runs (model card)
    batch_size: int = 16
    max_length: int = 384
    stride: int = 128
    seed: int = 42
    warmup: float = 0.06
    weight_decay: float = 0.01
    bf16: bool | None = None  # None: use bf16 autocast where the hardware has it
    val_articles: Sequence[str] = VALIDATION_ARTICLES
    # Share of answerable questions also paired with another paragraph of their article (no answer).
    negatives: float = 0.25
    time_budget: float | None = None  # minutes for the whole run, validation included
    checkpoint_minutes: float = 10.0
    eager_attention: bool = True
    attention_dropout: float = 0.0
    freeze_word_embeddings: bool = True
    max_steps: int | None = None  # stop early (tests, smoke runs, pilots)
    max_train_questions: int | None = None
    max_val_questions: int | None = None
    command: str = field(default_factory=lambda: shlex.join(["qa", *sys.argv[1:]]))


def majority_answer(ex: SquadExample) -> tuple[str, int] | None:
    """The answer most annotators gave (first on ties): a steadier label than the first one."""
    if not ex.answers:
        return None
    counts = collections.Counter(ex.answers)
    best = max(range(len(ex.answers)), key=lambda i: (counts[ex.answers[i]], -i))
    return ex.answers[best], ex.answer_starts[best]


@dataclass(frozen=True)
class Pair:
    """One training input: a question, a context and its label (None: no answer here)."""

    question: str
    context: str
    label: tuple[str, int] | None
    kind: int


def training_pairs(examples: Sequence[SquadExample], negatives: float, rng: random.Random) -> list[Pair]:
    """Every question with its own paragraph, plus other-paragraph negatives for a share of them.

    A negative paragraph is one of the same article (same topic and names, so it is a hard
    negative, like a retrieved chunk) that contains none of the question's gold answers.
    """
    pairs = []
    for ex in examples:
        label = majority_answer(ex)
        pairs.append(Pair(ex.question, ex.context, label, KIND_ANSWER if label else KIND_UNANSWERABLE))
    if negatives <= 0:
        return pairs
    by_title: dict[str, list[str]] = collections.defaultdict(list)
    for ex in examples:
        contexts = by_title[ex.title]
        if not contexts or contexts[-1] != ex.context:
            contexts.append(ex.context)
    for ex in examples:
        if not ex.answers or rng.random() >= negatives:
            continue
        others = [c for c in by_title[ex.title] if c != ex.context]
        rng.shuffle(others)
        golds = [a.lower() for a in ex.answers if a.strip()]
        for ctx in others[:5]:
            low = ctx.lower()
            if not any(g in low for g in golds):
                pairs.append(Pair(ex.question, ctx, None, KIND_OTHER_PARAGRAPH))
                break
    return pairs


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


def build_features(
    tokenizer: Any, pairs: Sequence[Pair], max_length: int, stride: int, progress: bool = True, chunk: int = 2000
) -> Features:
    """Tokenize in chunks so only one chunk's Python objects exist at a time."""
    from tqdm import tqdm

    id_dtype = np.uint16 if len(tokenizer) < 2**16 else np.int32
    ids: list[np.ndarray] = []
    lengths: list[int] = []
    type_start: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    kinds: list[int] = []
    bar = tqdm(total=len(pairs), desc="tokenize", unit="q", disable=not progress)
    for c in range(0, len(pairs), chunk):
        part = pairs[c : c + chunk]
        enc = tokenize_windows(tokenizer, [p.question for p in part], [p.context for p in part], max_length, stride)
        for w in range(len(enc["input_ids"])):
            pair = part[enc["overflow_to_sample_mapping"][w]]
            seq = enc.sequence_ids(w)
            offsets = enc["offset_mapping"][w]
            ctx = [i for i, sid in enumerate(seq) if sid == 1]
            s_tok = e_tok = 0
            kind = pair.kind
            if pair.label is not None:
                s_char = pair.label[1]
                e_char = s_char + len(pair.label[0])
                if ctx and offsets[ctx[0]][0] <= s_char and offsets[ctx[-1]][1] >= e_char:
                    s_tok = next(i for i in ctx if offsets[i][1] > s_char)
                    e_tok = next(i for i in reversed(ctx) if offsets[i][0] < e_char)
                else:
                    kind = KIND_MISSED
            row = enc["input_ids"][w]
            ids.append(np.asarray(row, dtype=id_dtype))
            lengths.append(len(row))
            # The second segment starts after the question's [SEP] (the first None after the question).
            first_q = next((i for i, sid in enumerate(seq) if sid == 0), 0)
            type_start.append(next((i for i in range(first_q, len(seq)) if seq[i] is None), len(seq)) + 1)
            starts.append(s_tok)
            ends.append(e_tok)
            kinds.append(kind)
        bar.update(len(part))
    bar.close()
    return Features(
        ids=np.concatenate(ids) if ids else np.zeros(0, dtype=id_dtype),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        type_start=np.asarray(type_start, dtype=np.int16),
        start=np.asarray(starts, dtype=np.int16),
        end=np.asarray(ends, dtype=np.int16),
        kind=np.asarray(kinds, dtype=np.int8),
    )


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


def load_training_data(cfg: TrainConfig) -> tuple[list[SquadExample], list[SquadExample]]:
    """Training and validation questions from every --data file, split by article title."""
    if not cfg.data:
        raise InputError("no --data file given; pass a SQuAD v2.0 JSON file")
    examples: list[SquadExample] = []
    seen_titles: dict[str, str] = {}
    for path in cfg.data:
        part = load_squad(path)
        for title in {e.title for e in part}:
            if title in seen_titles and seen_titles[title] != path:
                raise InputError(
                    f"article {title!r} is in both {seen_titles[title]} and {path}; pass each article once"
                )
            seen_titles[title] = path
        examples.extend(part)
    val_titles = set(cfg.val_articles)
    missing = val_titles - set(seen_titles)
    if missing:
        raise InputError(
            f"validation articles not in {', '.join(cfg.data)}: {', '.join(sorted(missing))}; "
            "pass titles from the files"
        )
    train = [e for e in examples if e.title not in val_titles]
    val = [e for e in examples if e.title in val_titles]
    rng = random.Random(cfg.seed)
    if cfg.max_train_questions is not None:
        train = rng.sample(train, min(cfg.max_train_questions, len(train)))
    if cfg.max_val_questions is not None:
        val = rng.sample(val, min(cfg.max_val_questions, len(val)))
    if not train or not val:
        raise InputError("no training or validation questions left; check --val-articles and the data files")
    return train, val


def validate(reader: Reader, val: Sequence[SquadExample], progress: bool) -> dict[str, Any]:
    preds = predict_spans(reader, val, progress=progress)
    threshold, _ = best_threshold(val, preds)
    calib_a, calib_b = fit_calibration(val, preds)
    metrics = evaluate_predictions(val, apply_threshold(preds, threshold))
    return {"null_threshold": threshold, "calib_a": calib_a, "calib_b": calib_b, "metrics": metrics}


@dataclass
class Plan:
    """The learning-rate schedule: linear warm-up, then linear decay to zero at `total` steps."""

    total: int
    warmup: int
    fixed: bool = False  # warm-up length is set once, from the first measured plan

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / max(self.warmup, 1)
        return max(0.0, (self.total - step) / max(self.total - self.warmup, 1))


def features_key(cfg: TrainConfig, tokenizer_name: str) -> str:
    """What the cached features depend on; a different key means tokenize again."""
    files = []
    for path in cfg.data:
        st = Path(path).stat()
        files.append([str(Path(path).resolve()), st.st_size, int(st.st_mtime)])
    parts = [
        files,
        tokenizer_name,
        cfg.max_length,
        cfg.stride,
        cfg.negatives,
        cfg.seed,
        cfg.max_train_questions,
        sorted(cfg.val_articles),
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


def _config_from_state(state: dict[str, Any], output_dir: str) -> TrainConfig:
    raw = dict(state["config"])
    raw["output_dir"] = output_dir
    raw["data"] = tuple(raw["data"])
    raw["val_articles"] = tuple(raw["val_articles"])
    known = {k: v for k, v in raw.items() if k in TrainConfig.__dataclass_fields__}
    return TrainConfig(**known)


def read_checkpoint_state(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT_DIR / "state.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"no checkpoint in {run_dir} ({path} is missing); pass the --output-dir of a run") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"checkpoint state {path} is unreadable ({exc}); start a new run instead") from exc


def train_reader(cfg: TrainConfig, progress: bool = True, resume: str | None = None) -> dict[str, Any]:
    """Train, validate after every epoch and at the end, and keep the best in cfg.output_dir (float16).

    With `resume`, the run in that folder continues from its last checkpoint with its own settings.
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from qa.models import cpu_has_bf16, resolve_base_encoder, resolve_reader_model

    state: dict[str, Any] | None = None
    if resume is not None:
        state = read_checkpoint_state(resume)
        cfg = _config_from_state(state, str(resume))
    out_dir = Path(cfg.output_dir)
    ckpt_dir = out_dir / CHECKPOINT_DIR

    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)
    train, val = load_training_data(cfg)
    if state is not None:
        source = str(ckpt_dir)
    elif cfg.base_model and Path(cfg.base_model).is_dir() and (Path(cfg.base_model) / READER_CONFIG).is_file():
        source = cfg.base_model  # a trained reader (e.g. qa/models/reader): continue from it
    elif cfg.base_model == "shipped":
        source = resolve_reader_model("shipped")
    else:
        source = resolve_base_encoder(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    attn = {"attn_implementation": "eager"} if cfg.eager_attention else {}
    # Dropout on the attention probabilities was a third of a CPU step (bernoulli over a
    # batch x heads x length^2 tensor); hidden dropout stays. Frozen word embeddings skip a
    # 30k x 384 gradient and its AdamW update (another ~10%); fine-tuning barely moves them.
    model = AutoModelForQuestionAnswering.from_pretrained(
        source, dtype=torch.float32, attention_probs_dropout_prob=cfg.attention_dropout, **attn
    )
    if cfg.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    use_bf16 = cfg.bf16
    if use_bf16 is None:
        use_bf16 = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_has_bf16()
    with_types = "token_type_ids" in tokenizer.model_input_names
    pad_id = tokenizer.pad_token_id or 0

    out_dir.mkdir(parents=True, exist_ok=True)
    key = features_key(cfg, str(getattr(tokenizer, "name_or_path", "")) if state is None else state["tokenizer"])
    feats = Features.load(out_dir / FEATURES_FILE, key)
    if feats is None:
        pairs = training_pairs(train, cfg.negatives, random.Random(cfg.seed))
        feats = build_features(tokenizer, pairs, cfg.max_length, cfg.stride, progress)
        del pairs
        feats.save(out_dir / FEATURES_FILE, key)
    lengths = feats.lengths.tolist()
    mix = collections.Counter(feats.kind.tolist())

    steps_per_epoch = math.ceil(len(feats) / cfg.batch_size)
    max_total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    if cfg.max_steps is not None:
        max_total = min(max_total, cfg.max_steps)
    n_epochs = math.ceil(max_total / steps_per_epoch)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if not n.endswith(no_decay)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in trainable if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, foreach=True)
    plan = Plan(total=max_total, warmup=max(1, int(cfg.warmup * max_total)))
    step, epoch, position, spent = 0, 1, 0, 0.0
    best: dict[str, Any] | None = None
    if state is not None:
        optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", map_location=device, weights_only=True))
        plan = Plan(**state["plan"])
        step, epoch, position, spent = state["step"], state["epoch"], state["position"], state["seconds"]
        best = state.get("best")
        random.setstate(_tuple_state(state["python_rng"]))
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    settings = ReaderSettings(max_length=cfg.max_length, stride=cfg.stride)
    log_path = out_dir / LOG_FILE
    budget_s = cfg.time_budget * 60 if cfg.time_budget else None
    val_seconds = max(20.0, len(val) / 25)  # first guess; replaced by the measured time
    print(
        f"train-reader: {len(train)} training questions -> {len(feats)} windows "
        f"({mix[KIND_ANSWER]} with the answer, {mix[KIND_UNANSWERABLE]} unanswerable, "
        f"{mix[KIND_OTHER_PARAGRAPH]} other-paragraph negatives, {mix[KIND_MISSED]} windows missing the answer); "
        f"{len(val)} validation questions; up to {max_total} steps of {cfg.batch_size} on {device}"
        f"{' with bf16 autocast' if use_bf16 else ''}{f', budget {cfg.time_budget:g} min' if budget_s else ''}"
        f"{f'; resuming at step {step}' if state else ''}",
        file=sys.stderr,
    )

    def run_validation(epoch_done: float) -> None:
        nonlocal best, val_seconds
        t0 = time.time()
        model.eval()
        reader = Reader.from_model(model, tokenizer, settings, device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=use_bf16):
            result = validate(reader, val, progress)
        model.train()
        val_seconds = time.time() - t0
        result.update(epoch=round(epoch_done, 3), step=step, minutes=round((spent + time.time() - t_start) / 60, 1))
        _log(log_path, {"event": "validation", **result})
        m = result["metrics"]
        print(
            f"step {step} (epoch {epoch_done:.2f}): validation EM {m['exact']:.2f} F1 {m['f1']:.2f} "
            f"(HasAns F1 {m.get('HasAns_f1', float('nan')):.2f}, NoAns {m.get('NoAns_f1', float('nan')):.2f}), "
            f"null threshold {result['null_threshold']:.3f}",
            file=sys.stderr,
        )
        if best is None or m["f1"] > best["metrics"]["f1"]:
            best = result
            save_reader(model, tokenizer, out_dir, settings, result, cfg)

    def save_checkpoint() -> None:
        tmp = out_dir / (CHECKPOINT_DIR + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        record = {
            "step": step,
            "epoch": epoch,
            "position": position,
            "seconds": spent + time.time() - t_start,
            "plan": asdict(plan),
            "best": best,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
            "tokenizer": state["tokenizer"] if state else str(getattr(tokenizer, "name_or_path", "")),
            "python_rng": random.getstate(),
            "torch_rng": torch.get_rng_state().tolist(),
        }
        (tmp / "state.json").write_text(json.dumps(record), encoding="utf-8")
        old = out_dir / (CHECKPOINT_DIR + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if ckpt_dir.exists():
            ckpt_dir.rename(old)
        tmp.rename(ckpt_dir)
        shutil.rmtree(old, ignore_errors=True)

    def replan(rate: float) -> None:
        """Fit the remaining steps into the budget at the measured seconds per step."""
        if budget_s is None:
            return
        validations_left = (n_epochs - epoch) + 1
        left = budget_s - (spent + time.time() - t_start) - validations_left * val_seconds - 30
        total = min(max_total, step + max(1, int(left / rate)))
        if not plan.fixed:
            plan.warmup = max(1, min(plan.warmup, int(cfg.warmup * total)))
            plan.fixed = True
        plan.total = max(total, plan.warmup + 1, step + 1)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: plan.factor(s), last_epoch=-1)
    if step:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * plan.factor(step)
        scheduler.last_epoch = step
    model.train()
    t_start = time.time()
    last_ckpt = time.time()
    window_t, window_steps, window_items = time.time(), 0, 0
    ema: float | None = None
    rate: float | None = None
    done = step >= plan.total
    try:
        while not done and epoch <= n_epochs:
            batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch)
            bar = tqdm(total=len(batches), initial=position, desc=f"epoch {epoch}/{n_epochs}", unit="batch")
            bar.disable = not progress
            while position < len(batches):
                idx = batches[position]
                batch = {k: v.to(device) for k, v in feats.batch(idx, pad_id, with_types).items()}
                with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=use_bf16):
                    loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0, foreach=True)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                position += 1
                window_steps += 1
                window_items += len(idx)
                value = float(loss.detach())
                ema = value if ema is None else 0.98 * ema + 0.02 * value
                bar.update(1)
                if window_steps == 3 and rate is None:  # a first plan early, refined every 25 steps
                    replan((time.time() - window_t) / window_steps)
                if window_steps == 25:
                    elapsed = time.time() - window_t
                    qps = window_items / elapsed
                    # A smoothed step time, so a burst of other work on the machine does not swing the plan.
                    rate = elapsed / window_steps if rate is None else 0.7 * rate + 0.3 * elapsed / window_steps
                    replan(rate)
                    bar.set_postfix(loss=f"{ema:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}", qps=f"{qps:.1f}")
                    _log(
                        log_path,
                        {
                            "event": "train",
                            "step": step,
                            "epoch": round(step / steps_per_epoch, 3),
                            "loss": round(ema, 4),
                            "lr": scheduler.get_last_lr()[0],
                            "questions_per_s": round(qps, 2),
                            "seconds_per_step": round(elapsed / window_steps, 4),
                            "planned_steps": plan.total,
                            "minutes": round((spent + time.time() - t_start) / 60, 2),
                        },
                    )
                    window_t, window_steps, window_items = time.time(), 0, 0
                if time.time() - last_ckpt >= cfg.checkpoint_minutes * 60:
                    save_checkpoint()
                    last_ckpt = time.time()
                if step >= plan.total:
                    done = True
                    break
            bar.close()
            if not done:
                run_validation(step / steps_per_epoch)
                epoch += 1
                position = 0
                save_checkpoint()
                last_ckpt = time.time()
                window_t, window_steps, window_items = time.time(), 0, 0  # validation is not training time
    except KeyboardInterrupt:
        # Ctrl+C or a stop at the end of a session: keep the work, say how to go on.
        save_checkpoint()
        print(
            f"train-reader: interrupted at step {step}; checkpoint saved. Continue with: "
            f"qa train-reader --resume {out_dir}",
            file=sys.stderr,
        )
        raise
    if best is None or best.get("step") != step:
        run_validation(step / steps_per_epoch)
    save_checkpoint()
    assert best is not None
    return calibrate_saved_reader(out_dir, val, progress) or best


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
    m = result["metrics"]
    print(
        f"saved reader ({reader.dtype}): validation EM {m['exact']:.2f} F1 {m['f1']:.2f} "
        f"(HasAns F1 {m.get('HasAns_f1', float('nan')):.2f}, NoAns {m.get('NoAns_f1', float('nan')):.2f}), "
        f"null threshold {result['null_threshold']:.3f}",
        file=sys.stderr,
    )
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


def _tuple_state(raw: Any) -> Any:
    """random.getstate() after a JSON round trip (lists back to tuples)."""
    return tuple(_tuple_state(x) for x in raw) if isinstance(raw, list) else raw


def save_reader(
    model: Any, tokenizer: Any, out_dir: Path, settings: ReaderSettings, result: dict, cfg: TrainConfig
) -> None:
    """Write float16 safetensors, tokenizer and qa_reader.json; the settings file goes last."""
    import torch

    half = copy.deepcopy(model).to("cpu", dtype=torch.float16)
    half.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    chosen = ReaderSettings(
        max_length=settings.max_length,
        stride=settings.stride,
        max_answer_tokens=settings.max_answer_tokens,
        null_threshold=result["null_threshold"],
        calib_a=result["calib_a"],
        calib_b=result["calib_b"],
    )
    info = asdict(chosen) | {
        "validation": {
            "articles": list(cfg.val_articles),
            "epoch": result["epoch"],
            "step": result.get("step"),
            **result["metrics"],
        },
        "training": {k: v for k, v in asdict(cfg).items() if k not in {"command"}}
        | {"val_articles": list(cfg.val_articles), "data": list(cfg.data)},
        "command": cfg.command,
    }
    atomic_write_text(out_dir / READER_CONFIG, json.dumps(info, indent=2) + "\n", "--output-dir")


def predict_with_other_paragraphs(
    reader: Reader, val: Sequence[SquadExample], others: int = 2, seed: int = 0, progress: bool = True
) -> list[Any]:
    """Each validation question read as the assistant reads it: its own paragraph plus `others`
    other paragraphs of the same article, the best span over all of them (SquadPrediction list).

    The assistant reads 3 retrieved chunks and answers with the best span among them, so the
    null threshold that fits it is the one chosen on this, not on the lone gold paragraph.
    """
    import math

    from qa.squad import SquadPrediction

    rng = random.Random(seed)
    by_title: dict[str, list[str]] = collections.defaultdict(list)
    for ex in val:
        if ex.context not in by_title[ex.title]:
            by_title[ex.title].append(ex.context)
    questions, contexts, owner = [], [], []
    for n, ex in enumerate(val):
        pool = [c for c in by_title[ex.title] if c != ex.context]
        for ctx in [ex.context, *rng.sample(pool, min(others, len(pool)))]:
            questions.append(ex.question)
            contexts.append(ctx)
            owner.append(n)
    best: list[tuple[float, str]] = [(-math.inf, "")] * len(val)
    step = 192
    for i in range(0, len(questions), step):
        spans = reader.read(questions[i : i + step], contexts[i : i + step], n_best=1)
        for j, found in enumerate(spans, i):
            if found and found[0].gap > best[owner[j]][0]:
                best[owner[j]] = (found[0].gap, contexts[j][found[0].start : found[0].end])
    return [SquadPrediction(ex.id, text, gap) for ex, (gap, text) in zip(val, best, strict=True)]

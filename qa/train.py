"""Fine-tune an extractive QA reader on SQuAD v2.0-format data (`qa train-reader`).

Standard SQuAD preprocessing: question + context in stride windows; the answer is mapped to
token positions through the fast tokenizer's offsets; windows that miss the answer and
unanswerable questions point at position 0 (CLS). Validation articles are split off by
article, never trained on, and used to pick the best epoch, the null threshold and the score
calibration, all saved with the model in qa_reader.json.
"""

from __future__ import annotations

import collections
import copy
import json
import math
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qa.errors import InputError
from qa.reader import READER_CONFIG, Reader, ReaderSettings, batches_by_length, pad_batch, tokenize_windows
from qa.squad import (
    SquadExample,
    apply_threshold,
    best_threshold,
    evaluate_predictions,
    fit_calibration,
    load_squad,
    predict_spans,
)

# Held out by article: a mix of articles with and without unanswerable questions (about 11%
# of the shared file's questions, 38% of them unanswerable).
VALIDATION_ARTICLES = ("Economic_inequality", "Rhine", "Harvard_University", "Kenya")


@dataclass
class TrainConfig:
    data: str
    output_dir: str
    base_model: str | None = None
    epochs: int = 3
    learning_rate: float = 1e-4
    batch_size: int = 16
    max_length: int = 384
    stride: int = 128
    seed: int = 42
    warmup: float = 0.1
    weight_decay: float = 0.01
    bf16: bool | None = None  # None: use bf16 autocast where the hardware has it
    val_articles: Sequence[str] = VALIDATION_ARTICLES
    max_steps: int | None = None  # stop early (tests, smoke runs)
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


def training_features(
    tokenizer: Any, examples: Sequence[SquadExample], max_length: int, stride: int
) -> dict[str, list]:
    enc = tokenize_windows(tokenizer, [e.question for e in examples], [e.context for e in examples], max_length, stride)
    starts, ends = [], []
    for w in range(len(enc["input_ids"])):
        ex = examples[enc["overflow_to_sample_mapping"][w]]
        label = majority_answer(ex)
        seq = enc.sequence_ids(w)
        offsets = enc["offset_mapping"][w]
        s_tok = e_tok = 0
        if label is not None:
            s_char = label[1]
            e_char = s_char + len(label[0])
            ctx = [i for i, sid in enumerate(seq) if sid == 1]
            if ctx and offsets[ctx[0]][0] <= s_char and offsets[ctx[-1]][1] >= e_char:
                s_tok = next(i for i in ctx if offsets[i][1] > s_char)
                e_tok = next(i for i in reversed(ctx) if offsets[i][0] < e_char)
        starts.append(s_tok)
        ends.append(e_tok)
    features = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    features["start_positions"] = starts
    features["end_positions"] = ends
    return features


def shuffled_length_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Random batches of similar length: shuffle, sort within pools of 50 batches, shuffle batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for i in range(0, len(order), pool):
        part = order[i : i + pool]
        sub = batches_by_length([lengths[j] for j in part], batch_size)
        batches.extend([[part[j] for j in b] for b in sub])
    rng.shuffle(batches)
    return batches


def split_examples(cfg: TrainConfig) -> tuple[list[SquadExample], list[SquadExample]]:
    examples = load_squad(cfg.data)
    val_titles = set(cfg.val_articles)
    titles = {e.title for e in examples}
    missing = val_titles - titles
    if missing:
        raise InputError(
            f"validation articles not in {cfg.data}: {', '.join(sorted(missing))}; pass titles from the file"
        )
    train = [e for e in examples if e.title not in val_titles]
    val = [e for e in examples if e.title in val_titles]
    rng = random.Random(cfg.seed)
    if cfg.max_train_questions is not None:
        train = rng.sample(train, min(cfg.max_train_questions, len(train)))
    if cfg.max_val_questions is not None:
        val = rng.sample(val, min(cfg.max_val_questions, len(val)))
    if not train or not val:
        raise InputError("no training or validation questions left; check --val-articles and the data file")
    return train, val


def validate(reader: Reader, val: Sequence[SquadExample], progress: bool) -> dict[str, Any]:
    preds = predict_spans(reader, val, progress=progress)
    threshold, _ = best_threshold(val, preds)
    calib_a, calib_b = fit_calibration(val, preds)
    metrics = evaluate_predictions(val, apply_threshold(preds, threshold))
    return {"null_threshold": threshold, "calib_a": calib_a, "calib_b": calib_b, "metrics": metrics}


def train_reader(cfg: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train, validate after every epoch, and keep the best epoch in cfg.output_dir (float16)."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, get_linear_schedule_with_warmup

    from qa.models import cpu_has_bf16, resolve_base_encoder

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    train, val = split_examples(cfg)
    base = resolve_base_encoder(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
    model = AutoModelForQuestionAnswering.from_pretrained(base, dtype=torch.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    use_bf16 = cfg.bf16
    if use_bf16 is None:
        use_bf16 = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_has_bf16()

    feats = training_features(tokenizer, train, cfg.max_length, cfg.stride)
    lengths = [len(ids) for ids in feats["input_ids"]]
    steps_per_epoch = math.ceil(len(lengths) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
            "weight_decay": cfg.weight_decay,
        },
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup * total_steps), total_steps)
    settings = ReaderSettings(max_length=cfg.max_length, stride=cfg.stride)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "training_log.jsonl"
    rng = random.Random(cfg.seed)
    print(
        f"train-reader: {len(train)} training questions ({len(lengths)} windows), {len(val)} validation "
        f"questions, {total_steps} steps on {device}{' with bf16 autocast' if use_bf16 else ''}",
        file=sys.stderr,
    )

    best: dict[str, Any] | None = None
    step = 0
    started = time.time()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        batches = shuffled_length_batches(lengths, cfg.batch_size, rng)
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", disable=not progress)
        ema = None
        for idx in bar:
            batch = pad_batch(feats, idx, tokenizer.pad_token_id or 0)
            batch["start_positions"] = torch.tensor([feats["start_positions"][i] for i in idx])
            batch["end_positions"] = torch.tensor([feats["end_positions"][i] for i in idx])
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=use_bf16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            value = loss.item()
            ema = value if ema is None else 0.98 * ema + 0.02 * value
            bar.set_postfix(loss=f"{ema:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
            if step >= total_steps:
                break
        bar.close()
        model.eval()
        reader = Reader.from_model(model, tokenizer, settings, device)
        result = validate(reader, val, progress)
        result.update(epoch=epoch, step=step, minutes=round((time.time() - started) / 60, 1))
        with log_path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(result) + "\n")
        m = result["metrics"]
        print(
            f"epoch {epoch}: validation EM {m['exact']:.2f} F1 {m['f1']:.2f} "
            f"(HasAns F1 {m.get('HasAns_f1', float('nan')):.2f}, NoAns {m.get('NoAns_f1', float('nan')):.2f}), "
            f"null threshold {result['null_threshold']:.3f}",
            file=sys.stderr,
        )
        if best is None or m["f1"] > best["metrics"]["f1"]:
            best = result
            save_reader(model, tokenizer, out_dir, settings, result, cfg)
        if step >= total_steps:
            break
    assert best is not None
    return best


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
        "validation": {"articles": list(cfg.val_articles), "epoch": result["epoch"], **result["metrics"]},
        "training": {k: v for k, v in asdict(cfg).items() if k not in {"command"}}
        | {"val_articles": list(cfg.val_articles)},
        "command": cfg.command,
    }
    tmp = out_dir / (READER_CONFIG + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / READER_CONFIG)

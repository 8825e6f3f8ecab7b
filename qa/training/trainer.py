"""The training loop: a `Trainer` over an explicit `RunState` (what a checkpoint saves) and a `Clock`
(this process's timing: the budget plan, when to log and checkpoint)."""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import InputError
from qa.reader import READER_CONFIG, Reader, ReaderSettings
from qa.training.checkpoints import (
    CHECKPOINT_DIR,
    LOG_FILE,
    append_log,
    load_optimizer_state,
    read_checkpoint_state,
    save_reader,
    tuple_state,
    write_checkpoint,
)
from qa.training.config import TrainConfig
from qa.training.data import KIND_ANSWER, KIND_MISSED, KIND_OTHER_PARAGRAPH, KIND_UNANSWERABLE, load_training_data
from qa.training.features import Features, cached_features, epoch_batches, tokenizer_fingerprint
from qa.training.schedule import Plan
from qa.training.validation import calibrate_saved_reader, describe, validate


def train_reader(
    cfg: TrainConfig, progress: bool = True, resume: str | None = None, stop_after: float | None = None
) -> dict[str, Any]:
    """Train, validate after every epoch and at the end, and keep the best in cfg.output_dir (float16).

    With `resume`, the run in that folder continues from its last checkpoint with its own settings.
    With `stop_after` (minutes), this stage ends after that long: it validates, checkpoints and
    returns with the schedule untouched, for `--resume` to continue on this or another machine.
    """
    return Trainer(cfg, progress, resume, stop_after).run()


def release_free_memory() -> None:
    """Hand glibc's freed heap pages back to the system.

    Windows of varying length make torch allocate blocks of ever-new sizes; glibc keeps the freed
    ones in fragmented arenas, and a CPU run grew ~0.3 GB a minute until the kernel killed it at
    24 GB. malloc_trim costs milliseconds; elsewhere (musl, macOS) there is nothing to do.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


# On a CPU a forward pass holds ~1.5 MB of activations a token for a base-size encoder under bf16
# autocast: 32 windows of 384 tokens peaked at 22.7 GB and the kernel killed the run on a 24 GB machine.
MICRO_BATCH_TOKENS = 4096


def micro_batches(rows: int, length: int, device: str) -> list[slice]:
    """The batch's rows in near-equal parts of at most MICRO_BATCH_TOKENS tokens each (CPU only; a GPU
    reads the batch whole). Every part keeps the whole batch's padding, so it reads the same tensors."""
    parts = 1 if device != "cpu" else math.ceil(rows / max(1, MICRO_BATCH_TOKENS // max(length, 1)))
    bounds = [round(i * rows / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


@dataclass
class RunState:
    """Where the run stands: what a checkpoint saves and `--resume` restores."""

    plan: Plan
    step: int = 0
    epoch: int = 1
    position: int = 0  # batches done in the current epoch
    seconds: float = 0.0  # training time spent by earlier sessions of this run
    best: dict[str, Any] | None = None  # the best validation so far; its model is the one saved

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> RunState:
        plan = Plan(**saved["plan"])
        return cls(plan, saved["step"], saved["epoch"], saved["position"], saved["seconds"], saved.get("best"))


@dataclass
class Clock:
    """This session's timing. A window is the steps since the last training log record."""

    val_seconds: float  # how long a validation takes (a guess until one is measured)
    started: float = field(default_factory=time.time)
    last_checkpoint: float = field(default_factory=time.time)
    window_start: float = field(default_factory=time.time)
    window_steps: int = 0
    window_items: int = 0
    ema: float | None = None  # the smoothed loss
    rate: float | None = None  # smoothed seconds per step

    def spent(self, run: RunState) -> float:
        """Seconds of the whole run so far, earlier sessions included."""
        return run.seconds + time.time() - self.started

    def new_window(self) -> None:
        self.window_start, self.window_steps, self.window_items = time.time(), 0, 0


def model_source(cfg: TrainConfig, checkpoint: Path | None) -> str:
    """Where the weights start from: the checkpoint, a trained reader, the shipped one, or an encoder.

    A LoRA run always starts from its base encoder; its checkpoint holds only the adapters."""
    from qa.loading import resolve_base_encoder, resolve_reader_model

    if checkpoint is not None and not cfg.lora_rank:
        return str(checkpoint)
    if cfg.base_model and Path(cfg.base_model).is_dir() and (Path(cfg.base_model) / READER_CONFIG).is_file():
        return cfg.base_model  # a trained reader (e.g. qa/models/reader): continue from it
    if cfg.base_model == "shipped":
        return resolve_reader_model("shipped")
    return resolve_base_encoder(cfg.base_model)


def load_model(cfg: TrainConfig, source: str, adapters: Path | None = None) -> tuple[Any, Any]:
    """The tokenizer and the float32 QA model to train (LoRA-wrapped when asked), set up for speed on a CPU."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

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
    if cfg.lora_rank:
        model = with_lora(model, cfg, adapters)
    return tokenizer, model


def with_lora(model: Any, cfg: TrainConfig, adapters: Path | None) -> Any:
    """LoRA adapters on every linear layer of the encoder and the QA head trained whole; `adapters`:
    a checkpoint's, to continue."""
    import torch

    from qa.base_models import MPNET_ID, is_mpnet

    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError:
        raise InputError("--lora-rank trains with peft: pip install peft (or reinstall article-qa)") from None

    if adapters is not None:
        return PeftModel.from_pretrained(model, str(adapters), is_trainable=True)
    head = "qa_outputs"
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank,
        lora_dropout=cfg.lora_dropout,
        target_modules=sorted(linear - {head}),
        modules_to_save=[head],
    )
    wrapped = get_peft_model(model, config)
    # The base by its name, not this machine's path, so the adapters load wherever the base is.
    wrapped.peft_config["default"].base_model_name_or_path = MPNET_ID if is_mpnet(cfg.base_model) else cfg.base_model
    return wrapped


def make_optimizer(model: Any, cfg: TrainConfig) -> tuple[list[Any], Any]:
    """The trainable parameters and AdamW over them (no weight decay on biases and norms)."""
    import torch

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if not n.endswith(no_decay)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in trainable if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    return [p for _, p in trainable], torch.optim.AdamW(groups, lr=cfg.learning_rate, foreach=True)


class Trainer:
    """One training run (new, or resumed from its checkpoint): set up at construction, run by `run`."""

    def __init__(
        self, cfg: TrainConfig, progress: bool = True, resume: str | None = None, stop_after: float | None = None
    ) -> None:
        import torch

        saved = read_checkpoint_state(resume) if resume is not None else None
        if saved is not None:
            cfg = TrainConfig.from_json(saved["config"], str(resume))
        self.cfg, self.progress = cfg, progress
        self.out_dir = Path(cfg.output_dir)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)
        self.train, self.val = load_training_data(cfg)
        self._load_model(saved)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.features: Features = cached_features(cfg, self.tokenizer, self.tokenizer_name, self.train, progress)
        self.lengths = self.features.lengths.tolist()
        self.steps_per_epoch = math.ceil(len(self.features) / cfg.batch_size)
        self.max_total = max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        if cfg.max_steps is not None:
            self.max_total = min(self.max_total, cfg.max_steps)
        self.n_epochs = math.ceil(self.max_total / self.steps_per_epoch)
        self.trainable, self.optimizer = make_optimizer(self.model, cfg)
        self.state = RunState(Plan(total=self.max_total, warmup=max(1, int(cfg.warmup * self.max_total))))
        if saved is not None:
            self._restore(saved)
        self.settings = ReaderSettings(max_length=cfg.max_length, stride=cfg.stride)
        self.log_path = self.out_dir / LOG_FILE
        # A resumed run keeps the schedule it planned: refitting a budget planned on a fast machine
        # at a slow machine's step time would decay the learning rate to zero within a few steps.
        self.budget_s = cfg.time_budget * 60 if cfg.time_budget and saved is None else None
        self.stop_after_s = stop_after * 60 if stop_after else None
        print(self._announcement(resumed=saved is not None), file=sys.stderr)

    def _load_model(self, saved: dict[str, Any] | None) -> None:
        import torch

        from qa.loading import cpu_has_bf16

        checkpoint = self.out_dir / CHECKPOINT_DIR if saved is not None else None
        adapters = checkpoint if self.cfg.lora_rank else None
        self.tokenizer, self.model = load_model(self.cfg, model_source(self.cfg, checkpoint), adapters)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        use_bf16 = self.cfg.bf16
        if use_bf16 is None:
            use_bf16 = torch.cuda.is_bf16_supported() if self.device == "cuda" else cpu_has_bf16()
        self.use_bf16 = use_bf16
        self.with_types = "token_type_ids" in self.tokenizer.model_input_names
        self.pad_id = self.tokenizer.pad_token_id or 0
        # The features' cache key: the tokenizer's content, not the path it was loaded from, so
        # features built on one machine serve a run on another.
        self.tokenizer_name: str = saved["tokenizer"] if saved is not None else tokenizer_fingerprint(self.tokenizer)

    def _restore(self, saved: dict[str, Any]) -> None:
        """Continue where the checkpoint stopped: optimizer, schedule, position, best, random state."""
        import torch

        load_optimizer_state(self.out_dir, self.optimizer, self.device)
        self.state = RunState.from_checkpoint(saved)
        random.setstate(tuple_state(saved["python_rng"]))
        torch.set_rng_state(torch.tensor(saved["torch_rng"], dtype=torch.uint8))

    def _announcement(self, resumed: bool) -> str:
        cfg, mix = self.cfg, collections.Counter(self.features.kind.tolist())
        return (
            f"train-reader: {len(self.train)} training questions -> {len(self.features)} windows "
            f"({mix[KIND_ANSWER]} with the answer, {mix[KIND_UNANSWERABLE]} unanswerable, "
            f"{mix[KIND_OTHER_PARAGRAPH]} other-paragraph negatives, {mix[KIND_MISSED]} windows missing the answer); "
            f"{len(self.val)} validation questions; up to {self.max_total} steps of {cfg.batch_size} on {self.device}"
            f"{' with bf16 autocast' if self.use_bf16 else ''}"
            f"{f', budget {cfg.time_budget:g} min' if self.budget_s else ''}"
            f"{f'; resuming at step {self.state.step} of {self.state.plan.total}' if resumed else ''}"
            f"{f'; this stage stops after {self.stop_after_s / 60:g} min' if self.stop_after_s else ''}"
        )

    def run(self) -> dict[str, Any]:
        """Train to the end of the plan, validating after every epoch; returns the best validation."""
        import torch

        s = self.state
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda n: s.plan.factor(n), last_epoch=-1)
        if s.step:
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * s.plan.factor(s.step)
            self.scheduler.last_epoch = s.step
        self.model.train()
        self.clock = Clock(val_seconds=max(20.0, len(self.val) / 25))  # a guess until a validation is timed
        done = s.step >= s.plan.total
        try:
            while not done and s.epoch <= self.n_epochs:
                done = self._train_epoch()
                if self._stage_over():
                    break
                if not done:
                    self.run_validation(s.step / self.steps_per_epoch)
                    s.epoch += 1
                    s.position = 0
                    self.save_checkpoint()
                    self.clock.last_checkpoint = time.time()
                    self.clock.new_window()  # validation is not training time
        except KeyboardInterrupt:
            # Ctrl+C or a stop at the end of a session: keep the work, say how to go on.
            self.save_checkpoint()
            print(
                f"train-reader: interrupted at step {s.step}; checkpoint saved. Continue with: "
                f"qa train-reader --resume {self.out_dir}",
                file=sys.stderr,
            )
            raise
        if s.best is None or s.best.get("step") != s.step:
            self.run_validation(s.step / self.steps_per_epoch)
        self.save_checkpoint()
        assert s.best is not None
        if s.step < s.plan.total:
            print(
                f"train-reader: stage stopped at step {s.step} of {s.plan.total}; checkpoint saved. "
                f"Continue with: qa train-reader --resume {self.out_dir}",
                file=sys.stderr,
            )
            return s.best
        if not self.cfg.calibrate:
            return s.best
        return calibrate_saved_reader(self.out_dir, self.val, self.progress) or s.best

    def _train_epoch(self) -> bool:
        """Train through the rest of the current epoch; True when the planned steps are all done."""
        from tqdm import tqdm

        s = self.state
        batches = epoch_batches(self.lengths, self.cfg.batch_size, self.cfg.seed, s.epoch)

        def end() -> int:
            # The bar ends where this epoch's training does: at the plan's last step when that comes
            # first (a run's last stage stops mid-epoch; a bar to the epoch's end showed hours to go).
            return min(len(batches), s.position + s.plan.total - s.step)

        bar = tqdm(total=end(), initial=s.position, desc=f"epoch {s.epoch}/{self.n_epochs}", unit="batch")
        bar.disable = not self.progress
        done = False
        while s.position < len(batches):
            idx = batches[s.position]
            loss = self._step(idx)
            s.step += 1
            s.position += 1
            self._after_step(len(idx), loss, bar)
            bar.total = end()  # the plan is refitted as the run measures its speed
            if s.step >= s.plan.total:
                done = True
                break
            if self._stage_over():
                break
        bar.close()
        return done

    def _stage_over(self) -> bool:
        return self.stop_after_s is not None and time.time() - self.clock.started >= self.stop_after_s

    def _step(self, idx: list[int]) -> float:
        """One optimizer step on the windows `idx`; returns the loss."""
        import torch

        batch = {k: v.to(self.device) for k, v in self.features.batch(idx, self.pad_id, self.with_types).items()}
        loss = 0.0
        for rows in micro_batches(*batch["input_ids"].shape, self.device):
            with torch.autocast(device_type=self.device, dtype=torch.bfloat16, enabled=self.use_bf16):
                part = self.model(**{k: v[rows] for k, v in batch.items()}).loss
            # The model's loss is a mean over its rows: weighted by their share, the parts' gradients
            # add up to the whole batch's.
            share = (rows.stop - rows.start) / len(idx)
            (part * share).backward()
            loss += float(part.detach()) * share
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0, foreach=True)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device == "cpu":
            release_free_memory()
        return loss

    def _after_step(self, items: int, loss: float, bar: Any) -> None:
        """Smooth the loss, plan against the budget, log every 25 steps, checkpoint every few minutes."""
        c = self.clock
        c.window_steps += 1
        c.window_items += items
        c.ema = loss if c.ema is None else 0.98 * c.ema + 0.02 * loss
        bar.update(1)
        if c.window_steps == 3 and c.rate is None:  # a first plan early, refined every 25 steps
            self.replan((time.time() - c.window_start) / c.window_steps)
        if c.window_steps == 25:
            self._log_window(bar)
            release_free_memory()
        if time.time() - c.last_checkpoint >= self.cfg.checkpoint_minutes * 60:
            self.save_checkpoint()
            c.last_checkpoint = time.time()

    def _log_window(self, bar: Any) -> None:
        s, c = self.state, self.clock
        elapsed = time.time() - c.window_start
        qps = c.window_items / elapsed
        # A smoothed step time, so a burst of other work on the machine does not swing the plan.
        c.rate = elapsed / c.window_steps if c.rate is None else 0.7 * c.rate + 0.3 * elapsed / c.window_steps
        self.replan(c.rate)
        lr = self.scheduler.get_last_lr()[0]
        assert c.ema is not None
        bar.set_postfix(loss=f"{c.ema:.3f}", lr=f"{lr:.1e}", qps=f"{qps:.1f}")
        record = {
            "event": "train",
            "step": s.step,
            "epoch": round(s.step / self.steps_per_epoch, 3),
            "loss": round(c.ema, 4),
            "lr": lr,
            "questions_per_s": round(qps, 2),
            "seconds_per_step": round(elapsed / c.window_steps, 4),
            "planned_steps": s.plan.total,
            "minutes": round(c.spent(s) / 60, 2),
        }
        append_log(self.log_path, record)
        c.new_window()

    def replan(self, rate: float) -> None:
        """Fit the remaining steps into the budget at the measured seconds per step."""
        if self.budget_s is None:
            return
        s = self.state
        validations_left = (self.n_epochs - s.epoch) + 1
        left = self.budget_s - self.clock.spent(s) - validations_left * self.clock.val_seconds - 30
        s.plan.fit(s.step, left, rate, self.max_total, self.cfg.warmup)

    def run_validation(self, epoch_done: float) -> None:
        """Score the model in memory; the best so far is saved as the run's reader."""
        import torch

        s = self.state
        t0 = time.time()
        self.model.eval()
        reader = Reader.from_model(self.model, self.tokenizer, self.settings, self.device)
        with torch.autocast(device_type=self.device, dtype=torch.bfloat16, enabled=self.use_bf16):
            result = validate(reader, self.val, self.progress)
        self.model.train()
        self.clock.val_seconds = time.time() - t0
        result.update(epoch=round(epoch_done, 3), step=s.step, minutes=round(self.clock.spent(s) / 60, 1))
        append_log(self.log_path, {"event": "validation", **result})
        print(f"step {s.step} (epoch {epoch_done:.2f}): {describe(result)}", file=sys.stderr)
        if s.best is None or result["metrics"]["f1"] > s.best["metrics"]["f1"]:
            s.best = result
            save_reader(self.model, self.tokenizer, self.out_dir, self.settings, result, self.cfg)

    def save_checkpoint(self) -> None:
        import torch

        s = self.state
        record = {
            "step": s.step,
            "epoch": s.epoch,
            "position": s.position,
            "seconds": self.clock.spent(s),
            "plan": asdict(s.plan),
            "best": s.best,
            "config": self.cfg.to_json(),
            "tokenizer": self.tokenizer_name,
            "python_rng": random.getstate(),
            "torch_rng": torch.get_rng_state().tolist(),
        }
        write_checkpoint(self.out_dir, self.model, self.tokenizer, self.optimizer, record)

"""What a training run is asked to do: `TrainConfig`, its defaults, and its JSON form in a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qa.reader import ReaderSettings
from qa.settings import PROJECT_ROOT

# Held out by article: a mix of articles with and without unanswerable questions (about 11%
# of squad-train-38.json's questions, 38% of them unanswerable).
VALIDATION_ARTICLES = ("Economic_inequality", "Rhine", "Harvard_University", "Kenya")
# ../shared/ beside the checkout (as in CI), wherever the command is run from.
SHARED_SQUAD = PROJECT_ROOT.parent / "shared" / "data" / "squad"
DEFAULT_DATA = (str(SHARED_SQUAD / "squad-train-442.json"), str(SHARED_SQUAD / "squad-train-38.json"))


@dataclass
class TrainConfig:
    data: Sequence[str] = DEFAULT_DATA
    output_dir: str = "runs/reader"
    base_model: str | None = None
    epochs: float = 2.0
    learning_rate: float = 1e-4  # chosen from pilot runs (model card)
    batch_size: int = 16
    # The windows the reader reads with, by default: it is trained as it will read.
    max_length: int = ReaderSettings.max_length
    stride: int = ReaderSettings.stride
    seed: int = 42
    warmup: float = 0.06
    weight_decay: float = 0.01
    bf16: bool | None = None  # None: use bf16 autocast where the hardware has it
    val_articles: Sequence[str] = VALIDATION_ARTICLES
    # Share of answerable questions also paired with another paragraph of their article (no answer).
    negatives: float = 0.25
    # Each unanswerable question is trained on this many times: SQuAD's crowd-written ones are
    # 3.6% of the windows, and they teach what other-paragraph negatives do not (a paragraph on
    # the topic that still does not say). Off: 4 repeats lost 1.9 deployed-mode F1 in a pilot (model card).
    unanswerable_repeats: int = 1
    time_budget: float | None = None  # minutes for the whole run, validation included
    checkpoint_minutes: float = 10.0
    eager_attention: bool = True
    attention_dropout: float = 0.0
    freeze_word_embeddings: bool = True
    # LoRA adapters of this rank on every linear layer, the QA head trained whole (peft); None: full
    # fine-tune. A base-size encoder then trains a few MB instead of 109M parameters (model card).
    lora_rank: int | None = None
    lora_alpha: float | None = None  # None: twice the rank
    lora_dropout: float = 0.05
    # Calibrate the saved reader through the whole assistant at the end (needs faiss and bm25s;
    # off for a run on a machine that has only the training packages).
    calibrate: bool = True
    max_steps: int | None = None  # stop early (tests, smoke runs, pilots)
    max_train_questions: int | None = None
    max_val_questions: int | None = None
    command: str = ""  # the command line that started the run, recorded with the model (the CLI sets it)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, raw: dict[str, Any], output_dir: str) -> TrainConfig:
        """A checkpoint's config, continued in `output_dir`; keys this version does not know are dropped."""
        values = dict(raw)
        values["output_dir"] = output_dir
        # A stage may continue on another machine: a data file recorded by name (or at a path that
        # machine had) is the shared file of that name here.
        values["data"] = tuple(
            d if Path(d).is_file() or not (SHARED_SQUAD / Path(d).name).is_file() else str(SHARED_SQUAD / Path(d).name)
            for d in values["data"]
        )
        values["val_articles"] = tuple(values["val_articles"])
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

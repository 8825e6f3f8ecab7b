"""What a run keeps on disk: its checkpoint (for `--resume`), its log, and the saved float16 reader.

In the run's output folder: `checkpoint/` (the latest checkpoint: weights, tokenizer,
optimizer.pt, state.json), `training_log.jsonl` (one JSON record per logged window and per
validation), and the best reader so far (float16 safetensors, tokenizer, qa_reader.json).
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from qa.errors import InputError
from qa.files import atomic_write_text
from qa.reader import READER_CONFIG, ReaderSettings
from qa.training.config import TrainConfig

CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "training_log.jsonl"


def read_checkpoint_state(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT_DIR / "state.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"no checkpoint in {run_dir} ({path} is missing); pass the --output-dir of a run") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"checkpoint state {path} is unreadable ({exc}); start a new run instead") from exc


def write_checkpoint(out_dir: Path, model: Any, tokenizer: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """Weights, tokenizer, optimizer and `state` written aside, then swapped in for the previous checkpoint."""
    import torch

    ckpt_dir = out_dir / CHECKPOINT_DIR
    tmp = out_dir / (CHECKPOINT_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # A LoRA model's embeddings are frozen base weights; peft's "auto" would ask the hub, at every
    # checkpoint, whether the vocabulary changed (a warning offline, a wait where no hub answers).
    extra = {"save_embedding_layers": False} if hasattr(model, "peft_config") else {}
    model.save_pretrained(tmp, safe_serialization=True, **extra)
    tokenizer.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
    old = out_dir / (CHECKPOINT_DIR + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if ckpt_dir.exists():
        ckpt_dir.rename(old)
    tmp.rename(ckpt_dir)
    shutil.rmtree(old, ignore_errors=True)


def load_optimizer_state(out_dir: Path, optimizer: Any, device: str) -> None:
    import torch

    path = out_dir / CHECKPOINT_DIR / "optimizer.pt"
    optimizer.load_state_dict(torch.load(path, map_location=device, weights_only=True))


def compact_checkpoint(run_dir: str | Path) -> int:
    """Store the checkpoint's Adam moments in bfloat16 (half the bytes) for committing it; returns the
    bytes saved. A resume casts them back to the parameters' float32; the rounding is far below the
    moments' own noise. The live run keeps float32, so a resumed run equals an uninterrupted one."""
    import torch

    path = Path(run_dir) / CHECKPOINT_DIR / "optimizer.pt"
    if not path.is_file():
        raise InputError(f"no checkpoint in {run_dir} ({path} is missing); pass the --output-dir of a run")
    before = path.stat().st_size
    state = torch.load(path, map_location="cpu", weights_only=True)
    for slots in state["state"].values():
        for key, value in slots.items():
            if key != "step" and torch.is_tensor(value) and value.is_floating_point():
                slots[key] = value.to(torch.bfloat16)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return before - path.stat().st_size


def tuple_state(raw: Any) -> Any:
    """random.getstate() after a JSON round trip (lists back to tuples)."""
    return tuple(tuple_state(x) for x in raw) if isinstance(raw, list) else raw


def append_log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


def save_adapters(model: Any, out_dir: Path) -> None:
    """A LoRA reader's trained part only (adapters and QA head) in float16, and its adapter config:
    a few MB that `qa.base_models` merges onto the base when the reader is loaded."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = get_peft_model_state_dict(model)
    half = {k: v.detach().to("cpu", dtype=torch.float16).contiguous() for k, v in state.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(half, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    model.peft_config["default"].save_pretrained(str(out_dir))


def save_reader(
    model: Any, tokenizer: Any, out_dir: Path, settings: ReaderSettings, result: dict, cfg: TrainConfig
) -> None:
    """Write float16 safetensors, tokenizer and qa_reader.json; the settings file goes last."""
    import torch

    if hasattr(model, "peft_config"):
        save_adapters(model, out_dir)
    else:
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
        # Data files by name: the reader travels, the machine's paths do not.
        | {"val_articles": list(cfg.val_articles), "data": [Path(d).name for d in cfg.data]},
        "command": cfg.command,
    }
    atomic_write_text(out_dir / READER_CONFIG, json.dumps(info, indent=2) + "\n", "--output-dir")

"""Seconds per optimizer step of the reader's training loop: the previous settings against this one's.

One step = 16 windows x 176 tokens, bf16 autocast on CPUs with native bf16, AdamW + clipping, as in
`qa train-reader`. Run on an idle machine (training or tests running beside it slow both):

    python benchmarks/train_step.py --steps 12
"""

from __future__ import annotations

import argparse
import time

CONFIGS = {
    # attention kernel, attention-probability dropout, word embeddings trained?
    "previous (sdpa, attention dropout 0.1, embeddings trained)": ("sdpa", 0.1, True),
    "this version (eager, attention dropout 0, embeddings frozen)": ("eager", 0.0, False),
}


def seconds_per_step(attn: str, attn_dropout: float, train_embeddings: bool, steps: int, length: int) -> float:
    import torch
    from transformers import AutoModelForQuestionAnswering

    from qa.loading import SHIPPED_READERS, cpu_has_bf16

    model = AutoModelForQuestionAnswering.from_pretrained(
        SHIPPED_READERS["v2"], dtype=torch.float32, attn_implementation=attn, attention_probs_dropout_prob=attn_dropout
    )
    model.train()
    if not train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, foreach=True)
    torch.manual_seed(0)
    ids = torch.randint(1000, 2000, (16, length))
    positions = torch.randint(0, length, (16,))
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "start_positions": positions,
        "end_positions": positions,
    }

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_bf16()):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--length", type=int, default=176)
    args = parser.parse_args()
    for name, (attn, dropout, train_embeddings) in CONFIGS.items():
        s = seconds_per_step(attn, dropout, train_embeddings, args.steps, args.length)
        print(f"{name}: {s:.3f} s/step, {16 / s:.1f} questions/s")


if __name__ == "__main__":
    main()

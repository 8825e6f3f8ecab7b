"""The learning-rate plan: linear warm-up, then linear decay to zero, fitted to a time budget."""

from __future__ import annotations

from dataclasses import dataclass


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

    def fit(self, step: int, seconds_left: float, seconds_per_step: float, most: int, warmup_share: float) -> None:
        """Fit the remaining steps into `seconds_left` at the measured seconds per step (never past
        `most` steps), so the schedule reaches zero before the budget ends."""
        total = min(most, step + max(1, int(seconds_left / seconds_per_step)))
        if not self.fixed:
            self.warmup = max(1, min(self.warmup, int(warmup_share * total)))
            self.fixed = True
        self.total = max(total, self.warmup + 1, step + 1)

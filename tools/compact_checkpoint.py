"""Halve a training run's checkpoint before committing it: `python tools/compact_checkpoint.py training/reader-v3`.

The Adam moments go to bfloat16 (qa.training.checkpoints.compact_checkpoint); `qa train-reader --resume`
reads them back into float32. Run it after the stage has stopped, never on a running one.
"""

from __future__ import annotations

import sys

from qa.training.checkpoints import compact_checkpoint

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/compact_checkpoint.py RUN_DIR")
    saved = compact_checkpoint(sys.argv[1])
    print(f"{sys.argv[1]}: optimizer state {saved / 1e6:.1f} MB smaller")

"""The text log of a training run, ``training_log_<start time>.txt``, as nnU-Net v2 keeps one per fold.

Each start of training (the first, and each resumption) opens a new file named by its start time, as nnU-Net does;
every line begins with the time it was written. After a header line that says what is trained, one line per epoch
gives its losses, pseudo Dice per foreground class and their mean, the moving average that picks
``checkpoint_best.pth`` (marked when it improved), the learning rate and the epoch's duration, for example::

    2026-12-06 10:41:07.123456: epoch 3/50 train_loss 0.5179 val_loss 0.4487 pseudo_dice [0.8123, 0.7011] \
mean 0.7567 ema 0.7012 (new best) lr 0.009460 epoch_time 12.41 s

Lines are appended and flushed as they come, so the file can be followed while training runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

LOG_PREFIX = "training_log_"


def training_log_name(started: datetime) -> str:
    """``training_log_2026_12_6_10_41_07.txt``: nnU-Net's name for a log begun at ``started``."""
    return (f"{LOG_PREFIX}{started.year}_{started.month}_{started.day}_{started.hour:02d}_{started.minute:02d}_"
            f"{started.second:02d}.txt")


class TrainingLog:
    """Appends timestamped lines to ``folder/training_log_<started>.txt``."""

    def __init__(self, folder: str | os.PathLike, started: datetime | None = None) -> None:
        self.path = Path(folder) / training_log_name(started or datetime.now())

    def write(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as file:
            file.write(f"{datetime.now().isoformat(sep=' ')}: {text}\n")

    def epoch(self, epoch: int, epochs: int, *, train_loss: float, val_loss: float,
              pseudo_dice: Sequence[float], ema: float, new_best: bool, lr: float, seconds: float) -> None:
        """One finished epoch (``epoch`` counted from 1)."""
        per_class = ", ".join(f"{value:.4f}" for value in pseudo_dice)
        mean = sum(pseudo_dice) / len(pseudo_dice) if len(pseudo_dice) else 0.0
        self.write(f"epoch {epoch}/{epochs} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
                   f"pseudo_dice [{per_class}] mean {mean:.4f} ema {ema:.4f}{' (new best)' if new_best else ''} "
                   f"lr {lr:.6f} epoch_time {seconds:.2f} s")

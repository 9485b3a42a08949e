"""Per-run TensorBoard event files, in the run folder: `tensorboard --logdir <sweep or storage folder>`.

Every epoch writes each scalar metric (test and validation accuracies, loss, learning rate,
distillation weight, timings) and the mean probability the model, and its teacher, put on each
class group (the head bias LTKD corrects) at step = epoch. A resumed run appends a new event file
beside the old ones (TensorBoard reads them together). tensorboardX writes the files: it needs no
TensorFlow and comes with Ray Tune.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from trainables.data.groups import group_names
from trainables.metrics import ACCURACY_METRICS

TENSORBOARD_DIR = "tensorboard"  # inside the run folder
SCALARS = ACCURACY_METRICS + ("train_loss", "lr", "distill_weight", "epoch_seconds", "train_seconds")


class TensorBoardLog:
    """Writes one run's epochs as TensorBoard scalars under `<run folder>/tensorboard/`."""

    def __init__(self, run_dir: str | Path):
        self.folder = Path(run_dir) / TENSORBOARD_DIR
        self._writer = None

    def epoch(self, metrics: dict[str, Any]) -> None:
        from tensorboardX import SummaryWriter

        if self._writer is None:
            self._writer = SummaryWriter(logdir=str(self.folder), flush_secs=10**6)  # flushed every epoch below
        step = int(metrics["epoch"])
        for name in SCALARS:
            value = metrics.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{'val/' if name.startswith('val_') else ''}{name}", float(value), step)
        for key, prefix in (("group_prob", "group_prob"), ("teacher_group_prob", "teacher_group_prob")):
            values = metrics.get(key)
            if values:
                names = group_names(len(values))
                for group, value in zip(names, values):
                    self._writer.add_scalar(f"{prefix}/{group}", float(value), step)
        self._writer.flush()

    def files(self) -> list[str]:
        """The event files, relative to the run folder (what a run on an object store pushes back)."""
        if not self.folder.is_dir():
            return []
        return sorted(f"{TENSORBOARD_DIR}/{path.name}" for path in self.folder.iterdir() if path.is_file())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

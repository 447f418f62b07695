"""How far a training run is: per phase and epoch, with the time it has left.

`train` reports a `TrainingProgress` every few tenths of a second while it trains and once at
the end of each epoch (with that epoch's measures); `progress_line` words one for a person, and
`ProgressPrinter` shows it: a bar redrawn in place on a terminal, a line per epoch elsewhere
(logs, Airflow).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO


@dataclass(frozen=True)
class TrainingProgress:
    phase: str  # what it trains: "head", "fine-tune", "whole network" or "network"
    phase_number: int  # 1-based
    phases: int
    epoch: int  # 1-based over the whole run
    epochs: int
    step: int  # steps done in this epoch
    steps: int  # steps per epoch
    seconds: float  # since training began
    remaining_s: float | None  # estimated from the pace so far (None before the first steps)
    logs: dict[str, float] | None = None  # at the end of an epoch: its measures

    @property
    def done(self) -> float:
        """The share of all training steps done."""
        total = self.epochs * self.steps
        return ((self.epoch - 1) * self.steps + self.step) / total if total else 1.0


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(p: TrainingProgress, *, width: int = 24) -> str:
    """`phase 2/2 whole network  epoch 5/12 [#####.....]  41%  3:12 elapsed, about 4:35 left`,
    then the epoch's accuracies when it has ended."""
    filled = round(width * p.step / p.steps) if p.steps else width
    bar = "#" * filled + "." * (width - filled)
    left = f", about {_clock(p.remaining_s)} left" if p.remaining_s is not None else ""
    line = (
        f"phase {p.phase_number}/{p.phases} {p.phase}  epoch {p.epoch}/{p.epochs} [{bar}] "
        f"{p.done:4.0%}  {_clock(p.seconds)} elapsed{left}"
    )
    if p.logs:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in p.logs.items() if k.endswith("accuracy"))
        line += f"  {shown}" if shown else ""
    return line


class ProgressPrinter:
    """Shows training progress: redrawn in place on a terminal, a line per epoch otherwise."""

    def __init__(self, stream: TextIO | None = None, *, every_s: float = 0.5) -> None:
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s
        self.shown_at = 0.0
        self.drawn = False

    def __call__(self, p: TrainingProgress) -> None:
        if p.logs is not None:  # an epoch ended: its line stays
            self._write(progress_line(p), keep=True)
        elif self.live and time.monotonic() - self.shown_at >= self.every_s:
            self._write(progress_line(p), keep=False)

    def _write(self, line: str, *, keep: bool) -> None:
        self.shown_at = time.monotonic()
        if self.live:
            self.stream.write("\r\x1b[2K" + line + ("\n" if keep else ""))
            self.drawn = not keep
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End a bar left mid-line (an interrupted run), so the next message starts clean."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _named(measure: str, attributes: list[str]) -> str:
    """A one-head network's Keras measures carry no attribute (`val_accuracy`): name it."""
    if len(attributes) != 1 or any(measure.removeprefix("val_").startswith(a) for a in attributes):
        return measure
    prefix = "val_" if measure.startswith("val_") else ""
    return f"{prefix}{attributes[0]}_{measure.removeprefix('val_')}"


class ProgressCallback:
    """The Keras callback behind `TrainingProgress` (made lazily: Keras imports stay in
    functions). One per run; `begin_phase` is called before each phase's `fit`."""

    def __new__(
        cls, report: Callable[[TrainingProgress], None], *, epochs: int, steps: int,
        phases: list[Any], attributes: list[str], every_s: float = 0.3,
    ):  # fmt: skip
        import keras

        class Callback(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.started = time.perf_counter()
                self.phase = phases[0]
                self.number = 1
                self.epoch = 0
                self.reported_at = 0.0

            def begin_phase(self, phase, number: int) -> None:
                self.phase, self.number = phase, number

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                now = time.perf_counter()
                if now - self.reported_at >= every_s:
                    self.reported_at = now
                    report(self.progress(batch + 1))

            def on_epoch_end(self, epoch, logs=None):
                measures = {_named(k, attributes): round(float(v), 4)
                            for k, v in (logs or {}).items()}  # fmt: skip
                report(self.progress(steps, logs=measures))

            def progress(self, step: int, logs=None) -> TrainingProgress:
                seconds = time.perf_counter() - self.started
                done = self.epoch * steps + step
                remaining = seconds / done * (epochs * steps - done) if done else None
                return TrainingProgress(
                    phase=self.phase.name, phase_number=self.number, phases=len(phases),
                    epoch=self.epoch + 1, epochs=epochs,
                    step=step, steps=steps, seconds=seconds, remaining_s=remaining, logs=logs,
                )  # fmt: skip

        return Callback()

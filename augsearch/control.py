"""One training run's strength: the schedule (augsearch/schedule.py) applied to a loader's shared strength.

``train_student`` calls :meth:`StrengthControl.begin_epoch` before each epoch, :meth:`observe` after
each step's loss, and :meth:`end_epoch` after the epoch; the schedule's arithmetic stays in the pure
functions of augsearch/schedule.py, this class only holds a run's state: the current strength, the KD
loss's running mean (kept on the device, so a step costs no host sync) and the strengths of the
epoch's batches. The signal is read (one host sync) only every ``interval`` steps, as StyleGAN2-ADA
reads its overfitting heuristic every ``ada_interval`` steps.
"""

from __future__ import annotations

from functools import partial

import torch

from augsearch.loader import Strength
from augsearch.policy import Policy, build_transform, build_transform_at
from augsearch.schedule import RUNNING_MEAN_DECAY, Schedule, adjust, loss_ratio, strength_at


class StrengthControl:
    """The strength of one run: set per epoch (constant, linear, replay) or moved by the controller
    (adaptive), written into ``knob``, which the loader reads before each batch."""

    def __init__(self, schedule: Schedule, knob: Strength) -> None:
        self.schedule, self.knob = schedule, knob
        self.value = strength_at(schedule, 0, 1)
        self.steps = 0
        self.running: torch.Tensor | None = None  # the KD loss's running mean, on the device
        self._sum, self._count = 0.0, 0
        self.readings = 0  # controller steps taken (signals read)
        self.changes = 0  # strength changes set on the knob: each rebuilds the pipeline once per loader copy
        self.history: list[float] = []  # the mean strength of each epoch ended so far
        self.reached: list[float] = []  # the strength at the end of each epoch (0 or 1: clamped there)

    @property
    def adaptive(self) -> bool:
        return self.schedule.kind == "adaptive"

    def begin_epoch(self, epoch: int, epochs: int, history: list[float]) -> None:
        """Set the epoch's strength. The controller carries its strength across epochs; a run resumed
        from a checkpoint carries on from the mean strength of its last recorded epoch."""
        value = self.value
        if not self.adaptive:
            value = strength_at(self.schedule, epoch, epochs)
        elif epoch > 0 and self.steps == 0 and history:
            value = history[-1]
        self.changes += value != self.value
        self.value = value
        self.knob.set(value)
        self._sum, self._count = 0.0, 0

    def observe(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, kd: torch.Tensor
    ) -> None:
        """After one step on a batch made at the current strength: count it, and every ``interval``
        steps read the signal on this batch and take one controller step (adaptive only). No teacher
        output (no KD term): no signal, the strength holds."""
        self._sum += self.value
        self._count += 1
        if not self.adaptive or teacher_logits is None:
            return
        self.steps += 1
        kd = kd.detach().float()
        previous = self.running
        decay = RUNNING_MEAN_DECAY
        self.running = kd.clone() if previous is None else previous * decay + kd * (1 - decay)
        if self.steps % self.schedule.interval:
            return
        if self.schedule.signal == "agreement":
            signal = (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item()
        else:
            signal = loss_ratio(kd.item(), (previous if previous is not None else kd).item())
        self.readings += 1
        value = adjust(self.value, signal, self.schedule)
        if value != self.value:
            self.changes += 1
            self.value = value
            self.knob.set(value)

    def end_epoch(self) -> float:
        """The mean strength of the epoch's batches: what a replay applies to that epoch."""
        self.history.append(round(self._sum / self._count if self._count else self.value, 6))
        self.reached.append(round(self.value, 6))
        return self.history[-1]


def strength_control(policy: Policy) -> StrengthControl | None:
    """The control of a run of ``policy``: None for a constant schedule (the loader then holds
    ``build_transform(policy)`` as it always has), else a shared strength that rebuilds the pipeline
    with :func:`augsearch.policy.build_transform_at` and starts at the schedule's first strength."""
    if policy.schedule.constant:
        return None
    knob = Strength(partial(build_transform_at, policy), strength_at(policy.schedule, 0, 1))
    return StrengthControl(policy.schedule, knob)


def run_transform(policy: Policy, control: StrengthControl | None):
    """The pipeline a run's loader starts with: ``build_transform(policy)``, or the one at the
    control's starting strength."""
    return build_transform(policy) if control is None else control.knob.build(control.knob.value)

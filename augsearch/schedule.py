"""Augmentation strength over a training run: the schedule as data, and the pure functions that read it.

A strength s in [0, 1] scales the searched magnitudes of a policy's ops (and, with ``scale_p``, their
probabilities): s = 1 is the policy as searched and stored, s = 0 leaves the searched ops at their
mildest (augsearch/policy.py: ``scale_policy``, ``build_transform_at``). The fixed stages are never
scaled: they are the dataset's recipe, switched on or off by the search, not a strength.

Kinds:

- ``constant``: s = 1 throughout. The default; a space without a ``schedule:`` section, a policy file
  without a ``schedule`` key and every study made before schedules existed mean this.
- ``linear``: from ``start`` at the first epoch to ``end`` at the last, one value per epoch: a
  curriculum when start < end (easy first), an anneal when start > end.
- ``adaptive``: a feedback controller in the style of StyleGAN2-ADA (Karras et al., NeurIPS 2020,
  "Training Generative Adversarial Networks with Limited Data"; NVlabs/stylegan2-ada-pytorch,
  ``training/training_loop.py``: every ``ada_interval`` steps ``adjust = sign(signal - target) *
  (batch * ada_interval) / (ada_kimg * 1000)``, then ``p = max(p + adjust, 0)``). Every ``interval``
  training steps it reads a signal on the current augmented batch and moves s by ``step`` toward the
  set-point ``target``, clamped to [0, 1] (ADA clamps only at 0; our s scales magnitudes whose top is
  the catalogue's maximum, so it stops at 1 too). A controller that drives s to a bound stays there:
  that is a result (the report shows it), not an error. Signals, read where the KD loss is computed:

  * ``agreement``: the share of the batch on which the student's top-1 class is the teacher's. Above
    the set-point the student keeps up with the teacher on these images: make them harder (s up);
    below it, ease off. Close in spirit to TST (Shao et al. 2023) and HARD (Nix et al. 2023), which
    steer augmentation toward where teacher and student disagree.
  * ``kd_loss``: the KD loss on the batch over its running mean (an exponential average over the
    steps so far). Above the set-point the student is falling behind: ease off (s down); below it,
    make the images harder. With the default set-point 1: harder while the KD loss keeps falling.

  Without a teacher term (``alpha = 0``, the student-alone baseline) there is no signal and s stays
  at ``initial``.
- ``replay``: a stored per-epoch trajectory followed without the controller: Population Based
  Augmentation (Ho et al., ICML 2019) learns a schedule with a population and replays it in a final
  run. An exported adaptive policy carries the trajectory its best trial followed; a user who wants
  the schedule without the teacher's signal replays it (:func:`replay`). A trajectory shorter or
  longer than the run is stretched over it (epoch e of E reads entry floor(e * n / E) of n).

The retrain of a study's best policy runs the same schedule as its trial, the controller included
(the trial's trajectory belongs to a shorter run on a subset; the controller reacts to the run it is
in). Replay is for whoever reuses an exported policy elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import optuna

from augsearch.bounds import (
    AGREEMENT_TARGET,
    CONTROL_INTERVAL,
    LOSS_RATIO_TARGET,
    STRENGTH,
    STRENGTH_STEP,
    Bound,
)
from augsearch.settings import IntRange, Range, ScheduleSpace

KINDS = ("constant", "linear", "adaptive", "replay")
SEARCHED_KINDS = ("constant", "linear", "adaptive")  # what a space may search; replay comes from a file
SIGNALS = ("agreement", "kd_loss")
TEMPERATURE_SCHEDULES = ("constant", "linear")  # kd.temperature_schedule (augsearch/policy.py: KDSettings)
# The set-point's bound for each signal, and which way s moves when the signal is above it (+1: harder).
TARGET_BOUNDS: dict[str, Bound] = {"agreement": AGREEMENT_TARGET, "kd_loss": LOSS_RATIO_TARGET}
DIRECTION = {"agreement": 1.0, "kd_loss": -1.0}
DEFAULT_TARGETS = {"agreement": 0.6, "kd_loss": 1.0}  # ADA's 0.6; a KD loss that holds its level
RUNNING_MEAN_DECAY = 0.98  # the KD loss's running mean: an average over the last ~50 steps


@dataclass(frozen=True)
class Schedule:
    """A strength schedule; the fields a kind does not use keep their defaults and are not written.

    ``trajectory``: for ``replay``, the per-epoch strengths to follow; for ``adaptive``, the ones a
    run followed (set on export), which :func:`strength_at` replays where no controller runs.
    """

    kind: str = "constant"
    start: float = 1.0
    end: float = 1.0
    initial: float = 1.0
    signal: str = "agreement"
    target: float = 0.6
    step: float = 0.05
    interval: int = 16
    trajectory: tuple[float, ...] = ()
    scale_p: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.signal not in SIGNALS:
            raise ValueError(f"unknown schedule signal {self.signal!r}; expected one of {', '.join(SIGNALS)}")
        for name in ("start", "end", "initial"):
            STRENGTH.check(f"schedule {name}", getattr(self, name))
        TARGET_BOUNDS[self.signal].check(f"schedule target ({self.signal})", self.target)
        STRENGTH_STEP.check("schedule step", self.step)
        CONTROL_INTERVAL.check("schedule interval", self.interval)
        for index, value in enumerate(self.trajectory):
            STRENGTH.check(f"schedule trajectory[{index}]", value)
        if self.kind == "replay" and not self.trajectory:
            raise ValueError("a replay schedule needs a non-empty trajectory")

    @property
    def constant(self) -> bool:
        return self.kind == "constant"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with only the keys the kind uses."""
        data: dict[str, Any] = {"kind": self.kind}
        if self.kind == "linear":
            data |= {"start": self.start, "end": self.end}
        elif self.kind == "adaptive":
            data |= {"initial": self.initial, "signal": self.signal, "target": self.target}
            data |= {"step": self.step, "interval": self.interval}
        if self.trajectory:
            data["trajectory"] = list(self.trajectory)
        if self.scale_p:
            data["scale_p"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        """The inverse of :meth:`to_dict`; ``KeyError``/``TypeError``/``ValueError`` on malformed data."""
        known = {"kind", "start", "end", "initial", "signal", "target", "step", "interval"}
        extra = sorted(set(data) - known - {"trajectory", "scale_p"})
        if extra:
            raise ValueError(f"unknown schedule key {extra[0]!r}")
        values: dict[str, Any] = {key: data[key] for key in known if key in data}
        for key in ("start", "end", "initial", "target", "step"):
            if key in values:
                values[key] = _number(values[key])
        if "interval" in values and (
            isinstance(values["interval"], bool) or not isinstance(values["interval"], int)
        ):
            raise ValueError(f"schedule interval must be an integer, got {values['interval']!r}")
        trajectory = tuple(_number(value) for value in data.get("trajectory", []))
        scale_p = data.get("scale_p", False)
        if not isinstance(scale_p, bool):
            raise ValueError(f"schedule scale_p must be true or false, got {scale_p!r}")
        return cls(**values, trajectory=trajectory, scale_p=scale_p)


CONSTANT = Schedule()


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def clamp(strength: float) -> float:
    """``strength`` held inside [0, 1]."""
    return min(STRENGTH.high, max(STRENGTH.low, strength))


def strength_at(schedule: Schedule, epoch: int, epochs: int) -> float:
    """The strength of epoch ``epoch`` (0-based) of ``epochs``, without a controller.

    ``linear`` puts ``start`` on the first epoch and ``end`` on the last (a one-epoch run: ``start``);
    ``replay`` and an ``adaptive`` schedule that carries a trajectory stretch the trajectory over the
    run; an ``adaptive`` schedule without one starts at ``initial`` (the controller moves it from there).
    """
    if schedule.kind == "linear":
        share = epoch / (epochs - 1) if epochs > 1 else 0.0
        return clamp(schedule.start + (schedule.end - schedule.start) * share)
    if schedule.trajectory and schedule.kind in ("replay", "adaptive"):
        points = schedule.trajectory
        return points[min(len(points) - 1, max(0, epoch) * len(points) // max(1, epochs))]
    if schedule.kind == "adaptive":
        return schedule.initial
    return 1.0


def adjust(strength: float, signal: float, schedule: Schedule) -> float:
    """One controller step (StyleGAN2-ADA's rule): ``s + step · sign(signal - target) · direction``,
    clamped to [0, 1]. ``direction`` is +1 for agreement (above the set-point: harder) and -1 for the
    KD loss ratio (above it: easier). A signal at the set-point, or not a number, leaves s as it is."""
    if not math.isfinite(signal) or signal == schedule.target:
        return strength
    sign = 1.0 if signal > schedule.target else -1.0
    # rounded: a strength that went up and down by the same steps is the value it started from
    return clamp(round(strength + schedule.step * sign * DIRECTION[schedule.signal], 9))


def loss_ratio(loss: float, running_mean: float) -> float:
    """The KD loss over its running mean; 1 while there is no mean yet (or it is 0)."""
    return loss / running_mean if running_mean > 0 else 1.0


def replay(schedule: Schedule, trajectory: tuple[float, ...] | list[float] | None = None) -> Schedule:
    """A ``replay`` schedule that follows ``trajectory`` (default: the one ``schedule`` carries)."""
    points = tuple(float(value) for value in (schedule.trajectory if trajectory is None else trajectory))
    return Schedule(kind="replay", trajectory=points, scale_p=schedule.scale_p)


def with_trajectory(schedule: Schedule, trajectory: list[float] | tuple[float, ...]) -> Schedule:
    """``schedule`` carrying the per-epoch strengths a run followed (exported for ``adaptive``)."""
    return replace(schedule, trajectory=tuple(float(value) for value in trajectory))


def describe_schedule(schedule: Schedule) -> str:
    """One readable line: the kind and its settings."""
    if schedule.kind == "linear":
        text = f"linear {schedule.start:.2f} -> {schedule.end:.2f}"
    elif schedule.kind == "adaptive":
        text = (
            f"adaptive from {schedule.initial:.2f}, {schedule.signal} toward {schedule.target:.2f}, "
            f"step {schedule.step:.3f} every {schedule.interval} steps"
        )
    elif schedule.kind == "replay":
        text = f"replay of {len(schedule.trajectory)} epochs"
    else:
        text = "constant 1"
    return text + (" (probabilities scaled too)" if schedule.scale_p else "")


def _suggest(trial: optuna.Trial, name: str, value: Range) -> float:
    return (
        value.low
        if value.low == value.high
        else trial.suggest_float(name, value.low, value.high, log=value.log)
    )


def _suggest_int(trial: optuna.Trial, name: str, value: IntRange) -> int:
    return value.low if value.low == value.high else trial.suggest_int(name, value.low, value.high)


def sample_schedule(trial: optuna.Trial, space: ScheduleSpace) -> Schedule:
    """Ask the trial for the schedule's kind and that kind's settings.

    Parameters (each only where searched, and only in the trials whose kind uses it): ``schedule_kind``;
    ``strength_start``, ``strength_end`` (linear); ``strength_initial``, ``ada_signal``,
    ``ada_target_<signal>``, ``ada_step``, ``ada_interval`` (adaptive). A space without a schedule
    asks nothing: constant.
    """
    kinds = space.kinds
    kind = kinds[0] if len(kinds) == 1 else trial.suggest_categorical("schedule_kind", list(kinds))
    if kind == "linear":
        start, end = (
            _suggest(trial, "strength_start", space.start),
            _suggest(trial, "strength_end", space.end),
        )
        return Schedule("linear", start=start, end=end, scale_p=space.scale_p)
    if kind == "adaptive":
        signals = space.signals
        signal = signals[0] if len(signals) == 1 else trial.suggest_categorical("ada_signal", list(signals))
        default = DEFAULT_TARGETS[signal]
        # One parameter per signal: the two set-points live on different scales.
        target = _suggest(trial, f"ada_target_{signal}", space.targets.get(signal, Range(default, default)))
        return Schedule(
            "adaptive",
            initial=_suggest(trial, "strength_initial", space.initial),
            signal=signal,
            target=target,
            step=_suggest(trial, "ada_step", space.step),
            interval=_suggest_int(trial, "ada_interval", space.interval),
            scale_p=space.scale_p,
        )
    return CONSTANT

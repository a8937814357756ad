"""A policy is plain data; the albumentations pipeline is built from it by a pure function.

A :class:`Policy` holds the fixed stages, the searched op slots (op, probability, magnitude) and the
distillation settings sampled with them. :func:`sample_policy` asks an Optuna trial for those
values; replaying it on ``optuna.trial.FixedTrial(best.params)`` rebuilds the same policy, which is
how the retrain and the export recover a trial's policy without storing code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Imported via ops, which sets NO_ALBUMENTATIONS_UPDATE first.
import albumentations as A
import optuna

from augsearch.mixing import NO_MIXING, MixSettings
from augsearch.ops import make_op, op_names
from augsearch.space import KD_LOSSES, Range, Space, Stage


@dataclass(frozen=True)
class OpChoice:
    name: str
    p: float
    magnitude: float


@dataclass(frozen=True)
class KDSettings:
    """Distillation settings; the losses are in ``augsearch/distill.py``.

    ``loss == "hinton"``: ``alpha`` weighs KD against cross-entropy, ``alpha == 0`` means no
    distillation. ``loss == "dkd"`` (Decoupled KD): ``alpha`` weighs TCKD and ``beta`` NCKD, on top of
    cross-entropy; both 0 means no distillation. ``beta`` is set for DKD and only for DKD.
    """

    temperature: float
    alpha: float
    loss: str = "hinton"
    beta: float | None = None

    def __post_init__(self) -> None:
        if self.loss not in KD_LOSSES:
            raise ValueError(f"unknown KD loss {self.loss!r}; expected one of {', '.join(KD_LOSSES)}")
        if (self.loss == "dkd") != (self.beta is not None):
            raise ValueError(f"beta is required by the dkd loss and only by it (loss {self.loss!r})")

    @property
    def distils(self) -> bool:
        """Whether the teacher takes part at all: some KD term has a non-zero weight."""
        return self.alpha > 0 or bool(self.beta)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``beta`` only when set, so Hinton settings read as they always have."""
        data: dict[str, Any] = {"loss": self.loss, "temperature": self.temperature, "alpha": self.alpha}
        return data if self.beta is None else data | {"beta": self.beta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KDSettings:
        """The inverse of :meth:`to_dict`; files without ``loss`` or ``beta`` are Hinton's."""
        beta = data.get("beta")
        return cls(
            float(data["temperature"]),
            float(data["alpha"]),
            str(data.get("loss", "hinton")),
            None if beta is None else float(beta),
        )


@dataclass(frozen=True)
class Policy:
    fixed: tuple[Stage, ...]
    ops: tuple[OpChoice, ...]
    kd: KDSettings
    mix: MixSettings = NO_MIXING  # batch mixing after the per-image pipeline (augsearch/mixing.py)

    def describe(self) -> str:
        """One line per searched op, then the KD settings: what a person reads in a report."""
        lines = [f"{op.name:<24} p={op.p:.2f} m={op.magnitude:.2f}" for op in self.ops] or [
            "(no searched ops)"
        ]
        beta = "" if self.kd.beta is None else f", beta={self.kd.beta:.2f}"
        lines.append(f"KD: {self.kd.loss}, T={self.kd.temperature:.2f}, alpha={self.kd.alpha:.2f}{beta}")
        if self.mix.active:
            lines.append(f"mixing: {self.mix.kind}, p={self.mix.p:.2f}, alpha={self.mix.alpha:.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: what a trial stores and what the exported file carries."""
        return {
            "fixed": [{"name": stage.name, "args": dict(stage.args)} for stage in self.fixed],
            "ops": [{"name": op.name, "p": op.p, "magnitude": op.magnitude} for op in self.ops],
            "kd": self.kd.to_dict(),
            "mix": self.mix.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """The inverse of :meth:`to_dict`; ``KeyError``/``TypeError``/``ValueError`` on malformed data."""
        return cls(
            fixed=tuple(Stage(str(stage["name"]), dict(stage.get("args", {}))) for stage in data["fixed"]),
            ops=tuple(
                OpChoice(str(op["name"]), float(op["p"]), float(op["magnitude"])) for op in data["ops"]
            ),
            kd=KDSettings.from_dict(data["kd"]),
            mix=MixSettings.from_dict(data["mix"]) if "mix" in data else NO_MIXING,  # older files: none
        )


def _suggest(trial: optuna.Trial, name: str, value: Range) -> float:
    if value.low == value.high:
        return value.low
    return trial.suggest_float(name, value.low, value.high, log=value.log)


def sample_policy(trial: optuna.Trial, space: Space, channels: int) -> Policy:
    """Ask the trial for every searched value of ``space``: per slot an op, its p and its magnitude.

    Slot parameters are named by slot, not by op (``op0``, ``op0_p``, ``op0_m``), so the sampler
    sees a fixed number of dimensions whatever ops are chosen.
    """
    allowed = op_names(channels)
    choices = [name for name in (space.policy.ops or allowed) if name in allowed]
    ops = []
    for slot in range(space.policy.slots if choices else 0):
        name = trial.suggest_categorical(f"op{slot}", choices)
        p = trial.suggest_float(f"op{slot}_p", 0.0, 1.0)
        magnitude = trial.suggest_float(f"op{slot}_m", 0.0, 1.0)
        ops.append(OpChoice(name, p, magnitude))
    losses = space.kd.losses
    loss = losses[0] if len(losses) == 1 else trial.suggest_categorical("kd_loss", list(losses))
    temperature = _suggest(trial, "temperature", space.kd.temperature)
    alpha = _suggest(trial, "alpha", space.kd.alpha)
    # β exists only for DKD: a conditional parameter, absent from the trials that chose Hinton.
    beta = _suggest(trial, "beta", space.kd.beta) if loss == "dkd" and space.kd.beta else None
    return Policy(space.fixed, tuple(ops), KDSettings(temperature, alpha, loss, beta))


def build_transform(policy: Policy, seed: int | None = None) -> A.Compose:
    """The albumentations pipeline of ``policy``: fixed stages, then each searched op with its p."""
    stages = [getattr(A, stage.name)(**stage.args) for stage in policy.fixed]
    stages += [make_op(op.name, op.magnitude, op.p) for op in policy.ops]
    return A.Compose(stages, seed=seed)

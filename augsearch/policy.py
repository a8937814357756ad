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

from augsearch.ops import make_op, op_names
from augsearch.space import Range, Space, Stage


@dataclass(frozen=True)
class OpChoice:
    name: str
    p: float
    magnitude: float


@dataclass(frozen=True)
class KDSettings:
    """Hinton distillation settings. ``alpha == 0`` means no distillation (cross-entropy only)."""

    temperature: float
    alpha: float
    loss: str = "hinton"


@dataclass(frozen=True)
class Policy:
    fixed: tuple[Stage, ...]
    ops: tuple[OpChoice, ...]
    kd: KDSettings

    def describe(self) -> str:
        """One line per searched op, then the KD settings: what a person reads in a report."""
        lines = [f"{op.name:<24} p={op.p:.2f} m={op.magnitude:.2f}" for op in self.ops] or [
            "(no searched ops)"
        ]
        lines.append(f"KD: {self.kd.loss}, T={self.kd.temperature:.2f}, alpha={self.kd.alpha:.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: what a trial stores and what the exported file carries."""
        return {
            "fixed": [{"name": stage.name, "args": dict(stage.args)} for stage in self.fixed],
            "ops": [{"name": op.name, "p": op.p, "magnitude": op.magnitude} for op in self.ops],
            "kd": {"loss": self.kd.loss, "temperature": self.kd.temperature, "alpha": self.kd.alpha},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """The inverse of :meth:`to_dict`; ``KeyError``/``TypeError``/``ValueError`` on malformed data."""
        kd = data["kd"]
        if kd.get("loss", "hinton") != "hinton":
            raise ValueError(f"unknown KD loss {kd['loss']!r}")
        return cls(
            fixed=tuple(Stage(str(stage["name"]), dict(stage.get("args", {}))) for stage in data["fixed"]),
            ops=tuple(
                OpChoice(str(op["name"]), float(op["p"]), float(op["magnitude"])) for op in data["ops"]
            ),
            kd=KDSettings(float(kd["temperature"]), float(kd["alpha"])),
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
    kd = KDSettings(
        _suggest(trial, "temperature", space.kd.temperature), _suggest(trial, "alpha", space.kd.alpha)
    )
    return Policy(space.fixed, tuple(ops), kd)


def build_transform(policy: Policy, seed: int | None = None) -> A.Compose:
    """The albumentations pipeline of ``policy``: fixed stages, then each searched op with its p."""
    stages = [getattr(A, stage.name)(**stage.args) for stage in policy.fixed]
    stages += [make_op(op.name, op.magnitude, op.p) for op in policy.ops]
    return A.Compose(stages, seed=seed)

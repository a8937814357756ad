"""The report's strength section: the strength each scheduled run followed, beside its accuracy curve.

Only runs with a non-constant schedule record a strength (augsearch/control.py), so a study without
schedules gets no section and no plot: its report reads as it always has. A controller that drove the
strength to 0 or 1 and stayed there is a result, not an error; the lines say how many epochs ended
at a bound, and the plot shows the curve flat against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from augsearch.attributes import POLICY_JSON, STRENGTH, STRENGTH_REACHED

TRIALS_SHOWN = 5  # the best scheduled trials drawn; more make the plot unreadable


@dataclass(frozen=True)
class Curve:
    """One scheduled run: the mean strength per epoch, the strength at each epoch's end (None where
    not recorded), and its validation accuracy per epoch (trials; empty for retrain runs)."""

    name: str
    kind: str
    strength: tuple[float, ...]
    reached: tuple[float | None, ...]
    accuracy: tuple[float, ...] = ()

    @property
    def clamped(self) -> int:
        """Epochs that ended with the strength at a bound (0 or 1)."""
        return sum(value in (0.0, 1.0) for value in self.reached)


def strength_curves(study: optuna.Study, runs: list[dict[str, Any]]) -> list[Curve]:
    """The best scheduled trials (by validation accuracy, at most :data:`TRIALS_SHOWN`), then every
    scheduled retrain run."""
    trials = [
        trial
        for trial in study.get_trials(deepcopy=False)
        if trial.value is not None and trial.user_attrs.get(STRENGTH)
    ]
    curves = []
    for trial in sorted(trials, key=lambda t: (-t.value, t.number))[:TRIALS_SHOWN]:
        kind = trial.user_attrs.get(POLICY_JSON, {}).get("schedule", {}).get("kind", "?")
        accuracy = tuple(value for _, value in sorted(trial.intermediate_values.items()))
        strength = tuple(trial.user_attrs[STRENGTH])
        reached = tuple(trial.user_attrs.get(STRENGTH_REACHED) or [None] * len(strength))
        curves.append(Curve(f"trial {trial.number}", kind, strength, reached, accuracy))
    for run in runs:
        if run.get("strength"):
            strength = tuple(run["strength"])
            reached = tuple(run.get("strength_reached") or [None] * len(strength))
            name = f"{run['name']} seed {run['seed']}"
            curves.append(Curve(name, run.get("schedule", {}).get("kind", "?"), strength, reached))
    return curves


def strength_lines(curves: list[Curve]) -> list[str]:
    """One line per curve: kind, mean strength per epoch, and how many epochs ended clamped."""
    lines = []
    for curve in curves:
        values = " ".join(f"{value:.2f}" for value in curve.strength)
        known = sum(value is not None for value in curve.reached)
        how = "clamped at a bound" if curve.kind == "adaptive" else "at a bound"  # only a controller clamps
        clamp = f"; {how} at the end of {curve.clamped} of {known} epochs" if curve.clamped else ""
        lines.append(f"{curve.name:<32} {curve.kind:<9} strength per epoch: {values}{clamp}")
    return lines


def strength_figure(curves: list[Curve], plt) -> Any:
    """Two panels side by side: validation accuracy per epoch (trials) and strength per epoch (every
    curve; the bounds 0 and 1 drawn, so a clamped controller shows as a flat line on one)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for curve in curves:
        epochs = range(1, len(curve.strength) + 1)
        style = "-" if curve.accuracy else "--"
        (line,) = right.plot(epochs, curve.strength, style, marker="o", label=f"{curve.name} ({curve.kind})")
        if curve.accuracy:
            left.plot(range(1, len(curve.accuracy) + 1), curve.accuracy, marker="o", color=line.get_color())
    for bound in (0.0, 1.0):
        right.axhline(bound, color="grey", linewidth=0.8, linestyle=":")
    right.set_ylim(-0.05, 1.05)
    right.set_xlabel("epoch")
    right.set_ylabel("augmentation strength (mean over the epoch)")
    right.legend(fontsize=7)
    left.set_xlabel("epoch")
    left.set_ylabel("validation accuracy (trials)")
    return figure

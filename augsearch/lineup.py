"""The rows a retrain runs, from the names asked for: the searched trials, the baselines with the fixed
KD settings, the KD-fair rows (augsearch/fair.py) and the ``kd-tuned`` row (augsearch/kdtuned.py), in
that order."""

from __future__ import annotations

import optuna

from augsearch.baselines import BASELINES, Candidate
from augsearch.fair import fair_candidates, fixed_kd
from augsearch.policy import Policy
from augsearch.retrain import candidates, searched
from augsearch.workspace import Workspace


def lineup(
    study: optuna.Study,
    workspace: Workspace,
    top: int,
    names: tuple[str, ...],
    kd_row: Candidate | None = None,
) -> list[Candidate]:
    """Every row named in ``names`` (already expanded: augsearch/fair.py: expand); ``kd_row`` is the
    ``kd-tuned`` candidate when it was asked for."""
    plain = tuple(name for name in names if name in BASELINES)
    runs = candidates(study, workspace, top, plain)
    settings = workspace.space.baselines
    kd = fixed_kd(settings.temperature, settings.alpha)
    best = next(iter(searched(study, 1)), None)  # a fresh pipeline: retrain_run seeds it per run
    runs += fair_candidates(names, best, kd, Policy(workspace.space.fixed, (), kd), workspace.data.channels)
    return runs + ([kd_row] if kd_row is not None else [])

"""Warm starts: named baselines enqueued as a study's first trials.

Why: a search that starts from the baselines is never worse on validation than the best of them (the
study's best trial is at least as good as every trial it ran), and the sampler learns from them from the
start. The `full-labels` space's benchmark is the case in point: with KD, no augmentation at all (``none``)
beat every augmented policy, which a search whose fixed stages are always on could never find.

A warm start is the Optuna parameters under which :func:`augsearch.policy.sample_policy` rebuilds
the baseline exactly (``augsearch/baselines.py``): the same per-image distribution, KD settings and no
batch mixing. When a space cannot express a baseline, :func:`warm_start_problem` says why, and the space
reader refuses the space (``study.warm_starts[i]``). A searched trial budget (``lr``, ``epochs``,
``batch_size``) is left to the sampler: a baseline has none of its own. A baseline runs at the constant
strength schedule (augsearch/schedule.py), so a space that searches schedules must list ``constant``.

Each enqueued trial carries the user attribute ``warm_start`` (the baseline's name); a baseline that some
trial of the study already carries is not enqueued again, so resuming a study adds nothing.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from augsearch.attributes import WARM_START
from augsearch.baselines import BASELINES, RANDAUGMENT_M, RANDAUGMENT_N, RANDAUGMENT_OPS
from augsearch.errors import UserError
from augsearch.ops import OPS
from augsearch.policy import op_choices, sample_policy, sample_training
from augsearch.settings import Range, Space


def _contains(value: float, searched: Range | None) -> bool:
    return searched is not None and searched.low <= value <= searched.high


def _ops(space: Space) -> set[str]:
    """The space's ops before the channel filter (which treats a space and a baseline alike)."""
    return set(space.policy.ops or OPS) - set(space.policy.exclude)


def _augmentation_problem(name: str, space: Space) -> str | None:
    """Why the per-image part of baseline ``name`` is beyond ``space``, or None."""
    policy = space.policy
    if name == "none" and space.fixed and not space.fixed_searched:
        return "it applies no fixed stages, but this space always does (set fixed_searched: true)"
    if name in ("randaugment", "trivialaugment"):
        structure = "randaugment" if name == "randaugment" else "trivial"
        wanted = set(RANDAUGMENT_OPS) if name == "randaugment" else set(OPS)
        if policy.structure != structure:
            return f"it needs policy.structure {structure}, this space has {policy.structure}"
        if _ops(space) != wanted:
            listed = "the RandAugment ops " + ", ".join(RANDAUGMENT_OPS) if name == "randaugment" else "all"
            return f"it draws from policy ops {listed} (ops less exclude), this space from others"
        if name == "randaugment" and not (
            policy.n.low <= RANDAUGMENT_N <= policy.n.high and _contains(RANDAUGMENT_M, policy.m)
        ):
            return f"it uses N={RANDAUGMENT_N}, M={RANDAUGMENT_M}; widen policy.n or policy.m to include them"
    elif policy.structure == "trivial":
        return "the trivial structure applies an op to every image and cannot switch its ops off"
    elif policy.structure == "randaugment" and policy.n.low > 0:
        return "it applies no searched op, which needs policy.n to allow 0"
    if policy.erasing is not None and policy.erasing.p.low > 0:
        return "it applies no erasing, which needs policy.erasing.p to allow 0"
    return None


def warm_start_problem(name: str, space: Space) -> str | None:
    """Why ``space`` cannot express baseline ``name`` exactly, or None when it can."""
    if name not in BASELINES:
        return f"unknown baseline; known: {', '.join(BASELINES)}"
    kd, settings = space.kd, space.baselines
    if "hinton" not in kd.losses:
        return "the baselines use Hinton's loss; add hinton to kd.loss"
    if name == "student-alone":
        if kd.alpha.low > 0:
            return "it trains without a teacher, which needs kd.alpha to allow 0"
    else:
        for key, value in (("temperature", settings.temperature), ("alpha", settings.alpha)):
            searched = getattr(kd, key)
            if not _contains(value, searched):
                return (
                    f"its KD {key} {value:g} (baselines.{key}) is outside kd.{key} "
                    f"[{searched.low:g}, {searched.high:g}]"
                )
    if "none" not in space.mixing.kinds:
        return "it mixes no batches, which needs none among mixing.kinds"
    if "constant" not in space.schedule.kinds:
        return "it runs at constant strength, which needs constant among schedule.kind"
    if "constant" not in kd.temperature_schedules:
        return "it keeps T constant, which needs constant among kd.temperature_schedule"
    if space.synthesis is not None and space.synthesis.ratio.low > 0:
        return "it uses no synthetic images, which needs synthesis.ratio to allow 0"
    return _augmentation_problem(name, space)


def _searched(params: dict[str, Any], name: str, value: Any, searched: Range | None) -> None:
    """Set ``params[name]`` only when it is a parameter at all (a fixed value is none)."""
    if searched is not None and searched.low != searched.high:
        params[name] = value


def warm_start_params(name: str, space: Space, channels: int) -> dict[str, Any]:
    """The parameters under which ``sample_policy(trial, space, channels)`` is baseline ``name``.

    Ops that a baseline does not apply are kept at probability 0 (their identity the first choice,
    magnitude 0), RandAugment at N = 0, Cutout at probability 0 (its smallest size). Assumes
    :func:`warm_start_problem` found nothing (the space reader checks it).
    """
    policy, kd, settings = space.policy, space.kd, space.baselines
    params: dict[str, Any] = {}
    if space.fixed_searched:
        params["fixed_on"] = name != "none"
    choices = op_choices(space, channels)
    if policy.structure == "slots" and choices:
        for slot in range(policy.slots):
            params |= {f"op{slot}": choices[0], f"op{slot}_p": 0.0, f"op{slot}_m": 0.0}
    elif policy.structure == "subpolicies" and choices:
        for k in range(policy.subpolicies):
            for j in range(policy.length):
                params |= {f"sp{k}_op{j}": choices[0], f"sp{k}_op{j}_p": 0.0, f"sp{k}_op{j}_m": 0.0}
    elif policy.structure == "randaugment":
        randaugment = name == "randaugment"
        if policy.n.low != policy.n.high:
            params["ra_n"] = RANDAUGMENT_N if randaugment else 0
        _searched(params, "ra_m", RANDAUGMENT_M if randaugment else policy.m.low, policy.m)
    if policy.erasing is not None:
        _searched(params, "erasing_p", 0.0, policy.erasing.p)
        _searched(params, "erasing_size", policy.erasing.size.low, policy.erasing.size)
    if len(space.mixing.kinds) > 1:
        params["mix_kind"] = "none"
    if space.synthesis is not None:
        _searched(params, "synth_ratio", 0.0, space.synthesis.ratio)
    if len(kd.losses) > 1:
        params["kd_loss"] = "hinton"
    if len(space.schedule.kinds) > 1:
        params["schedule_kind"] = "constant"
    if len(kd.temperature_schedules) > 1:
        params["temperature_schedule"] = "constant"
    temperature = min(max(settings.temperature, kd.temperature.low), kd.temperature.high)
    _searched(params, "temperature", temperature, kd.temperature)
    _searched(params, "alpha", 0.0 if name == "student-alone" else settings.alpha, kd.alpha)
    return params


def params_problem(params: dict[str, Any], space: Space, channels: int) -> str | None:
    """Why ``params`` (``study.warm_start_params[i]``) is not one whole trial of ``space``, or None: every
    parameter a trial with these values asks for must be given, in its range or among its choices,
    and none may be left over. Checked by replaying the trial on ``optuna.trial.FixedTrial``."""
    if not isinstance(params, dict):
        return f"expected a mapping of parameter names to values, got {type(params).__name__}"
    trial = optuna.trial.FixedTrial(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FixedTrial only warns about a value outside its range
        try:
            sample_training(trial, space)
            sample_policy(trial, space, channels)
        except (ValueError, TypeError, Warning) as error:
            return " ".join(str(error).split())[:300]
    unused = sorted(set(params) - set(trial.params))
    return f"{unused[0]!r} is not a parameter of this space's trials" if unused else None


def enqueue_warm_starts(study: optuna.Study, space: Space, channels: int) -> list[str]:
    """Enqueue the space's warm starts not yet in ``study``; returns the names enqueued now (a
    parameter set of ``study.warm_start_params`` is named ``params[i]``)."""
    present = {trial.user_attrs.get(WARM_START) for trial in study.get_trials(deepcopy=False)}
    enqueued = []
    for name in space.study.warm_starts:
        if name not in present:
            study.enqueue_trial(warm_start_params(name, space, channels), user_attrs={WARM_START: name})
            enqueued.append(name)
    for index, params in enumerate(space.study.warm_start_params):
        name = f"params[{index}]"
        if name not in present:
            if problem := params_problem(params, space, channels):  # the data's channels, known now
                raise UserError(f"{space.path}: study.warm_start_params[{index}]: {problem}")
            study.enqueue_trial(dict(params), user_attrs={WARM_START: name})
            enqueued.append(name)
    return enqueued

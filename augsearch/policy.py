"""A policy is plain data; the albumentations pipeline is built from it by a pure function.

A :class:`Policy` holds the fixed stages, the searched per-image structure (op slots, AutoAugment
sub-policies, RandAugment's N and M, TrivialAugment, Cutout), the batch mixing and the distillation
settings sampled with them. :func:`sample_policy` asks an Optuna trial for those values; replaying it
on ``optuna.trial.FixedTrial(best.params)`` rebuilds the same policy, which is how the retrain and the
export recover a trial's policy without storing code. Every op is built by ``augsearch/ops.py``, the
one magnitude table.

Optuna parameter names, by structure (fixed names, so the sampler sees the same dimensions whatever
ops are chosen, and older studies replay): ``op{i}``/``op{i}_p``/``op{i}_m`` (slots);
``sp{k}_op{j}``/``_p``/``_m`` (sub-policies); ``ra_n``, ``ra_m`` (RandAugment); ``erasing_p``,
``erasing_size``; ``fixed_on``; ``mix_kind``, ``mix_p``, ``mix_alpha``; ``kd_loss``, ``temperature``,
``alpha``, ``beta``; ``synth_ratio``, ``synth_hard_labels``, ``synth_augment`` (synthesis); and for
a trial's budget ``lr``, ``epochs``, ``batch_size``. A range with
``low == high`` is a fixed value and no parameter at all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

# Imported via ops, which sets NO_ALBUMENTATIONS_UPDATE first.
import albumentations as A
import optuna

from augsearch.attributes import POLICY_JSON
from augsearch.bounds import (
    DKD_BETA,
    ERASING_SIZE,
    KD_ALPHA,
    MAGNITUDE,
    PROBABILITY,
    RANDAUGMENT_N,
    STRENGTH,
    TEMPERATURE,
)
from augsearch.mixing import NO_MIXING, MixSettings
from augsearch.ops import make_erasing, make_op, op_names
from augsearch.schedule import CONSTANT, Schedule, describe_schedule, sample_schedule
from augsearch.settings import KD_LOSSES, IntRange, Range, Space, Stage, TrainSettings
from augsearch.synthesis import SynthesisSettings


@dataclass(frozen=True)
class OpChoice:
    """One op applied with probability ``p`` at ``magnitude`` (AutoAugment's triple)."""

    name: str
    p: float
    magnitude: float

    def __post_init__(self) -> None:
        PROBABILITY.check(f"{self.name}: p", self.p)
        MAGNITUDE.check(f"{self.name}: magnitude", self.magnitude)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "p": self.p, "magnitude": self.magnitude}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpChoice:
        return cls(str(data["name"]), float(data["p"]), float(data["magnitude"]))


@dataclass(frozen=True)
class RandAugment:
    """RandAugment (Cubuk et al., CVPR Workshops 2020): ``n`` ops per image drawn uniformly with
    replacement from ``ops`` plus the identity, each applied at the shared ``magnitude`` M."""

    n: int
    magnitude: float
    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        RANDAUGMENT_N.check("RandAugment n", self.n)
        MAGNITUDE.check("RandAugment magnitude", self.magnitude)


@dataclass(frozen=True)
class Trivial:
    """TrivialAugment (Müller & Hutter, ICCV 2021): one op per image, chosen uniformly from ``ops``
    plus the identity, at magnitude 1, which with our ops draws the strength uniformly up to the maximum.
    ``magnitude`` below 1 only comes from a strength schedule (:func:`scale_policy`)."""

    ops: tuple[str, ...]
    magnitude: float = 1.0


@dataclass(frozen=True)
class Erasing:
    """Cutout (DeVries & Taylor 2017) with probability ``p``: one hole of side ``size`` of the image's."""

    p: float
    size: float

    def __post_init__(self) -> None:
        PROBABILITY.check("erasing p", self.p)
        ERASING_SIZE.check("erasing size", self.size)


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
    temperature_end: float | None = None  # None: T constant; else linear from temperature (at_epoch)

    def __post_init__(self) -> None:
        if self.loss not in KD_LOSSES:
            raise ValueError(f"unknown KD loss {self.loss!r}; expected one of {', '.join(KD_LOSSES)}")
        if (self.loss == "dkd") != (self.beta is not None):
            raise ValueError(f"beta is required by the dkd loss and only by it (loss {self.loss!r})")
        TEMPERATURE.check("KD temperature", self.temperature)
        KD_ALPHA.check("KD alpha", self.alpha)
        if self.beta is not None:
            DKD_BETA.check("DKD beta", self.beta)
        if self.temperature_end is not None:
            TEMPERATURE.check("KD temperature_end", self.temperature_end)

    def at_epoch(self, epoch: int, epochs: int) -> KDSettings:
        """The settings of epoch ``epoch`` (0-based) of ``epochs``: ``self`` for a constant temperature;
        with ``temperature_end``, T moves linearly from ``temperature`` (first epoch) to it (last). A
        fixed curriculum over T in the spirit of CTKD (Li et al., AAAI 2023, "Curriculum Temperature for
        Knowledge Distillation"), which learns T adversarially with a difficulty that rises over training;
        here the two ends are searched instead, and T² keeps scaling the KD term (Hinton et al. 2015)."""
        if self.temperature_end is None:
            return self
        share = epoch / (epochs - 1) if epochs > 1 else 0.0
        return replace(self, temperature=self.temperature + (self.temperature_end - self.temperature) * share)

    @property
    def distils(self) -> bool:
        """Whether the teacher takes part at all: some KD term has a non-zero weight."""
        return self.alpha > 0 or bool(self.beta)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``beta`` only when set, so Hinton settings read as they always have."""
        data: dict[str, Any] = {"loss": self.loss, "temperature": self.temperature, "alpha": self.alpha}
        if self.temperature_end is not None:  # only a linear temperature schedule: others read as before
            data["temperature_end"] = self.temperature_end
        return data if self.beta is None else data | {"beta": self.beta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KDSettings:
        """The inverse of :meth:`to_dict`; files without ``loss`` or ``beta`` are Hinton's."""
        beta, end = data.get("beta"), data.get("temperature_end")
        return cls(
            float(data["temperature"]),
            float(data["alpha"]),
            str(data.get("loss", "hinton")),
            None if beta is None else float(beta),
            None if end is None else float(end),
        )


@dataclass(frozen=True)
class Policy:
    """What a trial searched, as data. Per image: ``fixed`` stages, then the slot ``ops`` in turn, one
    of the ``subpolicies`` (each a sequence of ops), ``randaugment``, ``trivial``, ``erasing``; then per
    batch ``mix``; and the ``kd`` settings. A space produces one structure; the data allows any mix."""

    fixed: tuple[Stage, ...]
    ops: tuple[OpChoice, ...]
    kd: KDSettings
    mix: MixSettings = NO_MIXING  # batch mixing after the per-image pipeline (augsearch/mixing.py)
    subpolicies: tuple[tuple[OpChoice, ...], ...] = ()
    randaugment: RandAugment | None = None
    trivial: Trivial | None = None
    erasing: Erasing | None = None
    schedule: Schedule = CONSTANT  # the strength over a run (augsearch/schedule.py); constant: as searched
    synthesis: SynthesisSettings | None = None  # synthetic images per batch (augsearch/synthesis.py)

    def describe(self) -> str:
        """The fixed stages, one line per searched part, then the KD settings: what a person reads."""
        lines = ["fixed: " + (", ".join(stage.name for stage in self.fixed) or "none")]
        lines += [f"{op.name:<24} p={op.p:.2f} m={op.magnitude:.2f}" for op in self.ops]
        for index, sub in enumerate(self.subpolicies):
            ops = ", ".join(f"{op.name} p={op.p:.2f} m={op.magnitude:.2f}" for op in sub)
            lines.append(f"sub-policy {index + 1}: {ops}")
        if self.randaugment:
            ra = self.randaugment
            lines.append(f"RandAugment: N={ra.n}, M={ra.magnitude:.2f} over {len(ra.ops)} ops + identity")
        if self.trivial:
            lines.append(f"TrivialAugment: one of {len(self.trivial.ops)} ops + identity, uniform strength")
        if self.erasing:
            lines.append(f"erasing (Cutout): p={self.erasing.p:.2f}, size={self.erasing.size:.2f}")
        if len(lines) == 1:
            lines.append("(no searched ops)")
        beta = "" if self.kd.beta is None else f", beta={self.kd.beta:.2f}"
        end = "" if self.kd.temperature_end is None else f" -> {self.kd.temperature_end:.2f} (linear)"
        lines.append(f"KD: {self.kd.loss}, T={self.kd.temperature:.2f}{end}, alpha={self.kd.alpha:.2f}{beta}")
        if self.mix.active:
            lines.append(f"mixing: {self.mix.kind}, p={self.mix.p:.2f}, alpha={self.mix.alpha:.2f}")
        if not self.schedule.constant:
            lines.append("strength schedule: " + describe_schedule(self.schedule))
        if self.synthesis is not None:
            syn = self.synthesis
            lines.append(
                f"synthesis: ratio={syn.ratio:.2f}, hard_labels={syn.hard_labels}, augment={syn.augment}"
                if syn.active
                else "synthesis: off (ratio 0)"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: what a trial stores and what the exported file carries. A structure's
        key appears only when the policy has it, so slot policies read as they always have."""
        data: dict[str, Any] = {
            "fixed": [{"name": stage.name, "args": dict(stage.args)} for stage in self.fixed],
            "ops": [op.to_dict() for op in self.ops],
            "kd": self.kd.to_dict(),
            "mix": self.mix.to_dict(),
        }
        if self.subpolicies:
            data["subpolicies"] = [[op.to_dict() for op in sub] for sub in self.subpolicies]
        if self.randaugment:
            ra = self.randaugment
            data["randaugment"] = {"n": ra.n, "magnitude": ra.magnitude, "ops": list(ra.ops)}
        if self.trivial:
            data["trivial"] = {"ops": list(self.trivial.ops)}
        if self.erasing:
            data["erasing"] = {"p": self.erasing.p, "size": self.erasing.size}
        if not self.schedule.constant:  # constant: no key, so policies read as they always have
            data["schedule"] = self.schedule.to_dict()
        if self.synthesis is not None:
            data["synthesis"] = self.synthesis.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """The inverse of :meth:`to_dict`; ``KeyError``/``TypeError``/``ValueError`` on malformed data.
        Older data (only fixed, ops, kd and perhaps mix) reads as slots without mixing."""
        ra, trivial, erasing = data.get("randaugment"), data.get("trivial"), data.get("erasing")
        return cls(
            fixed=tuple(Stage(str(stage["name"]), dict(stage.get("args", {}))) for stage in data["fixed"]),
            ops=tuple(OpChoice.from_dict(op) for op in data["ops"]),
            kd=KDSettings.from_dict(data["kd"]),
            mix=MixSettings.from_dict(data["mix"]) if "mix" in data else NO_MIXING,
            subpolicies=tuple(
                tuple(OpChoice.from_dict(op) for op in sub) for sub in data.get("subpolicies", [])
            ),
            randaugment=None
            if ra is None
            else RandAugment(_count(ra["n"]), float(ra["magnitude"]), tuple(str(op) for op in ra["ops"])),
            trivial=None if trivial is None else Trivial(tuple(str(op) for op in trivial["ops"])),
            erasing=None if erasing is None else Erasing(float(erasing["p"]), float(erasing["size"])),
            schedule=Schedule.from_dict(data["schedule"]) if "schedule" in data else CONSTANT,
            synthesis=SynthesisSettings.from_dict(data["synthesis"]) if data.get("synthesis") else None,
        )


def trial_policy(trial: optuna.Trial | optuna.trial.FrozenTrial) -> Policy:
    """The policy a trial ran, as the objective stored it (:data:`augsearch.attributes.POLICY_JSON`)."""
    return Policy.from_dict(trial.user_attrs[POLICY_JSON])


def _count(value: Any) -> int:
    """An integer count from JSON: 2 or 2.0, not 2.5 or true."""
    if isinstance(value, bool) or not float(value).is_integer() or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return int(value)


def _suggest(trial: optuna.Trial, name: str, value: Range) -> float:
    if value.low == value.high:
        return value.low
    return trial.suggest_float(name, value.low, value.high, log=value.log)


def _suggest_int(trial: optuna.Trial, name: str, value: IntRange) -> int:
    return value.low if value.low == value.high else trial.suggest_int(name, value.low, value.high)


def op_choices(space: Space, channels: int) -> list[str]:
    """The ops a trial may choose: the space's allow-list (or the catalogue) less its deny-list, less
    the colour ops on grey data; in the order the space lists them."""
    allowed = op_names(channels)
    excluded = set(space.policy.exclude)
    return [name for name in (space.policy.ops or allowed) if name in allowed and name not in excluded]


def _op(trial: optuna.Trial, name: str, choices: list[str]) -> OpChoice:
    """One searched op: which (categorical ``name``), its p and magnitude (``name_p``, ``name_m``)."""
    op = trial.suggest_categorical(name, choices)
    return OpChoice(
        op, trial.suggest_float(f"{name}_p", 0.0, 1.0), trial.suggest_float(f"{name}_m", 0.0, 1.0)
    )


def sample_mixing(trial: optuna.Trial, space: Space) -> MixSettings:
    """The batch mixing of a trial; ``mix_p`` and ``mix_alpha`` exist only in trials whose kind mixes."""
    kinds = space.mixing.kinds
    kind = kinds[0] if len(kinds) == 1 else trial.suggest_categorical("mix_kind", list(kinds))
    if kind == "none":
        return NO_MIXING
    return MixSettings(
        kind, _suggest(trial, "mix_p", space.mixing.p), _suggest(trial, "mix_alpha", space.mixing.alpha)
    )


def sample_training(trial: optuna.Trial, space: Space) -> TrainSettings:
    """A trial's budget: ``space.trial`` with the searched ``lr``, ``epochs`` and ``batch_size``."""
    search, settings = space.trial_search, space.trial
    if search.lr is not None:
        settings = replace(settings, lr=_suggest(trial, "lr", search.lr))
    if search.epochs:
        settings = replace(settings, epochs=trial.suggest_categorical("epochs", list(search.epochs)))
    if search.batch_size:
        settings = replace(
            settings, batch_size=trial.suggest_categorical("batch_size", list(search.batch_size))
        )
    return settings


def _temperature_end(trial: optuna.Trial, space: Space) -> float | None:
    """The KD temperature's schedule: None (constant) or the last epoch's T (``temperature_end``,
    suggested only in trials whose ``temperature_schedule`` is linear)."""
    kinds = space.kd.temperature_schedules
    kind = kinds[0] if len(kinds) == 1 else trial.suggest_categorical("temperature_schedule", list(kinds))
    if kind == "constant" or space.kd.temperature_end is None:
        return None
    return _suggest(trial, "temperature_end", space.kd.temperature_end)


def sample_synthesis(trial: optuna.Trial, space: Space) -> SynthesisSettings | None:
    """A trial's synthesis (None when the space has no ``synthesis:``): ``synth_ratio``, and only in
    trials with synthetic images (ratio > 0) ``synth_hard_labels`` and ``synth_augment``."""
    searched = space.synthesis
    if searched is None:
        return None
    ratio = _suggest(trial, "synth_ratio", searched.ratio)
    if ratio <= 0:
        return SynthesisSettings(0.0)

    def flag(name: str, choices: tuple[bool, ...]) -> bool:
        return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))

    return SynthesisSettings(
        ratio, flag("synth_hard_labels", searched.hard_labels), flag("synth_augment", searched.augment)
    )


def sample_policy(trial: optuna.Trial, space: Space, channels: int) -> Policy:
    """Ask the trial for every searched value of ``space``: its structure's ops, erasing, the fixed
    stages' switch, the batch mixing and the KD settings (parameter names: see the module docstring)."""
    choices, structure = op_choices(space, channels), space.policy
    fixed = space.fixed
    if space.fixed_searched and not trial.suggest_categorical("fixed_on", [True, False]):
        fixed = ()
    ops: tuple[OpChoice, ...] = ()
    subpolicies: tuple[tuple[OpChoice, ...], ...] = ()
    randaugment = trivial = erasing = None
    if structure.structure == "slots" and choices:
        ops = tuple(_op(trial, f"op{slot}", choices) for slot in range(structure.slots))
    elif structure.structure == "subpolicies" and choices:
        subpolicies = tuple(
            tuple(_op(trial, f"sp{k}_op{j}", choices) for j in range(structure.length))
            for k in range(structure.subpolicies)
        )
    elif structure.structure == "randaugment":
        n = _suggest_int(trial, "ra_n", structure.n)
        randaugment = RandAugment(n, _suggest(trial, "ra_m", structure.m), tuple(choices))
    elif structure.structure == "trivial":
        trivial = Trivial(tuple(choices))
    if structure.erasing is not None:
        erasing = Erasing(
            _suggest(trial, "erasing_p", structure.erasing.p),
            _suggest(trial, "erasing_size", structure.erasing.size),
        )
    mix = sample_mixing(trial, space)
    losses = space.kd.losses
    loss = losses[0] if len(losses) == 1 else trial.suggest_categorical("kd_loss", list(losses))
    temperature = _suggest(trial, "temperature", space.kd.temperature)
    alpha = _suggest(trial, "alpha", space.kd.alpha)
    # β exists only for DKD: a conditional parameter, absent from the trials that chose Hinton.
    beta = _suggest(trial, "beta", space.kd.beta) if loss == "dkd" and space.kd.beta else None
    kd = KDSettings(temperature, alpha, loss, beta, _temperature_end(trial, space))
    schedule = sample_schedule(trial, space.schedule)
    synthesis = sample_synthesis(trial, space)
    return Policy(
        fixed, ops, kd, mix, subpolicies, randaugment, trivial, erasing, schedule=schedule,
        synthesis=synthesis,
    )  # fmt: skip


def randaugment_block(ops: list[str] | tuple[str, ...], n: int, magnitude: float) -> A.SomeOf:
    """RandAugment's per-image step: ``n`` draws with replacement from the identity and ``ops``."""
    return A.SomeOf([A.NoOp(p=1.0), *[make_op(op, magnitude, 1.0) for op in ops]], n=n, replace=True, p=1.0)


def trivial_block(ops: list[str] | tuple[str, ...], magnitude: float = 1.0) -> A.OneOf:
    """TrivialAugment's per-image step: one of the identity and ``ops``, at magnitude 1 (strength
    then drawn uniformly up to the maximum by the op itself; a strength schedule may lower it)."""
    return A.OneOf([A.NoOp(p=1.0), *[make_op(op, magnitude, 1.0) for op in ops]], p=1.0)


def build_transform(policy: Policy, seed: int | None = None) -> A.Compose:
    """The albumentations pipeline of ``policy``: fixed stages, each slot op with its p, one uniformly
    chosen sub-policy (a ``OneOf`` of ``Sequential`` s; AutoAugment), RandAugment's ``SomeOf``,
    TrivialAugment's ``OneOf``, Cutout. Pure: the same policy always gives the same pipeline."""
    stages = [getattr(A, stage.name)(**stage.args) for stage in policy.fixed]
    stages += [make_op(op.name, op.magnitude, op.p) for op in policy.ops]
    if policy.subpolicies:
        sequences = [
            A.Sequential([make_op(op.name, op.magnitude, op.p) for op in sub], p=1.0)
            for sub in policy.subpolicies
        ]
        stages.append(A.OneOf(sequences, p=1.0))
    if policy.randaugment and policy.randaugment.n > 0:
        stages.append(
            randaugment_block(policy.randaugment.ops, policy.randaugment.n, policy.randaugment.magnitude)
        )
    if policy.trivial:
        stages.append(trivial_block(policy.trivial.ops, policy.trivial.magnitude))
    if policy.erasing:
        stages.append(make_erasing(policy.erasing.size, policy.erasing.p))
    return A.Compose(stages, seed=seed)


def scale_policy(policy: Policy, strength: float) -> Policy:
    """``policy`` at ``strength`` s in [0, 1] (augsearch/schedule.py): every searched magnitude times s
    (slot and sub-policy ops, RandAugment's M, TrivialAugment's magnitude, Cutout's hole size) and, when
    the schedule says ``scale_p``, every searched probability too. Fixed stages, KD and mixing are left
    as they are. ``scale_policy(policy, 1.0) == policy``: strength 1 is the policy as searched."""
    STRENGTH.check("strength", strength)
    if strength == 1.0:
        return policy
    p_scale = strength if policy.schedule.scale_p else 1.0

    def op(choice: OpChoice) -> OpChoice:
        return OpChoice(choice.name, choice.p * p_scale, choice.magnitude * strength)

    ra, trivial, erasing = policy.randaugment, policy.trivial, policy.erasing
    return replace(
        policy,
        ops=tuple(op(choice) for choice in policy.ops),
        subpolicies=tuple(tuple(op(choice) for choice in sub) for sub in policy.subpolicies),
        randaugment=None if ra is None else replace(ra, magnitude=ra.magnitude * strength),
        trivial=None if trivial is None else replace(trivial, magnitude=trivial.magnitude * strength),
        erasing=None if erasing is None else Erasing(erasing.p * p_scale, erasing.size * strength),
    )


def build_transform_at(policy: Policy, strength: float, seed: int | None = None) -> A.Compose:
    """The pipeline of ``policy`` at ``strength`` (:func:`scale_policy`, then :func:`build_transform`);
    at strength 1 it is ``build_transform(policy)``, the pipeline an exported file stores. Pure."""
    return build_transform(scale_policy(policy, strength), seed)

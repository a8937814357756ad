"""KD-fair rows: every KD baseline also with the searched KD settings, and the ablation's corner.

Why: the searched policy comes with its own tuned KD settings (loss, T, α, and β for DKD), while the
baselines of ``augsearch/baselines.py`` use the space's fixed ones (Hinton's T=4, α=0.9 by default). A
win over them then mixes two things: the augmentation, and a better T and α that any practitioner would
have tuned anyway. Reviewers of augmentation and KD papers ask that every compared method get the same
KD settings and the same tuning budget; these rows give the report what it needs to say which part of
the gain comes from where (``augsearch/ablation.py``).

Row names (what ``augsearch retrain --baselines`` and a space's ``baselines.names`` accept):

- ``none``, ``standard``, ``randaugment``, ``trivialaugment``, ``student-alone``: as in baselines.py,
  the KD ones with the space's fixed KD settings (``baselines.temperature``, ``baselines.alpha``).
- ``NAME+searched-kd`` for the four KD baselines: the same augmentation with the best trial's KD
  settings, every one of them (loss, T, α, β).
- ``kd-tuned``: the standard augmentation (or none) with the best KD settings of a KD-only search of
  the same number of trials (``augsearch/kdtuned.py``).
- ``searched+fixed-kd``: the best trial's augmentation (and batch mixing) with the fixed KD settings:
  the ablation's third corner, reported as kind ``ablation`` (not a baseline the verdict compares with).
- ``searched+constant-strength``: the best trial's policy with its strength schedule off (s = 1 all
  run long): what the schedule or controller adds (augsearch/schedule.py). Only when that schedule is
  not constant already; kind ``ablation``.
- ``searched-no-synthesis``: the best trial's policy without its synthetic images (ratio 0): what the
  generator adds (augsearch/synthesis.py). Only when the best trial draws synthetic images; kind
  ``ablation``.

The last two are what a user asks of a searched schedule or synthesis: the same policy, the same KD
settings and seeds, with only that one part taken away.
"""

from __future__ import annotations

from dataclasses import replace

from augsearch.baselines import BASELINES, Candidate, baseline
from augsearch.errors import UserError
from augsearch.policy import KDSettings, Policy
from augsearch.schedule import CONSTANT

KD_BASELINES = ("none", "standard", "randaugment", "trivialaugment")  # the baselines that distil
SEARCHED_KD = "+searched-kd"  # suffix of a KD baseline run with the searched KD settings
KD_TUNED = "kd-tuned"
SEARCHED_FIXED_KD = "searched+fixed-kd"
CONSTANT_STRENGTH = "searched+constant-strength"  # the best policy with its strength schedule off
NO_SYNTHESIS = "searched-no-synthesis"  # the best policy without its synthetic images
TWINS = (CONSTANT_STRENGTH, NO_SYNTHESIS)  # the best policy less one part: run only where it has it
KD_KINDS = (
    "fixed",
    "searched",
)  # ``baselines.kd`` / ``--baselines-kd``: which KD settings a KD baseline gets
FAIR = tuple(name + SEARCHED_KD for name in KD_BASELINES)
ROWS = (*BASELINES, *FAIR, KD_TUNED, SEARCHED_FIXED_KD, *TWINS)  # every row ``--baselines all`` asks for


def parse_rows(text: str) -> tuple[str, ...]:
    """``all`` (every row in :data:`ROWS`) or a comma-separated list of row names; '' for none."""
    if text.strip() == "all":
        return ROWS
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    for name in names:
        if name not in ROWS:
            raise UserError(f"unknown baseline '{name}'; choose from {', '.join(ROWS)} or all")
    return names


def parse_kinds(text: str) -> tuple[str, ...]:
    """``fixed``, ``searched`` or ``fixed,searched`` (``--baselines-kd``)."""
    kinds = tuple(dict.fromkeys(kind.strip() for kind in text.split(",") if kind.strip()))
    if not kinds or any(kind not in KD_KINDS for kind in kinds):
        raise UserError(f"--baselines-kd: expected fixed, searched or fixed,searched, got {text!r}")
    return kinds


def expand(names: tuple[str, ...], kinds: tuple[str, ...]) -> tuple[str, ...]:
    """Each plain KD baseline in ``names`` with the KD settings ``kinds`` asks for: ``fixed`` keeps
    ``standard``, ``searched`` adds ``standard+searched-kd`` (``searched`` alone: only that one). Other
    names stay as they are; the order is kept, each name once."""
    out: list[str] = []
    for name in names:
        if name in KD_BASELINES:
            out += [name] if "fixed" in kinds else []
            out += [name + SEARCHED_KD] if "searched" in kinds else []
        else:
            out.append(name)
    return tuple(dict.fromkeys(out))


def fixed_kd(temperature: float, alpha: float) -> KDSettings:
    """The baselines' fixed KD settings (Hinton's loss, the space's ``baselines`` T and α)."""
    return KDSettings(temperature, alpha)


def fair_candidates(
    names: tuple[str, ...], best: Candidate | None, fixed: KDSettings, standard: Policy, channels: int
) -> list[Candidate]:
    """The ``NAME+searched-kd`` and ``searched+fixed-kd`` rows among ``names``, in their order.

    ``best`` is the best trial's candidate (``augsearch/retrain.py: searched``); its KD settings are the
    "searched KD" of every KD-fair row. ``standard`` is the fixed stages alone, as for the baselines."""
    wanted = [name for name in names if name in FAIR or name == SEARCHED_FIXED_KD]
    twins = [name for name in names if name in TWINS]
    if wanted and (best is None or best.kd is None):
        raise UserError(
            f"rows {', '.join(wanted)} need the searched KD settings: the study has no completed trial"
        )
    out = []
    for name in wanted:
        if name == SEARCHED_FIXED_KD:
            label = f"{SEARCHED_FIXED_KD} (trial {best.trial})"
            out.append(
                Candidate(
                    label,
                    best.transform,
                    fixed,
                    best.trial,
                    best.mix,
                    kind="ablation",
                    kd_source="fixed",
                    policy=best.policy,  # its schedule and synthesis run too: only the KD settings differ
                    synthesis=best.synthesis,
                )
            )
            continue
        row = baseline(name.removesuffix(SEARCHED_KD), standard, best.kd, channels)
        out.append(Candidate(name, row.transform, best.kd, kind="baseline", kd_source="searched"))
    return out + [twin for name in twins if (twin := twin_candidate(name, best)) is not None]


def twin_candidate(name: str, best: Candidate | None) -> Candidate | None:
    """The best trial's candidate with one part taken away (:data:`TWINS`), or None when it has no such
    part to take away (a constant schedule, no synthetic images), or no trial completed: the row would
    then be the searched row itself, so ``--baselines all`` leaves it out."""
    policy = None if best is None else best.policy
    if policy is None:
        return None
    if name == CONSTANT_STRENGTH and not policy.schedule.constant:
        policy = replace(policy, schedule=CONSTANT)
        return replace(best, name=f"{name} (trial {best.trial})", kind="ablation", policy=policy)
    if name == NO_SYNTHESIS and best.synthesis is not None and best.synthesis.active:
        policy = replace(policy, synthesis=None)
        return replace(
            best, name=f"{name} (trial {best.trial})", kind="ablation", policy=policy, synthesis=None
        )
    return None

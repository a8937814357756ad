"""The ablation: how much of the searched policy's gain comes from its KD settings and how much from
its augmentation, each part a paired mean difference with its 95% t-interval.

Definitions, with b the KD baseline (none, standard, randaugment, trivialaugment) whose row with the
searched KD settings is the strongest (the most demanding comparison for the augmentation), and every
difference taken seed by seed on the seeds all rows share (augsearch/stats.py: paired_difference):

- gain               = (searched policy + searched KD) − (b + fixed KD)
- from KD settings   = (b + searched KD) − (b + fixed KD)
- from augmentation  = (searched policy + searched KD) − (b + searched KD)

so that gain = from KD settings + from augmentation, per seed and therefore in the mean. The order of the
two steps matters when they interact; with the ``searched+fixed-kd`` row the other order is given too:
augmentation at the fixed KD = (searched policy + fixed KD) − (b + fixed KD), and KD settings on the
searched policy = (searched policy + searched KD) − (searched policy + fixed KD).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from augsearch.fair import KD_BASELINES, SEARCHED_FIXED_KD, SEARCHED_KD
from augsearch.stats import Difference, paired_difference


class RowLike(Protocol):
    name: str
    kind: str
    mean: float
    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]


@dataclass(frozen=True)
class Split:
    baseline: str  # b: the KD baseline the gain is measured from
    seeds: tuple[int, ...]  # the seeds every row of the split shares
    gain: Difference
    kd: Difference  # from KD settings
    augmentation: Difference  # from augmentation
    augmentation_at_fixed_kd: Difference | None = None  # the other order (needs searched+fixed-kd)
    kd_on_searched: Difference | None = None


def _by_seed(row: RowLike) -> dict[int, float]:
    return dict(zip(row.seeds, row.accuracies, strict=True))


def split(rows: Sequence[RowLike]) -> Split | None:
    """The split of the first searched row's gain, or None when a row it needs is missing."""
    named = {row.name: row for row in rows}
    searched = next((row for row in rows if row.kind == "searched"), None)
    pairs = [
        (named[b], named[b + SEARCHED_KD]) for b in KD_BASELINES if b in named and b + SEARCHED_KD in named
    ]
    if searched is None or not pairs:
        return None
    base, fair = max(pairs, key=lambda pair: pair[1].mean)
    ablated = next((row for row in rows if row.name.startswith(SEARCHED_FIXED_KD)), None)
    tables = [_by_seed(row) for row in (searched, base, fair)]
    seeds = sorted(set.intersection(*(set(table) for table in tables)))
    if not seeds:
        return None
    s, b, f = ([table[seed] for seed in seeds] for table in tables)
    other: tuple[Difference | None, Difference | None] = (None, None)
    if ablated is not None and set(seeds) <= set(ablated.seeds):
        a = [_by_seed(ablated)[seed] for seed in seeds]
        other = (paired_difference(a, b), paired_difference(s, a))
    return Split(
        base.name,
        tuple(seeds),
        paired_difference(s, b),
        paired_difference(f, b),
        paired_difference(s, f),
        *other,
    )


def _points(difference: Difference) -> str:
    text = f"{difference.mean * 100:+.2f} points"
    if difference.low is None or difference.high is None:
        return f"{text} (one seed: no interval)"
    return f"{text}, 95% interval [{difference.low * 100:+.2f}, {difference.high * 100:+.2f}]"


def describe(found: Split) -> list[str]:
    """The report's lines for the split."""
    b = found.baseline
    lines = [
        f"ablation, paired over {len(found.seeds)} seed(s), from {b} (the KD baseline strongest with the "
        "searched KD):",
        f"  gain = searched policy + searched KD - {b} + fixed KD: {_points(found.gain)}",
        f"  from KD settings = {b}{SEARCHED_KD} - {b}: {_points(found.kd)}",
        f"  from augmentation = searched policy + searched KD - {b}{SEARCHED_KD}: "
        f"{_points(found.augmentation)}",
    ]
    if found.augmentation_at_fixed_kd is not None and found.kd_on_searched is not None:
        lines += [
            f"  other order: augmentation at fixed KD = searched+fixed-kd - {b}: "
            f"{_points(found.augmentation_at_fixed_kd)}",
            f"  other order: KD settings on the searched policy = searched policy - searched+fixed-kd: "
            f"{_points(found.kd_on_searched)}",
        ]
    return lines


def as_dict(found: Split) -> dict[str, Any]:
    """JSON-ready, points as fractions of 1 like the accuracies."""

    def part(difference: Difference | None) -> dict[str, Any] | None:
        if difference is None:
            return None
        keys = ("mean", "low", "high", "n", "sd", "confidence")
        return {key: getattr(difference, key) for key in keys} | {"word": difference.word}

    return {
        "baseline": found.baseline,
        "seeds": list(found.seeds),
        "gain": part(found.gain),
        "from_kd_settings": part(found.kd),
        "from_augmentation": part(found.augmentation),
        "augmentation_at_fixed_kd": part(found.augmentation_at_fixed_kd),
        "kd_settings_on_searched": part(found.kd_on_searched),
    }

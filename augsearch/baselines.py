"""The policies a searched one must beat, built the same way for every study.

All baselines train the same student for the same epochs with the same optimiser and seeds as the
searched policy; the KD baselines use the space's baseline KD settings (Hinton's usual T=4, α=0.9 by
default), so the searched row's edge includes what searching T and α together with the policy bought.

- ``none``: no augmentation, KD.
- ``standard``: the space's fixed stages (the dataset's usual recipe, e.g. pad + crop + flip), KD.
- ``randaugment``: standard, then N=2 ops drawn per image with replacement from the RandAugment list at
  magnitude 0.3 (M=9 of 30), KD (Cubuk et al. 2020, "RandAugment"). Our ops sample their strength up
  to the magnitude rather than exactly at it, hence "RandAugment-like".
- ``trivialaugment``: standard, then one op per image chosen uniformly at magnitude 1 — our ops then draw
  the strength uniformly up to the maximum, which is TrivialAugment's uniform magnitude (Müller & Hutter
  2021, "TrivialAugment"), KD.
- ``student-alone``: standard augmentation, no KD: what the student reaches without a teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A

from augsearch.errors import UserError
from augsearch.mixing import NO_MIXING, MixSettings
from augsearch.ops import op_names
from augsearch.policy import KDSettings, Policy, build_transform, randaugment_block, trivial_block
from augsearch.synthesis import SynthesisSettings

BASELINES = ("none", "standard", "randaugment", "trivialaugment", "student-alone")
# RandAugment's list (identity, autocontrast, equalize, rotate, solarize, color, posterize, contrast,
# brightness, sharpness, shear, translate) mapped onto the catalogue; colour ops only for RGB.
RANDAUGMENT_OPS = (
    "AutoContrast", "Equalize", "Rotate", "Solarize", "Posterize",
    "RandomBrightnessContrast", "Sharpen", "Affine", "HueSaturationValue",
)  # fmt: skip
RANDAUGMENT_N, RANDAUGMENT_M = 2, 0.3  # ops per image, magnitude (M=9 of RandAugment's 30)


@dataclass(frozen=True)
class Candidate:
    """A policy to retrain: name, pipeline (None: no augmentation), KD settings (None: no KD), the
    batch mixing applied after the pipeline (none for every baseline), where its KD settings come from,
    the searched policy (its strength schedule) and the synthetic images appended to each batch (none
    for every baseline: they are what synthesis is measured against)."""

    name: str
    transform: A.Compose | None
    kd: KDSettings | None
    trial: int | None = None
    mix: MixSettings = NO_MIXING
    # None: "searched" for a trial's policy, else "baseline"; "ablation" for augsearch/fair.py's
    # searched+fixed-kd row (reported, never the verdict's rival)
    kind: str | None = None
    kd_source: str | None = None  # "fixed", "searched" or "kd-tuned" (augsearch/fair.py); None: as before
    policy: Policy | None = None  # a searched candidate's policy: its strength schedule is run (retrain.py)
    synthesis: SynthesisSettings | None = None  # synthetic images per batch (searched policies only)


def baseline(name: str, standard: Policy, kd: KDSettings, channels: int) -> Candidate:
    """Build the named baseline on top of ``standard`` (the fixed stages alone, no searched ops)."""
    usable = op_names(channels)
    extra: list[A.BasicTransform] = []
    if name == "randaugment":
        ops = [op for op in RANDAUGMENT_OPS if op in usable]
        extra = [randaugment_block(ops, RANDAUGMENT_N, RANDAUGMENT_M)]
    elif name == "trivialaugment":
        extra = [trivial_block(usable)]
    elif name not in BASELINES:
        raise UserError(f"unknown baseline '{name}'; choose from {', '.join(BASELINES)} or all")
    if name == "none":
        return Candidate(name, None, kd)
    transform = build_transform(standard)
    if extra:
        transform = A.Compose([*transform.transforms, *extra])
    return Candidate(name, transform, None if name == "student-alone" else kd)

"""One table of bounds per policy setting, shared by the space parser (augsearch/space.py), the policy-file
checks (augsearch/validate.py) and the policy dataclasses' ``__post_init__`` (augsearch/policy.py,
augsearch/mixing.py): what a space may search is exactly what a policy file may hold and a policy may carry.

Where the three used to disagree, the space's bounds won (no shipped space, baseline or test needs wider):
the KD temperature is in [0.1, 100] and DKD's beta in [0, 100] (policy files took [0.001, 1000] and
[0, 1000]), and mixing's alpha in [0.01, 100] (files took [0.001, 1000], the dataclass any alpha > 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bound:
    """A closed interval ``[low, high]``; ``integer``: whole numbers only."""

    low: float
    high: float
    integer: bool = False

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is a number (a bool is not one) of the right kind inside the interval."""
        kinds = (int,) if self.integer else (int, float)
        return not isinstance(value, bool) and isinstance(value, kinds) and self.low <= value <= self.high

    def check(self, name: str, value: Any) -> None:
        """ValueError unless :meth:`holds`; for the dataclasses, whose callers checked their input already."""
        if not self.holds(value):
            raise ValueError(f"{name} must be in [{self.low}, {self.high}], got {value!r}")


PROBABILITY = Bound(0.0, 1.0)  # an op's, Cutout's and batch mixing's probability
MAGNITUDE = Bound(0.0, 1.0)  # an op's strength, 0 (identity) to 1 (the catalogue's maximum, augsearch/ops.py)
TEMPERATURE = Bound(0.1, 100.0)  # KD temperature T
KD_ALPHA = Bound(0.0, 1.0)  # Hinton: KD vs cross-entropy; DKD: TCKD's weight
DKD_BETA = Bound(0.0, 100.0)  # DKD: NCKD's weight (the authors use 8)
MIX_ALPHA = Bound(0.01, 100.0)  # mixup / CutMix: λ ~ Beta(α, α)
ERASING_SIZE = Bound(0.0, 0.9)  # Cutout's hole side, of the image's; albumentations reads 1.0 as 1 px
RANDAUGMENT_N = Bound(0, 16, integer=True)  # RandAugment's ops per image
# Strength schedules (augsearch/schedule.py): strength s scales the searched magnitudes, 0 (identity) to 1
STRENGTH = Bound(0.0, 1.0)
AGREEMENT_TARGET = Bound(0.0, 1.0)  # the set-point of teacher-student top-1 agreement
LOSS_RATIO_TARGET = Bound(0.1, 10.0)  # the set-point of the KD loss over its running mean
STRENGTH_STEP = Bound(1e-4, 0.5)  # how far one controller step moves s
CONTROL_INTERVAL = Bound(1, 100_000, integer=True)  # training steps between two controller steps
SYNTHESIS_RATIO = Bound(
    0.0, 0.9
)  # synthetic share of a batch; 0.9 already appends 9 synthetic per real image
SYNTHESIS_AGREEMENT = Bound(0.0, 1.0)  # the teacher-agreement floor below which a generator is refused

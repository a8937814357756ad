"""Batch-level mixing (mixup, CutMix): settings here; applied on the device after the per-image pipeline.

Mixing combines two images of a batch, so it cannot live in the per-image albumentations pipeline;
it is applied to the normalised batch in the training loop, and the teacher sees the same mixed
batch as the student (function matching: Beyer et al. 2022, "Knowledge distillation: A good teacher
is patient and consistent").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIX_KINDS = ("none", "mixup", "cutmix")


@dataclass(frozen=True)
class MixSettings:
    """``kind`` of mixing, applied to a whole batch with probability ``p``; λ ~ Beta(``alpha``, ``alpha``).

    mixup: Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization". CutMix: Yun et al. 2019,
    "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features".
    """

    kind: str = "none"
    p: float = 0.0
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in MIX_KINDS:
            raise ValueError(f"unknown mixing {self.kind!r}; expected one of {', '.join(MIX_KINDS)}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"mixing probability must be in [0, 1], got {self.p}")
        if not self.alpha > 0:
            raise ValueError(f"mixing alpha must be positive, got {self.alpha}")

    @property
    def active(self) -> bool:
        """Whether any batch can be mixed at all."""
        return self.kind != "none" and self.p > 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "p": self.p, "alpha": self.alpha}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MixSettings:
        """The inverse of :meth:`to_dict`; ``KeyError``/``TypeError``/``ValueError`` on malformed data."""
        return cls(str(data["kind"]), float(data["p"]), float(data["alpha"]))


NO_MIXING = MixSettings()

"""Batch-level mixing (mixup, CutMix): the settings, and :func:`mix_batch`, applied on the device after
the per-image pipeline.

Mixing combines two images of a batch, so it cannot live in the per-image albumentations pipeline;
it is applied to the normalised batch in the training loop, and the teacher sees the same mixed
batch as the student (function matching: Beyer et al. 2022, "Knowledge distillation: A good teacher
is patient and consistent"). The loss against the two label sets is
:func:`augsearch.distill.distillation_loss` with ``targets_b`` and ``lam``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from augsearch.bounds import MIX_ALPHA, PROBABILITY

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
        PROBABILITY.check("mixing probability", self.p)
        MIX_ALPHA.check("mixing alpha", self.alpha)

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


@dataclass(frozen=True)
class Mixed:
    """A batch after :func:`mix_batch`: the loss is ``lam · loss(labels_a) + (1 − lam) · loss(labels_b)``.

    Unmixed batches have ``lam == 1.0`` and ``labels_b is labels_a``.
    """

    images: torch.Tensor
    labels_a: torch.Tensor
    labels_b: torch.Tensor
    lam: float

    @property
    def applied(self) -> bool:
        """Whether any pixel came from another image (a CutMix box can be empty when λ is near 1)."""
        return self.lam < 1.0


def mix_batch(
    images: torch.Tensor, labels: torch.Tensor, settings: MixSettings, generator: torch.Generator
) -> Mixed:
    """Mix a normalised (B, C, H, W) ``images`` batch with a random permutation of itself, with
    probability ``settings.p``; on any device, with every random draw taken from ``generator`` (a CPU
    ``torch.Generator``), so a seeded generator gives the same batches on every device.

    - mixup (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization"):
      ``x = λ·x + (1 − λ)·x[perm]``, λ ~ Beta(α, α).
    - CutMix (Yun et al. 2019, "CutMix: Regularization Strategy to Train Strong Classifiers with
      Localizable Features"): a box of ``int(H·√(1 − λ))`` by ``int(W·√(1 − λ))`` pixels, centred on a
      uniformly drawn pixel and clipped to the image, is pasted from ``x[perm]``; λ is then recomputed
      as ``1 − box area / (H·W)``, so it is the share of pixels that really come from ``x``.

    Draws, in order: u ~ U[0, 1) (the batch is mixed when u < p), ``perm`` = ``torch.randperm(B)``, λ
    (NumPy's Beta sampler seeded by one ``torch.randint`` draw: torch has no seeded Beta), and for
    CutMix the centre row then column (``torch.randint``). Settings that never mix draw nothing.
    ``perm`` may map an image onto itself, as in both papers' code.

    Outside augsearch (a user of an exported policy): after the per-image pipeline and your
    normalisation, per training batch::

        generator = torch.Generator().manual_seed(0)          # once
        mixed = mix_batch(images, labels, MixSettings.from_dict(policy["mixing"]), generator)
        logits = student(mixed.images)                       # and teacher(mixed.images) for KD
        ce = F.cross_entropy
        loss = mixed.lam * ce(logits, mixed.labels_a) + (1 - mixed.lam) * ce(logits, mixed.labels_b)

    (in augsearch: ``distillation_loss(logits, teacher_logits, mixed.labels_a, kd, mixed.labels_b,
    mixed.lam)``, which weighs every part of the KD loss that way).
    """
    unmixed = Mixed(images, labels, labels, 1.0)
    if not settings.active or torch.rand((), generator=generator).item() >= settings.p:
        return unmixed
    perm = torch.randperm(images.shape[0], generator=generator)
    seed = int(torch.randint(2**62, (), generator=generator))
    lam = float(np.random.default_rng(seed).beta(settings.alpha, settings.alpha))
    perm_device = perm.to(images.device, non_blocking=True)
    labels_b = labels[perm_device]
    if settings.kind == "mixup":
        return Mixed(images * lam + images[perm_device] * (1 - lam), labels, labels_b, lam)
    height, width = images.shape[-2:]
    y0, y1, x0, x1 = cutmix_box(height, width, lam, generator)
    out = images.clone()
    out[:, :, y0:y1, x0:x1] = images[perm_device, :, y0:y1, x0:x1]
    return Mixed(out, labels, labels_b, 1.0 - (y1 - y0) * (x1 - x0) / (height * width))


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """CutMix's box (Yun et al. 2019, Algorithm A1) as ``(top, bottom, left, right)``, bottom and
    right exclusive: sides ``int(H·√(1 − λ))`` and ``int(W·√(1 − λ))``, so the unclipped box covers
    about 1 − λ of the image, centred on a pixel drawn uniformly (row, then column), clipped to the
    image. (The authors' code spans ``centre ± side // 2``, one pixel short for odd sides; here the
    unclipped box has exactly the drawn side.)"""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(height, (), generator=generator))
    cx = int(torch.randint(width, (), generator=generator))
    top, left = cy - cut_h // 2, cx - cut_w // 2
    return (
        min(max(top, 0), height),
        min(max(top + cut_h, 0), height),
        min(max(left, 0), width),
        min(max(left + cut_w, 0), width),
    )

"""The op catalogue: one table that maps a magnitude in [0, 1] to albumentations arguments.

Why one table: how strong "magnitude 0.7 of Rotate" is, is data, not code. AutoAugment (Cubuk et al.,
CVPR 2019), RandAugment (Cubuk et al., CVPR Workshops 2020) and TrivialAugment (Müller & Hutter, ICCV
2021) all describe an op as (name, probability, magnitude) and keep the magnitude -> parameter mapping in
one place; so do we. The search, the policy serialiser and the reports only ever see names, probabilities
and magnitudes, and every op is built here, by :func:`make_op`.

What a magnitude means: ``m = 0`` is the mildest setting and ``m = 1`` the strongest sensible one (e.g.
rotation up to ±30°, shear up to ±17.2° (0.3 rad), translation up to 30 % of the side, 4-bit posterize,
solarize above half the range, brightness/contrast ±0.5). Where albumentations samples a range, ``m`` sets
its far end: signed ops sample in ``(-x(m), x(m))``, unsigned ones between the identity and ``x(m)``, so,
as in TrivialAugment, each application draws a strength up to ``m``. At ``m = 0`` most ops are the
identity; a few are only near it because 2.0.8 allows nothing milder: GridDistortion (its grid resamples
by up to a pixel), MotionBlur (3-pixel kernel), PlanckianJitter (6000 K white point), Solarize (only the
maximum value flips), ImageCompression (JPEG quality 100). Magnitude-free ops (HorizontalFlip, Equalize,
AutoContrast, InvertImg, ChannelShuffle, ToGray) ignore ``m``.

Size: arguments are fractions of the image side or of the value range, never pixels (blur kernels
excepted, kept small), and geometric ops fill the border with constant 0, so an op means the same on
28x28 and 224x224 images. Left out on purpose: RandomResizedCrop (needs a size), ElasticTransform (alpha
and sigma are pixels), OpticalDistortion (shifts half a pixel and blanks an edge even at k = 0) and
RGBShift (in 2.0.8 its ``to_dict`` output warns in ``from_dict``, so policies with it would not reload
cleanly). Every op round-trips through ``A.to_dict``/``A.from_dict``; the dict does not hold the Compose
seed, so whoever reloads a seeded pipeline calls ``set_random_seed`` again.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations otherwise checks PyPI on import

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2

from augsearch.bounds import ERASING_SIZE
from augsearch.errors import UserError

KINDS = ("geometric", "photometric", "noise", "blur", "erasing")
_BORDER = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0}


@dataclass(frozen=True)
class Op:
    """One row of the catalogue: an albumentations class and how magnitude maps to its arguments."""

    name: str  # the key, and the albumentations class name
    kind: str  # one of KINDS
    needs_color: bool  # True: only meaningful / only works on 3-channel images
    arguments: Callable[[float], dict[str, Any]]  # magnitude in [0, 1] -> keyword arguments (without p)

    def make(self, magnitude: float, p: float) -> A.BasicTransform:
        """Build the transform; the class is looked up by name so the table stays the single source."""
        return getattr(A, self.name)(**self.arguments(magnitude), p=p)


def _sym(x: float) -> tuple[float, float]:
    """Symmetric range (-x, x): signed ops (rotation, shift) pick a random direction."""
    return (-x, x)


def _around1(x: float) -> tuple[float, float]:
    """Multiplicative range (1 - x, 1 + x) around the identity factor 1."""
    return (1.0 - x, 1.0 + x)


def _odd(m: float, low: int, high: int) -> int:
    """Odd kernel size from ``low`` at m=0 to ``high`` at m=1 (blur kernels must be odd)."""
    return low + 2 * round(m * (high - low) / 2)


def _free(_: float) -> dict[str, Any]:
    """Arguments of a magnitude-free op."""
    return {}


def _op(name: str, kind: str, arguments: Callable[[float], dict[str, Any]], needs_color: bool = False) -> Op:
    return Op(name=name, kind=kind, needs_color=needs_color, arguments=arguments)


OPS: dict[str, Op] = {
    op.name: op
    for op in (
        # geometric: angles in degrees, shifts and distortions as fractions of the image side
        _op("Rotate", "geometric", lambda m: {"limit": _sym(30 * m), **_BORDER}),
        _op(
            "Affine",
            "geometric",
            lambda m: {"shear": _sym(17.2 * m), "translate_percent": _sym(0.3 * m), **_BORDER},
        ),
        _op("Perspective", "geometric", lambda m: {"scale": (0.0, 0.1 * m), **_BORDER}),
        _op("GridDistortion", "geometric", lambda m: {"distort_limit": _sym(0.3 * m), **_BORDER}),
        _op("HorizontalFlip", "geometric", _free),
        # photometric: fractions of the value range, so uint8 and float images mean the same
        _op(
            "RandomBrightnessContrast",
            "photometric",
            lambda m: {"brightness_limit": _sym(0.5 * m), "contrast_limit": _sym(0.5 * m)},
        ),
        _op("Equalize", "photometric", _free),
        _op("AutoContrast", "photometric", _free),
        _op("InvertImg", "photometric", _free),
        _op("Posterize", "photometric", lambda m: {"num_bits": (8 - round(4 * m), 8)}),
        _op("Solarize", "photometric", lambda m: {"threshold_range": (1.0 - 0.5 * m, 1.0)}),
        _op("Sharpen", "photometric", lambda m: {"alpha": (0.0, m), "lightness": (1.0, 1.0)}),
        _op("RandomGamma", "photometric", lambda m: {"gamma_limit": (100 / (1 + m), 100 * (1 + m))}),
        # noise and blur (blur kernels are pixels: the one place a size is unavoidable; kept small)
        _op("GaussNoise", "noise", lambda m: {"std_range": (0.0, 0.2 * m)}),
        _op("ImageCompression", "noise", lambda m: {"quality_range": (100 - round(90 * m), 100)}),
        _op(
            "GaussianBlur",
            "blur",
            lambda m: {"blur_limit": (3, _odd(m, 3, 9)), "sigma_limit": (0.1, 0.1 + 1.9 * m)},
        ),
        _op("MotionBlur", "blur", lambda m: {"blur_limit": (3, _odd(m, 3, 9))}),
        _op("Downscale", "blur", lambda m: {"scale_range": (1.0 - 0.75 * m, 1.0)}),
        # erasing (Cutout): hole sides as fractions of the image side
        _op(
            "CoarseDropout",
            "erasing",
            lambda m: {
                "num_holes_range": (1, 1 + round(3 * m)),
                "hole_height_range": (0.1 * m, 0.3 * m),
                "hole_width_range": (0.1 * m, 0.3 * m),
                "fill": 0,
            },
        ),
        # colour: need three channels
        _op(
            "HueSaturationValue",
            "photometric",
            lambda m: {
                "hue_shift_limit": _sym(30 * m),
                "sat_shift_limit": _sym(40 * m),
                "val_shift_limit": _sym(20 * m),
            },
            needs_color=True,
        ),
        _op(
            "ColorJitter",
            "photometric",
            lambda m: {
                "brightness": _around1(0.4 * m),
                "contrast": _around1(0.4 * m),
                "saturation": _around1(0.4 * m),
                "hue": _sym(0.1 * m),
            },
            needs_color=True,
        ),
        _op(
            "PlanckianJitter",
            "photometric",
            lambda m: {"temperature_limit": (round(6000 - 3000 * m), round(6000 + 9000 * m))},
            needs_color=True,
        ),
        _op("ChannelShuffle", "photometric", _free, needs_color=True),
        _op("ToGray", "photometric", lambda m: {"num_output_channels": 3}, needs_color=True),
    )
}


# The ``erasing`` structure of a space (Cutout: DeVries & Taylor 2017, "Improved Regularization of
# Convolutional Neural Networks with Cutout"): one square hole whose side is ``size`` of the image side,
# filled with 0, placed anywhere. The paper's CIFAR-10 setting, 16 of 32 pixels, is size 0.5. Unlike the
# catalogue's CoarseDropout row (1-4 holes, each side drawn up to 0.3 of the image), the searched
# quantity is the hole's size itself, as in the paper. Sizes stop at MAX_ERASING_SIZE: albumentations
# reads a float 1.0 as one pixel.
MAX_ERASING_SIZE = ERASING_SIZE.high
ERASING = _op(
    "CoarseDropout",
    "erasing",
    lambda size: {
        "num_holes_range": (1, 1),
        "hole_height_range": (size, size),
        "hole_width_range": (size, size),
        "fill": 0,
    },
)


def make_erasing(size: float, p: float) -> A.BasicTransform:
    """Cutout with probability ``p``: one hole of side ``size`` (a fraction of the image side)."""
    if not 0.0 <= size <= MAX_ERASING_SIZE:
        raise UserError(f"erasing: size must be in [0, {MAX_ERASING_SIZE}], got {size}")
    if not 0.0 <= p <= 1.0:
        raise UserError(f"erasing: probability must be in [0, 1], got {p}")
    return ERASING.make(float(size), float(p))


def op_names(channels: int) -> tuple[str, ...]:
    """Names usable on images with ``channels`` channels (colour ops are left out for grey images)."""
    if channels not in (1, 3):
        raise UserError(f"images must have 1 or 3 channels, got {channels}")
    return tuple(name for name, op in OPS.items() if channels == 3 or not op.needs_color)


def make_op(name: str, magnitude: float, p: float) -> A.BasicTransform:
    """Build catalogue op ``name`` at ``magnitude`` with probability ``p`` (both in [0, 1])."""
    op = OPS.get(name)
    if op is None:
        raise UserError(f"unknown op {name!r}; known ops: {', '.join(OPS)}")
    for what, value in (("magnitude", magnitude), ("probability", p)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{name}: {what} must be in [0, 1], got {value}")
    return op.make(float(magnitude), float(p))

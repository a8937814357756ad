"""Tests for the op catalogue: every op builds, keeps shape and dtype, warns about nothing, and reloads."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import warnings

import albumentations as A
import numpy as np
import pytest

from augsearch.errors import UserError
from augsearch.ops import KINDS, OPS, make_op, op_names

_RNG = np.random.default_rng(0)
GREY = _RNG.integers(0, 256, (28, 28, 1), dtype=np.uint8)
RGB = _RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
ODD_GREY = _RNG.integers(0, 256, (21, 25, 1), dtype=np.uint8)
ODD_RGB = _RNG.integers(0, 256, (21, 25, 3), dtype=np.uint8)
COLOR = [name for name, op in OPS.items() if op.needs_color]


def _gradient(height: int = 28, width: int = 28) -> np.ndarray:
    """A smooth grey image: unlike noise, small geometric changes move it only a little."""
    yy, xx = np.mgrid[0:height, 0:width]
    return (xx * 4 + yy * 4).astype(np.uint8)[..., None]


def _images(name: str) -> list[np.ndarray]:
    return [RGB, ODD_RGB] if OPS[name].needs_color else [GREY, RGB, ODD_GREY, ODD_RGB]


def _run(name: str, magnitude: float, image: np.ndarray, seed: int = 0) -> np.ndarray:
    return A.Compose([make_op(name, magnitude, 1.0)], seed=seed)(image=image)["image"]


def test_catalogue_shape() -> None:
    assert len(OPS) >= 18
    assert len(op_names(1)) >= 14
    for name, op in OPS.items():
        assert op.name == name
        assert op.kind in KINDS
        assert isinstance(getattr(A, name)(p=1.0), A.BasicTransform)  # the key is the class name
    assert {op.kind for op in OPS.values()} == set(KINDS)


def test_op_names_by_channels() -> None:
    assert op_names(3) == tuple(OPS)
    grey = op_names(1)
    assert not set(grey) & set(COLOR)
    assert set(grey) | set(COLOR) == set(OPS)
    with pytest.raises(UserError):
        op_names(2)


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("magnitude", [0.0, 1.0])
def test_every_op_keeps_shape_dtype_without_warnings(name: str, magnitude: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for image in _images(name):
            out = _run(name, magnitude, image)
            assert out.shape == image.shape
            assert out.dtype == image.dtype


@pytest.mark.parametrize("name", list(OPS))
def test_round_trip_through_dict(name: str) -> None:
    image = RGB if OPS[name].needs_color else GREY
    for magnitude in (0.0, 0.5, 1.0):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            original = A.Compose([make_op(name, magnitude, 1.0)], seed=7)
            rebuilt = A.from_dict(A.to_dict(original))
        rebuilt.set_random_seed(7)  # the seed is not part of the dict
        assert type(rebuilt.transforms[0]) is type(original.transforms[0])
        for _ in range(3):  # the two random streams stay in step over several calls
            assert np.array_equal(original(image=image)["image"], rebuilt(image=image)["image"])


def test_magnitude_zero_is_identity_for_parametric_ops() -> None:
    near = {"GridDistortion", "MotionBlur", "PlanckianJitter", "Solarize", "ImageCompression"}
    free = {name for name, op in OPS.items() if op.arguments(0.0) == op.arguments(1.0)}
    grey, rgb = _gradient(), np.repeat(_gradient(32, 32), 3, axis=2)
    for name in set(OPS) - near - free:
        image = rgb if OPS[name].needs_color else grey
        diff = np.abs(_run(name, 0.0, image).astype(float) - image).mean()
        assert diff < 0.5, name


def _mean_change(name: str, magnitude: float, image: np.ndarray) -> float:
    return float(
        np.mean([np.abs(_run(name, magnitude, image, s).astype(float) - image).mean() for s in range(8)])
    )


@pytest.mark.parametrize(
    "name", ["Rotate", "Affine", "RandomBrightnessContrast", "GaussNoise", "CoarseDropout"]
)
def test_magnitude_is_monotone(name: str) -> None:
    image = _gradient()
    changes = [_mean_change(name, m, image) for m in (0.0, 0.1, 1.0)]
    assert changes[0] < 0.5
    assert changes[0] <= changes[1] < changes[2]


def test_probability_zero_is_identity() -> None:
    for name in op_names(3):
        assert np.array_equal(A.Compose([make_op(name, 1.0, 0.0)], seed=0)(image=RGB)["image"], RGB)


@pytest.mark.parametrize(
    ("name", "magnitude", "p"),
    [
        ("NoSuchOp", 0.5, 0.5),
        ("Rotate", 1.5, 0.5),
        ("Rotate", -0.1, 0.5),
        ("Rotate", 0.5, -0.1),
        ("Rotate", 0.5, 1.01),
        ("Rotate", float("nan"), 0.5),
    ],
)
def test_make_op_rejects_bad_input(name: str, magnitude: float, p: float) -> None:
    with pytest.raises(UserError):
        make_op(name, magnitude, p)

"""An albumentations pipeline unrolled into plain functions of one image: same draws, same pixels.

Why: on 28x28 images albumentations' bookkeeping is a large share of a call. Per image, ``Compose``
checks shapes, builds and unpacks keyword dicts at every level and walks ``apply_with_params``;
``OneOf`` draws its branch with ``Generator.choice(p=...)``, which validates ``p`` on every call
(about 7 us, more than many ops). :func:`compile_pipeline` keeps everything that decides the output
and drops the rest: each container is replaced by a closure that makes exactly the draws its
``__call__`` makes, from the same generators, in the same order, and each transform still draws
and computes its own parameters and runs its own ``apply`` (for the usual fixed stages, Pad,
RandomCrop and HorizontalFlip, a NumPy stand-in that returns the same bytes: :func:`_kernel`). So a
seeded pipeline gives the same images through either path, byte for byte (tests/test_loader.py
checks it for Compose, OneOf, SomeOf, RandomOrder, Sequential and the catalogue's ops). Measured on
the `full-labels` space's policy, interleaved batches of 128: 76 against 114 us per image, 1.5x.

What is left out only matters for targets we never pass: shape-consistency checks between targets,
bbox/keypoint processors, ``applied_transforms`` tracking. A pipeline that needs any of them (a
Compose with processors, replay or deterministic mode, a container type not listed above) is not
compiled, and the caller applies the Compose itself. Generators are read at call time, never
captured, so ``set_random_seed`` after compiling (as the loader's workers do) still takes effect.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from functools import cache

import albumentations as A
import cv2
import numpy as np
from albumentations.core.transforms_interface import BasicTransform
from albumentations.core.utils import ensure_contiguous_output

Step = Callable[[np.ndarray, bool], np.ndarray]  # (image, force_apply) -> image
Pick = Callable[[np.random.Generator], int]


def compile_pipeline(transform) -> Callable[[np.ndarray], np.ndarray] | None:
    """``image -> transform(image=image)["image"]`` without the bookkeeping; None when not exact."""
    step = _compile(transform)
    if step is None:
        return None
    return lambda image: step(image, False)


def _compile(node) -> Step | None:
    if getattr(node, "replay_mode", False) or getattr(node, "deterministic", False):
        return None
    if isinstance(node, BasicTransform):
        return _leaf(node)
    kind = type(node)
    if (
        kind not in _CONTAINERS
        or getattr(node, "processors", None)
        or getattr(node, "check_each_transform", None)
    ):
        return None
    children = [_compile(child) for child in node.transforms]
    if any(child is None for child in children):
        return None
    return _CONTAINERS[kind](node, children)


def _compose(node: A.Compose | A.Sequential, children: list[Step]) -> Step:
    """``Compose.__call__``: one draw of its own (even at p = 1), then every child in order. Also
    ``Sequential.__call__``, whose ``force or draw`` makes no draw when forced (inside a OneOf)."""

    def run(image: np.ndarray, force: bool) -> np.ndarray:
        if force or node.py_random.random() < node.p:
            for child in children:
                image = child(image, False)
        return image

    return run


def _one_of(node: A.OneOf, children: list[Step]) -> Step:
    """``OneOf.__call__``: a p draw, then one child by its normalised p, applied with force."""
    weights = node.transforms_ps
    pick = _picker(weights)

    def run(image: np.ndarray, force: bool) -> np.ndarray:
        if weights and (force or node.py_random.random() < node.p):
            image = children[pick(node.random_generator)](image, True)
        return image

    return run


def _some_of(node: A.SomeOf, children: list[Step]) -> Step:
    """``SomeOf.__call__`` (and RandomOrder's, which only orders differently): ignores force."""

    def run(image: np.ndarray, force: bool) -> np.ndarray:
        if node.py_random.random() < node.p:
            for index in node._get_idx():  # the container's own draw: sorted for SomeOf, not for RandomOrder
                image = children[index](image, False)
        return image

    return run


_CONTAINERS: dict[type, Callable[..., Step]] = {
    A.Compose: _compose,
    A.OneOf: _one_of,
    A.SomeOf: _some_of,
    A.RandomOrder: _some_of,
    A.Sequential: _compose,
}


def _leaf(node: BasicTransform) -> Step:
    """``BasicTransform.__call__`` for an image alone: its own p draw, parameters and ``apply``.

    A transform that changes how it is called (its own ``__call__`` or ``apply_with_params``), or
    that needs targets other than the image, is called as itself: still exact, only slower.
    """
    kind = type(node)
    plain = (
        kind.__call__ is BasicTransform.__call__
        and kind.apply_with_params is BasicTransform.apply_with_params
        and set(node.targets_as_params) <= {"image"}
    )
    if not plain:
        return lambda image, force: node(image=image, force_apply=force)["image"]
    function = _kernel(node) or node.targets.get("image")

    def run(image: np.ndarray, force: bool) -> np.ndarray:
        node.params = {}
        if not node.should_apply(force_apply=force):
            return image
        data = {"image": image}
        params = node.update_transform_params(params=node.get_params(), data=data)
        params.update(node.get_params_dependent_on_data(params=params, data=data))
        node.params = params
        if function is None:
            return image
        return ensure_contiguous_output(function(ensure_contiguous_output(image), **params))

    return run


def _kernel(node: BasicTransform) -> Callable[..., np.ndarray] | None:
    """A NumPy stand-in for ``node.apply`` on the fixed stages of the usual recipe, or None.

    Pad (constant border), RandomCrop (no padding) and HorizontalFlip are in most policies, and on a
    28x28 image their ``apply`` is mostly decorator and OpenCV-call overhead around a copy or a
    slice (about 12 us of 17). Each stand-in returns the pixels ``apply`` returns (the caller makes
    them contiguous, as ``apply_with_params`` does), for the settings and images it checks; anything
    else goes to ``apply`` itself. The parameters are still the transform's own.
    """
    kind = type(node)
    if kind is A.HorizontalFlip:
        return lambda image, **params: image[:, ::-1]
    if kind is A.RandomCrop and not node.pad_if_needed:

        def crop(image: np.ndarray, crop_coords: tuple[int, int, int, int], **params) -> np.ndarray:
            x_min, y_min, x_max, y_max = crop_coords
            if 0 <= x_min < x_max <= image.shape[1] and 0 <= y_min < y_max <= image.shape[0]:
                return image[y_min:y_max, x_min:x_max]
            return node.apply(image, crop_coords=crop_coords, **params)  # raises as albumentations does

        return crop
    if kind is A.Pad and node.border_mode == cv2.BORDER_CONSTANT and _is_byte(node.fill):
        fill = node.fill

        def pad(image: np.ndarray, pad_top: int, pad_bottom: int, pad_left: int, pad_right: int, **params):
            sides = (pad_top, pad_bottom, pad_left, pad_right)
            if image.dtype != np.uint8 or image.size == 0 or image.ndim not in (2, 3) or min(sides) < 0:
                return node.apply(image, *sides, **params)
            height, width = image.shape[:2]
            out = np.full(
                (height + pad_top + pad_bottom, width + pad_left + pad_right, *image.shape[2:]),
                fill,
                np.uint8,
            )
            out[pad_top : pad_top + height, pad_left : pad_left + width] = image
            return out

        return pad
    return None


def _is_byte(value) -> bool:
    """A fill that OpenCV writes into uint8 as that same number: an integral value in [0, 255]."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value in range(256)


def _picker(weights: Sequence[float]) -> Pick:
    """``generator.choice(len(weights), p=weights)``, the same index from the same one draw.

    NumPy's ``choice`` with ``p`` (and ``size=None``) draws one ``random()`` and finds it in the
    normalised cumulative sum with ``searchsorted(side="right")``; ``bisect_right`` on that same
    cumulative sum is that search without the per-call validation. Used only when the weights pass
    NumPy's checks (else ``choice`` itself runs and raises as it would) and when this NumPy still
    draws that way (:func:`_cdf_matches_numpy`, checked once).
    """
    count = len(weights)
    valid = (
        count > 0 and all(math.isfinite(w) and w >= 0 for w in weights) and abs(math.fsum(weights) - 1) < 1e-9
    )
    if not (valid and _cdf_matches_numpy()):
        return lambda generator: generator.choice(count, p=weights)
    cdf = np.asarray(weights, dtype=np.float64).cumsum()
    cdf /= cdf[-1]
    bounds = cdf.tolist()
    return lambda generator: bisect.bisect_right(bounds, generator.random())


@cache
def _cdf_matches_numpy() -> bool:
    """Whether this NumPy's ``choice(p=...)`` is the cumulative-sum search :func:`_picker` assumes."""
    weights = [0.1, 0.0, 0.25, 0.05, 0.6]
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    bounds = cdf.tolist()
    theirs, ours = np.random.default_rng(0), np.random.default_rng(0)
    return all(
        int(theirs.choice(len(weights), p=weights)) == bisect.bisect_right(bounds, ours.random())
        for _ in range(512)
    )

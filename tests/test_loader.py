"""The data path: per-batch augmentation in workers gives the images per-sample application would."""

import dataclasses

import numpy as np
import pytest
import torch

from augsearch.loader import Normaliser, augment, make_loader
from augsearch.policy import KDSettings, OpChoice, Policy, build_transform
from augsearch.runtime import resolve
from augsearch.space import Stage

POLICY = Policy(
    fixed=(Stage("HorizontalFlip", {"p": 0.5}),),
    ops=(OpChoice("Rotate", 0.7, 0.6), OpChoice("CoarseDropout", 0.5, 0.8)),
    kd=KDSettings(2.0, 0.5),
)


def _images(n: int = 40, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8), np.arange(n, dtype=np.int64) % 4


def _runtime(workers: int):
    return dataclasses.replace(resolve("cpu"), loader_workers=workers)


def test_batches_equal_the_same_seeded_compose_applied_image_by_image():
    """What "the same images" means. albumentations draws every random choice from the generator
    inside ``Compose``, in call order; so with 0 workers the loader's batches over indices i..j (in
    the sampler's order) equal, pixel for pixel, a fresh ``Compose`` of the same policy seeded with the
    same seed and applied to images i..j one at a time in that order. (With workers, each worker
    holds its own copy, seeded from the loader's seed, and the same holds per worker.)"""
    x, y = _images()
    loader = make_loader(x, y, build_transform(POLICY), 8, _runtime(0), seed=3, shuffle=False)
    batched = np.concatenate([images.numpy() for images, _ in loader])
    reference = build_transform(POLICY)
    reference.set_random_seed(3)
    one_by_one = np.stack([reference(image=image)["image"].reshape(image.shape) for image in x])
    assert batched.dtype == np.uint8 and batched.shape == x.shape
    np.testing.assert_array_equal(batched, one_by_one)
    assert not np.array_equal(batched, x)  # the policy did change the images


def test_shuffled_batches_follow_the_sampler_order():
    x, _ = _images()
    y = np.arange(len(x), dtype=np.int64)  # labels = indices, to see the sampler's order
    loader = make_loader(x, y, build_transform(POLICY), 8, _runtime(0), seed=5)
    reference = build_transform(POLICY)
    reference.set_random_seed(5)
    for images, labels in loader:
        expected = np.stack([reference(image=x[i])["image"].reshape(x[i].shape) for i in labels.numpy()])
        np.testing.assert_array_equal(images.numpy(), expected)


def test_worker_batches_are_reproducible_and_workers_draw_different_augmentations():
    x, y = _images(64)
    x[:] = x[0]  # every image the same: any difference between batches is the augmentation's

    def run() -> list[np.ndarray]:
        loader = make_loader(x, y, build_transform(POLICY), 16, _runtime(2), seed=7, shuffle=False)
        return [images.numpy() for images, _ in loader]

    first, second = run(), run()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # batch 0 from worker 0, batch 1 from worker 1


def test_augment_keeps_a_channel_axis_and_passes_through_without_a_transform():
    x, _ = _images(4)
    assert augment(x, None).shape == x.shape
    out = augment(x, build_transform(POLICY, seed=0))
    assert out.shape == x.shape and out.dtype == np.uint8 and out.flags.c_contiguous


@pytest.mark.parametrize("channels_last", [False, True])
def test_normaliser_puts_channels_first_in_the_runtime_format(channels_last):
    x, _ = _images(8)
    runtime = dataclasses.replace(resolve("cpu"), channels_last=channels_last)
    normalise = Normaliser.fit(x, runtime)
    out = normalise(torch.from_numpy(x))
    assert out.shape == (8, 1, 12, 12) and out.dtype == torch.float32
    assert abs(out.mean().item()) < 1e-4 and abs(out.std().item() - 1) < 1e-2

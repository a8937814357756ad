"""The data path: per-batch augmentation in workers gives the images per-sample application would."""

import dataclasses

import albumentations as A
import numpy as np
import pytest
import torch

from augsearch.bench import representative_transform
from augsearch.compiled import _picker, compile_pipeline
from augsearch.loader import Normaliser, augment, make_loader
from augsearch.ops import make_op
from augsearch.policy import KDSettings, OpChoice, Policy, build_transform
from augsearch.runtime import resolve
from augsearch.space import Stage, load_space

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
    batched = np.concatenate([images.numpy() for images, *_ in loader])
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
    for images, labels, *_ in loader:
        expected = np.stack([reference(image=x[i])["image"].reshape(x[i].shape) for i in labels.numpy()])
        np.testing.assert_array_equal(images.numpy(), expected)


def test_worker_batches_are_reproducible_and_workers_draw_different_augmentations():
    x, y = _images(64)
    x[:] = x[0]  # every image the same: any difference between batches is the augmentation's

    def run() -> list[np.ndarray]:
        loader = make_loader(x, y, build_transform(POLICY), 16, _runtime(2), seed=7, shuffle=False)
        return [images.numpy() for images, *_ in loader]

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


# --- the compiled path: loader.augment must give what transform(image=...) gives, byte for byte ---

FIXED = ("Pad", "RandomCrop", "HorizontalFlip")


def _fixed_stages(size: int = 28) -> list:
    return [A.Pad(padding=2, border_mode=0, fill=0), A.RandomCrop(size, size), A.HorizontalFlip(p=0.5)]


PIPELINES = {
    "default space, grey": lambda: representative_transform(load_space("default"), channels=1),
    "default space, colour ops": lambda: representative_transform(load_space("default"), channels=3),
    "sub-policies: OneOf of Sequential pairs": lambda: A.Compose(
        [
            *_fixed_stages(),
            A.OneOf(
                [
                    A.Sequential([make_op("Rotate", 0.7, 0.8), make_op("CoarseDropout", 0.6, 0.5)], p=1.0),
                    A.Sequential([make_op("Equalize", 0.0, 0.4), make_op("Solarize", 0.5, 0.9)], p=0.3),
                    A.Sequential([make_op("Posterize", 0.8, 1.0), A.CoarseDropout(fill=0, p=1.0)], p=0.5),
                ],
                p=0.9,
            ),
        ]
    ),
    "RandAugment: SomeOf n=2, with and without replacement": lambda: A.Compose(
        [
            *_fixed_stages(),
            A.SomeOf(
                [make_op(name, 0.5, 0.7) for name in ("Affine", "Sharpen", "GaussNoise", "InvertImg")], n=2
            ),
            A.SomeOf(
                [make_op(name, 0.9, 1.0) for name in ("AutoContrast", "Downscale")], n=3, replace=True, p=0.8
            ),
            A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.1, 0.3), fill=0, p=0.5),
        ]
    ),
    "nested: RandomOrder, OneOf in Sequential, inner Compose, p = 0": lambda: A.Compose(
        [
            A.Pad(padding=(1, 3, 2, 0), border_mode=0, fill=9),
            A.RandomCrop(24, 24),
            A.RandomOrder([make_op("MotionBlur", 0.5, 0.7), make_op("RandomGamma", 0.5, 0.7)], n=2),
            A.Sequential([A.OneOf([make_op("GridDistortion", 0.5, 1.0), A.NoOp()], p=0.6)], p=0.7),
            A.Compose([A.HorizontalFlip(p=0.5), make_op("Rotate", 1.0, 0.0)], p=0.5),
            A.OneOf([make_op("Perspective", 0.5, 0.0), make_op("ImageCompression", 0.5, 0.5)], p=0.5),
        ]
    ),
}


def _both_ways(make, images: np.ndarray, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """The same pipeline built twice and seeded alike: per image through Compose, and through augment."""
    reference, compiled = make(), make()
    reference.set_random_seed(seed)
    compiled.set_random_seed(seed)
    expected = np.stack([reference(image=image)["image"] for image in images])
    return expected if expected.ndim == 4 else expected[..., None], augment(images, compiled)


@pytest.mark.parametrize("name", PIPELINES)
def test_compiled_path_gives_the_images_compose_gives(name):
    channels = 3 if "colour" in name else 1
    images = np.random.default_rng(1).integers(0, 256, (48, 28, 28, channels), dtype=np.uint8)
    assert compile_pipeline(PIPELINES[name]()) is not None  # the fast path is what is being tested
    expected, batched = _both_ways(PIPELINES[name], images)
    np.testing.assert_array_equal(batched, expected)
    assert batched.shape == expected.shape and batched.flags.c_contiguous
    assert not np.array_equal(batched, images[:, : batched.shape[1], : batched.shape[2]])


def test_pipelines_it_cannot_reproduce_exactly_are_applied_by_compose():
    images = np.random.default_rng(2).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    uncovered = {
        "bbox processors": lambda: A.Compose(_fixed_stages(), bbox_params=A.BboxParams(format="pascal_voc")),
        "replay": lambda: A.ReplayCompose(_fixed_stages()),
        "OneOrOther": lambda: A.Compose([A.OneOrOther(A.HorizontalFlip(), A.VerticalFlip())]),
    }
    for name, make in uncovered.items():
        assert compile_pipeline(make()) is None, name
        expected, batched = _both_ways(make, images)
        np.testing.assert_array_equal(batched, expected)


def test_fixed_stage_stand_ins_match_albumentations_where_used_and_step_aside_elsewhere():
    """Pad's constant border, RandomCrop and HorizontalFlip take a NumPy path; other settings
    (a reflected border, a float image, a crop that pads) go through albumentations' own apply."""
    grey = np.random.default_rng(3).integers(0, 256, (24, 20, 18), dtype=np.uint8)  # no channel axis
    colour = np.random.default_rng(4).integers(0, 256, (24, 20, 18, 3), dtype=np.uint8)
    variants = [
        lambda: A.Compose([A.Pad(padding=(3, 1), border_mode=0, fill=255), A.RandomCrop(17, 15)]),
        lambda: A.Compose([A.Pad(padding=2, border_mode=4), A.HorizontalFlip(p=0.5)]),
        lambda: A.Compose([A.Pad(padding=1, fill=2.5), A.RandomCrop(30, 30, pad_if_needed=True, fill=3)]),
    ]
    for make in variants:
        for images in (grey, colour, colour.astype(np.float32) / 255):
            expected, batched = _both_ways(make, images)
            np.testing.assert_array_equal(batched, expected)


def test_compiled_path_follows_a_reseed_after_compiling():
    """Workers reseed their copy of the pipeline; the compiled steps read the generators at call time."""
    images = np.random.default_rng(5).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
    make = PIPELINES["default space, grey"]
    transform = make()
    apply = compile_pipeline(transform)
    transform.set_random_seed(21)
    reference = make()
    reference.set_random_seed(21)
    for image in images:
        np.testing.assert_array_equal(apply(image), reference(image=image)["image"])


def test_one_of_branch_draw_is_numpys_choice():
    weights = [0.05, 0.0, 0.3, 0.15, 0.0, 0.5]
    pick, theirs, ours = _picker(weights), np.random.default_rng(6), np.random.default_rng(6)
    assert [theirs.choice(len(weights), p=weights) for _ in range(2000)] == [pick(ours) for _ in range(2000)]

"""Batches from uint8 arrays: augmented per batch in worker processes, normalised on the device.

Each loader item is a whole batch (the sampler yields index lists), so a worker runs the
albumentations pipeline over a batch and ships one uint8 array: far less inter-process traffic
than per-sample items through ``collate``. (Where there is no core to spare, a 2-core CPU, the
runtime asks for no workers and the same per-batch augmentation runs in the main process.)
Normalisation and the float conversion happen on the device, where they are nearly free.
Augmentation is random, so nothing here is cached per sample; each batch says instead which of its
images came out byte for byte as they went in, the only images whose teacher outputs may be reused
(:mod:`augsearch.reuse`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from augsearch.compiled import compile_pipeline
from augsearch.runtime import Runtime


class Batch(NamedTuple):
    """One loader item: the augmented uint8 (B,H,W,C) images, their int64 labels, the rows of the
    loader's array they came from, and which of them the policy left byte for byte unchanged."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    unchanged: torch.Tensor


class Strength:
    """The augmentation strength a loader builds its pipeline at, shared with its worker processes.

    Why shared memory: a strength schedule (augsearch/schedule.py) changes the strength while the
    loader runs, and persistent workers hold their own copy of the pipeline. The training loop
    :meth:`set` s the value; each copy of the loader's dataset compares it with the strength its
    pipeline was built at before each batch and rebuilds (``build(strength)``, a pure function of the
    strength) only when it changed: at most once per controller step or epoch, never per batch. With
    workers, batches already prefetched keep the strength they were made at (a few batches' lag).
    """

    def __init__(self, build: Callable[[float], object], value: float) -> None:
        self.build = build
        self._value = torch.tensor([float(value)], dtype=torch.float64).share_memory_()

    @property
    def value(self) -> float:
        return float(self._value[0])

    def set(self, value: float) -> None:
        self._value[0] = float(value)

    def rebuild(self, seed: int, builds: int):
        """The pipeline at the current strength, seeded from (``seed``, ``builds``): the ``builds``-th
        rebuild of a copy whose stream is ``seed`` draws the same augmentations in every run."""
        transform = self.build(self.value)
        transform.set_random_seed(int(np.random.SeedSequence([seed, builds]).generate_state(1)[0]))
        return transform


class _Batches(Dataset):
    """``dataset[indices]`` is one augmented :class:`Batch`."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform, strength: Strength | None = None) -> None:
        self.x, self.y, self.transform = x, y, transform
        self.strength, self.built_at = strength, None if strength is None else strength.value
        self.seed, self.builds = 0, 0  # the stream the rebuilt pipelines draw from, and how many there were

    def __len__(self) -> int:
        return len(self.x)

    def _current(self):
        """The pipeline at the shared strength, rebuilt when the strength changed since the last batch.
        Each rebuilt pipeline is seeded from (this copy's seed, rebuild count): reproducible."""
        if self.strength is not None and self.strength.value != self.built_at:
            self.built_at = self.strength.value
            self.builds += 1
            self.transform = self.strength.rebuild(self.seed, self.builds)
        return self.transform

    def __getitem__(self, indices: list[int]) -> Batch:
        index = np.asarray(indices, dtype=np.int64)
        source = self.x[index]
        images = augment(source, self._current())
        same = unchanged(source, images) if self.transform is not None else np.ones(len(index), bool)
        return Batch(
            torch.from_numpy(images), torch.from_numpy(self.y[index]), torch.from_numpy(index),
            torch.from_numpy(same),
        )  # fmt: skip


def unchanged(source: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Which images of a batch are byte for byte their source image (a bool per image).

    One vectorised comparison of the (B, H*W*C) views, about 50 us for 128 CIFAR images: cheap next
    to augmenting them. A pipeline that changed the image shape changed every image.
    """
    if source.shape != images.shape:
        return np.zeros(len(images), bool)
    return (source.reshape(len(source), -1) == images.reshape(len(images), -1)).all(axis=1)


def augment(images: np.ndarray, transform) -> np.ndarray:
    """Apply ``transform`` to each image of a uint8 (B,H,W,C) batch in order; a contiguous uint8 batch.

    The one place images meet albumentations: the loader's workers, the proxy and the bench all
    call it, so "the same seeded Compose over the same images in the same order" gives the same
    pixels whichever of them runs it, and the same pixels as calling the Compose on each image
    (:mod:`augsearch.compiled`). ``transform=None`` returns the images unchanged.
    """
    if transform is None:
        return np.ascontiguousarray(images)
    # The same draws and pixels as transform(image=...), without Compose's per-call bookkeeping
    # (1.5x faster on the `full-labels` space); what it cannot reproduce exactly, Compose applies itself.
    apply = compile_pipeline(transform) or (lambda image: transform(image=image)["image"])
    out = np.stack([apply(image) for image in images])
    if out.ndim == 3:  # some albumentations ops drop a singleton channel axis
        out = out[..., None]
    return np.ascontiguousarray(out)


def _seed_worker(worker_id: int) -> None:
    """Give each worker's copy of the pipeline its own stream, derived from the loader's seed.

    albumentations keeps its own generator inside ``Compose``; forked workers would otherwise all
    replay the parent's stream and every worker would draw the same augmentations. Threads: torch
    already gives each worker one. OpenCV's pool is left as inherited: ``cv2.setNumThreads`` in a
    forked child whose parent has used that pool deadlocks (seen here with opencv 5.0; the parent
    does use it, for the proxy), so a worker must not call it.
    """
    info = torch.utils.data.get_worker_info()
    if info is not None and info.dataset.transform is not None:
        info.dataset.transform.set_random_seed(info.seed % 2**32)
        info.dataset.seed = info.seed % 2**32  # pipelines rebuilt at a new strength (Strength) draw from it


def make_loader(
    x: np.ndarray,
    y: np.ndarray,
    transform,
    batch_size: int,
    runtime: Runtime,
    seed: int,
    shuffle: bool = True,
    drop_last: bool = True,
    strength: Strength | None = None,
) -> DataLoader:
    """A loader over ``(x, y)`` whose items are whole augmented batches (:class:`Batch`), reproducible
    from ``seed``. With ``strength``, ``transform`` is the pipeline at its current value and is rebuilt
    whenever the value changes (:class:`Strength`)."""
    generator = torch.Generator().manual_seed(seed)
    order = RandomSampler(range(len(x)), generator=generator) if shuffle else SequentialSampler(range(len(x)))
    drop_last = drop_last and len(x) >= batch_size
    workers = runtime.loader_workers if transform is not None else 0
    if transform is not None and workers == 0:
        transform.set_random_seed(seed)
    dataset = _Batches(x, y, transform, strength)
    dataset.seed = seed
    return DataLoader(
        dataset,
        sampler=BatchSampler(order, batch_size, drop_last),
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_seed_worker if workers else None,
        generator=generator,
        persistent_workers=workers > 0,
        pin_memory=runtime.pin_memory,
    )


@dataclass(frozen=True)
class Normaliser:
    """Moves a uint8 (B,H,W,C) batch to the device as normalised float (B,C,H,W)."""

    mean: torch.Tensor
    std: torch.Tensor
    runtime: Runtime

    @classmethod
    def fit(cls, x: np.ndarray, runtime: Runtime) -> Normaliser:
        """Per-channel mean and std of the training images, in [0, 1] units."""
        sample = x[:: max(1, len(x) // 10_000)].astype(np.float64) / 255.0
        mean = sample.mean(axis=(0, 1, 2))
        std = sample.std(axis=(0, 1, 2)) + 1e-6
        shape = (1, -1, 1, 1)
        return cls(
            torch.tensor(mean, dtype=torch.float32, device=runtime.device).view(shape) * 255.0,
            torch.tensor(std, dtype=torch.float32, device=runtime.device).view(shape) * 255.0,
            runtime,
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.runtime.device, non_blocking=True).permute(0, 3, 1, 2).float()
        images = (images - self.mean) / self.std
        return images.contiguous(memory_format=self.runtime.memory_format)


def plain_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Un-augmented batches in order, for evaluation."""
    for start in range(0, len(x), batch_size):
        yield torch.from_numpy(x[start : start + batch_size]), torch.from_numpy(y[start : start + batch_size])

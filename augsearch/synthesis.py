"""Synthetic training images: a searched share of each batch drawn from a generator or the user's images.

Why: in distillation the teacher labels any image, so a generated image is useful even when imperfect:
the student learns the teacher's soft output on it, not a possibly wrong hard label. The share is
searched (``ratio`` 0 = off, so a search can always say no), with whether the cross-entropy term also
applies to synthetic images with their class (``hard_labels``) and whether the per-image pipeline runs
on them (``augment``).

Per batch of B real images, k = round(B · r / (1 − r)) synthetic ones are appended, so that a share r
of the batch is synthetic and every real image is still seen once per epoch. They are drawn on the
trial's device from a seeded ``torch.Generator`` (the same seed, the same synthetic batches), as uint8
images like the real ones, so that the pipeline, the normaliser, the teacher and the student treat
them alike; teacher and student see the same ones, and the teacher always runs on them afresh (its
kept clean-image outputs, :mod:`augsearch.reuse`, belong to real images only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from augsearch.bounds import SYNTHESIS_RATIO
from augsearch.gan import sample
from augsearch.loader import Strength, augment


@dataclass(frozen=True)
class SynthesisSettings:
    """A policy's synthesis: the synthetic share of each batch and how synthetic images are used."""

    ratio: float
    hard_labels: bool = True
    augment: bool = False

    def __post_init__(self) -> None:
        SYNTHESIS_RATIO.check("synthesis ratio", self.ratio)
        if not isinstance(self.hard_labels, bool) or not isinstance(self.augment, bool):
            raise ValueError("synthesis hard_labels and augment must be true or false")

    @property
    def active(self) -> bool:
        return self.ratio > 0

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "hard_labels": self.hard_labels, "augment": self.augment}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthesisSettings:
        return cls(float(data["ratio"]), data.get("hard_labels", True), data.get("augment", False))


def synthetic_count(batch_size: int, ratio: float) -> int:
    """k synthetic images beside ``batch_size`` real ones, so that k / (batch_size + k) ≈ ``ratio``."""
    return 0 if ratio <= 0 else round(batch_size * ratio / (1 - ratio))


@dataclass(frozen=True)
class Source:
    """Where synthetic images come from: a trained class-conditional ``generator`` (on the device), or
    the user's uint8 ``images`` with their ``labels`` (given, or the teacher's top-1 class); with the
    ``provenance`` the policy file carries (file hash, recipe, quality figures)."""

    num_classes: int
    generator: nn.Module | None = None
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


class Synthesizer:
    """One training run's synthetic images: a seeded stream of (uint8 images, labels) on the device."""

    def __init__(
        self,
        source: Source,
        settings: SynthesisSettings,
        transform: Any,
        seed: int,
        device: torch.device,
        strength: Strength | None = None,
    ) -> None:
        self.source, self.settings, self.device = source, settings, device
        self.transform = transform if settings.augment else None
        if self.transform is not None:
            self.transform.set_random_seed(seed)
        # A run with a strength schedule: the synthetic images' pipeline follows the same shared strength
        # as the loader's (rebuilt as the loader rebuilds, from this stream's salt), so real and synthetic
        # images are augmented alike all run long.
        salt = int(np.random.SeedSequence([seed % 2**32, 0x73796E]).generate_state(1)[0])  # "syn"
        self.strength, self.salt, self.builds = strength, salt, 0
        self.built_at = None if strength is None else strength.value
        self.stream = torch.Generator(device=device).manual_seed(salt)
        self.cpu_stream = torch.Generator().manual_seed(salt)

    def draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The synthetic images (uint8 (k, H, W, C); on the device unless augmented on the CPU) and
        their labels (on the device) to append to a batch of ``batch_size`` real images."""
        count = synthetic_count(batch_size, self.settings.ratio)
        source = self.source
        if count == 0:  # a small batch at a small ratio: nothing to append
            return torch.zeros((0,), dtype=torch.uint8), torch.zeros((0,), dtype=torch.int64)
        if source.generator is not None:
            labels = torch.randint(source.num_classes, (count,), generator=self.stream, device=self.device)
            images = sample(source.generator, labels, self.stream)
        else:
            assert source.images is not None and source.labels is not None
            rows = torch.randint(len(source.images), (count,), generator=self.cpu_stream).numpy()
            images = torch.from_numpy(np.ascontiguousarray(source.images[rows]))
            labels = torch.from_numpy(source.labels[rows]).to(self.device)
        if self.transform is not None:
            images = torch.from_numpy(augment(images.cpu().numpy(), self._pipeline()))
        return images, labels

    def _pipeline(self) -> Any:
        """The pipeline at the run's current strength (augsearch/loader.py: ``Strength``)."""
        if self.strength is not None and self.strength.value != self.built_at:
            self.built_at = self.strength.value
            self.builds += 1
            self.transform = self.strength.rebuild(self.salt, self.builds)
        return self.transform


def preview_rows(source: Source, rows: int, seed: int) -> np.ndarray:
    """``rows`` synthetic images (classes in turn) for a trial's preview grid, drawn on the CPU from a
    stream of their own: the same for every trial, and the training stream is left as it is."""
    labels = torch.arange(rows) % source.num_classes
    if source.generator is not None:
        generator = source.generator
        device = next(generator.parameters()).device
        stream = torch.Generator(device=device).manual_seed(seed)
        return sample(generator, labels.to(device), stream).cpu().numpy()
    assert source.images is not None and source.labels is not None
    rng = np.random.default_rng(seed)
    return source.images[rng.choice(len(source.images), size=rows, replace=len(source.images) < rows)]


def synthesizer_for(
    settings: SynthesisSettings | None,
    source: Source | None,
    make_transform: Callable[[], Any],
    seed: int,
    device: torch.device,
    strength: Strength | None = None,
) -> Synthesizer | None:
    """The synthetic stream of one training run, or None when synthesis is off (no section, or ratio 0:
    the run is then exactly one without synthesis). ``make_transform()`` builds the policy's pipeline
    (augsearch.policy.build_transform), called only when synthetic images are augmented; ``strength``:
    the run's shared strength under a schedule (the pipeline is then rebuilt at it)."""
    if settings is None or not settings.active:
        return None
    if source is None:
        raise ValueError("a policy with synthetic images needs a synthesis source (augsearch/generator.py)")
    transform = make_transform() if settings.augment else None
    return Synthesizer(source, settings, transform, seed, device, strength)


def synthesis_provenance(source: Source | None, settings: SynthesisSettings) -> dict[str, Any]:
    """What a policy file says about its synthesis: the settings and where the images came from."""
    return {**settings.to_dict(), "source": None if source is None else source.provenance}


def synthesis_lines(
    runs: list[dict[str, Any]], trials: list[Any], source: dict[str, Any] | None
) -> list[str]:
    """The report's lines on synthesis (none when the study has none): how much of each batch was
    synthetic in the trials and in each retrained policy, and the source's quality figures."""
    counted = [t for t in trials if "synthetic_images" in t.user_attrs and t.user_attrs.get("trained_images")]
    with_runs = [run for run in runs if "synthesis" in run]
    if not counted and not with_runs and source is None:
        return []
    lines = []
    if counted:
        synthetic = sum(t.user_attrs["synthetic_images"] for t in counted)
        images = sum(t.user_attrs["trained_images"] for t in counted)
        on = sum(t.user_attrs["synthetic_images"] > 0 for t in counted)
        lines.append(
            f"synthesis in the trials: {on} of {len(counted)} trials drew synthetic images; "
            f"{synthetic / images:.1%} of all their training images were synthetic"
        )
    seen: set[str] = set()
    for run in with_runs:
        if run["name"] in seen:
            continue
        seen.add(run["name"])
        settings = run["synthesis"]
        lines.append(
            f"synthesis in {run['name']}: ratio {settings['ratio']:.2f} (hard labels "
            f"{settings['hard_labels']}, augmented {settings['augment']}): "
            f"{run.get('synthetic_share', 0.0):.1%} of each batch synthetic"
        )
    if source and source.get("quality"):
        quality = source["quality"]
        lines.append(
            f"generator {source.get('file')}: teacher agreement {quality['teacher_agreement']:.3f} "
            f"(real validation images: {quality['real_teacher_accuracy']:.3f}), Frechet distance "
            f"{quality['frechet_distance']:.3g} (two real halves: {quality['real_frechet_distance']:.3g})"
        )
    elif source:
        lines.append(f"synthetic images from {source.get('file')} ({source.get('images')} images)")
    return lines

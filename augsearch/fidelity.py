"""How good a generator's images are, measured with the study's own teacher: the quality figures.

- **Teacher agreement**: the teacher's top-1 accuracy on generated images against the class each was
  conditioned on. The real-data reference is the teacher's accuracy on real validation images.
- **Fréchet distance** between real and generated images in the teacher's penultimate-layer features
  (the input of its last linear layer): Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter 2017,
  "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium" (the FID, there
  with Inception-v3 features; here the teacher's, so the figure is comparable only within a dataset
  and teacher). With feature means μ and covariances Σ,

      d² = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2}).

  Tr((Σ_r Σ_g)^{1/2}) is the sum of the square roots of the eigenvalues of the symmetric PSD matrix
  Σ_r^{1/2} Σ_g Σ_r^{1/2} (it is similar to Σ_r Σ_g), computed with ``eigh`` alone: no scipy ``sqrtm``
  and no complex round-off. The estimate is biased upwards for small samples, so real-vs-generated
  and the reference (two halves of the real training split) use the same sample size.
- A collapsed or broken generator is refused (:func:`quality_problem`): non-finite outputs, images
  with no variety within a class, or teacher agreement below the floor the space sets.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from augsearch.loader import Normaliser

MIN_CLASS_STD = 2.0  # grey levels (of 255): below this, a class's images are (nearly) all one image


@dataclass(frozen=True)
class Quality:
    """The figures written beside a generator (JSON ``quality``). ``samples`` images per figure."""

    teacher_agreement: float
    frechet_distance: float
    class_pixel_std: float  # the smallest over classes of the mean per-pixel std of its images (0-255)
    samples: int
    real_teacher_accuracy: float  # the teacher on real validation images: the agreement's reference
    real_frechet_distance: float  # two halves of the real training split: the distance's reference

    def to_dict(self) -> dict[str, float]:
        return {
            key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(self).items()
        }


def penultimate(teacher: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The input of the teacher's last linear layer for a normalised batch (float32, (N, D)), and its logits.

    Every network of augsearch/models.py ends in ``fc``; a forward pre-hook on the last ``nn.Linear``
    reads its input without touching the model's code (torchvision heads work alike)."""
    linears = [module for module in teacher.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(teacher).__name__} has no linear layer to read features from")
    seen: list[torch.Tensor] = []
    handle = linears[-1].register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    try:
        with torch.inference_mode():
            logits = teacher(images)
    finally:
        handle.remove()
    return seen[-1].flatten(1).float(), logits


def features_and_predictions(
    teacher: nn.Module, images: np.ndarray, normalise: Normaliser, batch_size: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features (float64) and top-1 classes of uint8 (N, H, W, C) images."""
    feats, preds = [], []
    for start in range(0, len(images), batch_size):
        features, logits = penultimate(
            teacher, normalise(torch.from_numpy(images[start : start + batch_size]))
        )
        feats.append(features.cpu().double().numpy())
        preds.append(logits.argmax(1).cpu().numpy())
    return np.concatenate(feats), np.concatenate(preds)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance d² between Gaussians fitted to feature rows ``a`` and ``b`` (module docstring)."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(cov_a)
    product = root_a @ cov_b @ root_a
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    trace_root = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)
    return max(value, 0.0)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix via its eigendecomposition."""
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ vectors.T


def class_pixel_std(images: np.ndarray, labels: np.ndarray) -> float:
    """The smallest over classes of the per-pixel standard deviation across that class's images:
    about 0 when a class collapsed to one image (mode collapse), tens of grey levels for real data."""
    spreads = [
        float(images[labels == cls].astype(np.float32).std(axis=0).mean())
        for cls in np.unique(labels)
        if (labels == cls).sum() > 1
    ]
    return min(spreads) if spreads else 0.0


def quality_problem(quality: Quality, outputs_finite: bool, floor: float) -> str | None:
    """Why a generator must not be used, or None: non-finite outputs, collapse, agreement below ``floor``."""
    if not outputs_finite or not all(math.isfinite(v) for v in asdict(quality).values()):
        return "its outputs are not finite (NaN or infinite): it diverged"
    if quality.class_pixel_std < MIN_CLASS_STD:
        return (
            f"it collapsed: a class's generated images vary by {quality.class_pixel_std:.2f} grey levels "
            f"(at least {MIN_CLASS_STD} expected)"
        )
    if quality.teacher_agreement < floor:
        return (
            f"the teacher agrees with its conditioning class on {quality.teacher_agreement:.3f} of its "
            f"images, below the floor {floor} (synthesis.min_agreement)"
        )
    return None


def sample_grid(images: np.ndarray, num_classes: int, per_class: int, scale: int = 2) -> bytes:
    """A PNG of uint8 (num_classes·per_class, H, W, C) images ordered class by class: one row per class."""
    _, height, width, channels = images.shape
    gap = 2
    canvas = np.full(
        (gap + num_classes * (height * scale + gap), gap + per_class * (width * scale + gap), channels),
        128,
        np.uint8,
    )
    for index, image in enumerate(images[: num_classes * per_class]):
        row, col = divmod(index, per_class)
        top, left = gap + row * (height * scale + gap), gap + col * (width * scale + gap)
        canvas[top : top + height * scale, left : left + width * scale] = image.repeat(scale, 0).repeat(
            scale, 1
        )
    picture = Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()

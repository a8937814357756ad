"""Where a study's synthetic images come from: the class-conditional generator, trained once and cached
like the teacher, or the user's own images (``synthesis: {source: npz:PATH}``).

A cached generator lives in ``<studies>/generators/<key>.pt`` with ``<key>.json`` (recipe, seed,
dataset, image shape, classes, the quality figures of :mod:`augsearch.fidelity`, the weights' sha256)
and ``<key>.png`` (a sample grid, one row per class) beside it. It is trained on the training split
only (the validation split is left out, the test split is never read) and checkpointed every epoch
(atomically) in ``<key>.ckpt``: a killed run resumes from it, and the cache never holds a half-written
file. Files are read with ``weights_only=True``. Refused with one line (exit 2): a corrupt file, one
made for another dataset, class count or image size, and a generator whose outputs are not finite, that
collapsed, or whose teacher agreement is below the space's floor.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from augsearch import files
from augsearch.data import ImageData
from augsearch.errors import UserError
from augsearch.fidelity import (
    Quality,
    class_pixel_std,
    features_and_predictions,
    frechet_distance,
    quality_problem,
    sample_grid,
)
from augsearch.gan import ARCHITECTURE, Generator, build_generator, recipe_dict, sample, train_gan
from augsearch.loader import Normaliser
from augsearch.settings import GanRecipe, SynthesisSpace
from augsearch.synthesis import Source

GRID_PER_CLASS = 10


def _identity(data: ImageData) -> dict[str, Any]:
    """What a generator file must match: the dataset, its class count and image shape (H, W, C)."""
    return {
        "dataset": data.name,
        "num_classes": data.num_classes,
        "image_shape": list(data.x_train.shape[1:]),
    }


def cache_key(synthesis: SynthesisSpace, data: ImageData, train_size: int, seed: int, synthetic: Any) -> str:
    """Readable name plus a hash of everything that changes the generator's weights."""
    recipe = {
        **_identity(data),
        "synthetic": asdict(synthetic) if synthetic else None,
        "train_size": train_size,
        "recipe": recipe_dict(synthesis.recipe),
        "seed": seed,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:10]
    name = data.name.replace("/", "_").replace(":", "_").strip("_")[-40:]
    return f"{name}-{synthesis.generator}-e{synthesis.recipe.epochs}-s{seed}-{digest}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_generator(path: Path, data: ImageData, device: torch.device) -> tuple[Generator, dict[str, Any]]:
    """A generator file written by augsearch, checked against ``data``; returns it (eval mode, on
    ``device``) and the file's recipe. One-line :class:`UserError` for a missing, corrupt or
    mismatched file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"generator checkpoint not found: {path}") from None
    except Exception as error:  # unpickling refused or a corrupt file: either way, not usable
        raise UserError(
            f"cannot read generator checkpoint {path}: {str(error).splitlines()[0][:200]}"
        ) from None
    if not isinstance(state, dict) or not {"state_dict", "recipe", "architecture", *_identity(data)} <= set(
        state
    ):
        raise UserError(f"generator checkpoint {path} is not an augsearch generator file")
    for key, expected in _identity(data).items():
        found = list(state[key]) if isinstance(state[key], (list, tuple)) else state[key]
        if found != expected:
            raise UserError(
                f"generator checkpoint {path} was made for {key} {found}, this study's data has {expected}"
            )
    if state["architecture"] != ARCHITECTURE:
        raise UserError(f"generator checkpoint {path}: unknown architecture {state['architecture']!r}")
    try:
        recipe = GanRecipe(**dict(state["recipe"]))
        generator = build_generator(recipe, data.num_classes, data.channels, data.image_size)
        generator.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError, ValueError, KeyError) as error:
        raise UserError(
            f"generator checkpoint {path} does not fit its recipe: {str(error).splitlines()[0][:200]}"
        ) from None
    return generator.to(device).eval(), asdict(recipe)


def measure_quality(
    generator: Generator,
    data: ImageData,
    train_index: np.ndarray,
    val_index: np.ndarray,
    teacher: nn.Module,
    normalise: Normaliser,
    samples: int,
    seed: int,
) -> tuple[Quality, bool, np.ndarray]:
    """The quality figures (:mod:`augsearch.fidelity`), whether every output was finite, and a sample
    grid's images (``GRID_PER_CLASS`` per class, class by class). The same sample size n for the real
    and generated sides: n generated images (classes in turn), and two disjoint halves of n real
    training images for the reference."""
    device = normalise.runtime.device
    n = max(2, min(samples, len(train_index) // 2))
    stream = torch.Generator(device=device).manual_seed(seed)
    labels = torch.arange(n, device=device) % data.num_classes
    with torch.inference_mode():
        z = torch.randn(n, generator.z_dim, generator=stream, device=device)
        raw = generator(z, labels)
    finite = bool(torch.isfinite(raw).all())
    fake = ((raw.float().nan_to_num(0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    fake = fake.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    halves = np.random.default_rng(seed).permutation(train_index)
    real_a, real_b = data.x_train[np.sort(halves[:n])], data.x_train[np.sort(halves[n : 2 * n])]
    feats_fake, predicted = features_and_predictions(teacher, fake, normalise)
    feats_a, _ = features_and_predictions(teacher, real_a, normalise)
    feats_b, _ = features_and_predictions(teacher, real_b, normalise)
    _, predicted_val = features_and_predictions(teacher, data.x_train[val_index], normalise)
    wanted = labels.cpu().numpy()
    quality = Quality(
        teacher_agreement=float((predicted == wanted).mean()),
        frechet_distance=frechet_distance(feats_a, feats_fake) if finite else float("nan"),
        class_pixel_std=class_pixel_std(fake, wanted),
        samples=n,
        real_teacher_accuracy=float((predicted_val == data.y_train[val_index]).mean()),
        real_frechet_distance=frechet_distance(feats_a, feats_b),
    )
    grid_labels = torch.arange(data.num_classes, device=device).repeat_interleave(GRID_PER_CLASS)
    grid = sample(generator, grid_labels, torch.Generator(device=device).manual_seed(seed)).cpu().numpy()
    return quality, finite, grid


def get_generator(
    synthesis: SynthesisSpace,
    data: ImageData,
    train_index: np.ndarray,
    val_index: np.ndarray,
    teacher: nn.Module,
    normalise: Normaliser,
    generators_dir: Path,
    seed: int,
    synthetic_spec: Any = None,
) -> Source:
    """The study's synthetic-image source: the user's checkpoint (checked and measured now), else the
    cached generator (its file's sha256 checked), else one trained now on ``train_index`` and cached."""
    device = normalise.runtime.device
    if synthesis.checkpoint is not None:
        path = Path(synthesis.checkpoint)
        generator, recipe = load_generator(path, data, device)
        quality, finite, _ = measure_quality(
            generator, data, train_index, val_index, teacher, normalise, synthesis.samples, seed
        )
        _refuse_bad(path, quality, finite, synthesis.min_agreement)
        info = {"file": str(path), "sha256": sha256_of(path), "recipe": recipe, "quality": quality.to_dict()}
        return Source(data.num_classes, generator=generator, provenance=info)

    key = cache_key(synthesis, data, len(train_index), seed, synthetic_spec)
    weights, meta, grid_path = (generators_dir / f"{key}{ext}" for ext in (".pt", ".json", ".png"))
    if weights.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        digest = sha256_of(weights)
        if digest != info.get("sha256"):
            raise UserError(
                f"generator {weights} does not match its record {meta} (sha256 {digest[:12]}... != "
                f"{str(info.get('sha256'))[:12]}...); delete both to train it again"
            )
        generator, _ = load_generator(weights, data, device)
        quality = Quality(**info["quality"])
        _refuse_bad(weights, quality, True, synthesis.min_agreement)
        return Source(data.num_classes, generator=generator, provenance=_provenance(weights, info))

    progress_file = generators_dir / f"{key}.ckpt"
    x, y = data.x_train[train_index], data.y_train[train_index]
    runtime = normalise.runtime
    generator, history = train_gan(
        x, y, data.num_classes, synthesis.recipe, seed, device, progress_file, runtime.memory_format
    )
    generator = generator.to(memory_format=torch.contiguous_format)
    quality, finite, grid = measure_quality(
        generator, data, train_index, val_index, teacher, normalise, synthesis.samples, seed
    )
    if (problem := quality_problem(quality, finite, synthesis.min_agreement)) is not None:
        progress_file.unlink(missing_ok=True)  # the same seed would train the same generator again
        raise UserError(f"the generator trained for {key} is refused: {problem}; nothing was cached")
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    document = {
        "state_dict": state,
        "architecture": ARCHITECTURE,
        "recipe": asdict(synthesis.recipe),
        **_identity(data),
    }
    files.save_torch(weights, document)
    files.write_bytes(grid_path, sample_grid(grid, data.num_classes, GRID_PER_CLASS))
    info = {
        "fingerprint": key,
        **_identity(data),
        "classes": list(data.classes),
        "recipe": recipe_dict(synthesis.recipe),
        "seed": seed,
        "train_images": len(train_index),
        "quality": quality.to_dict(),
        "train_seconds": round(history["seconds"], 1),
        "final_losses": {"d": round(history["d_loss"], 4), "g": round(history["g_loss"], 4)},
        "device": runtime.describe(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
        "sample_grid": grid_path.name,
        "sha256": sha256_of(weights),
    }
    files.write_json(meta, info)  # last: the record is what makes the weights a cache entry
    progress_file.unlink(missing_ok=True)
    return Source(
        data.num_classes, generator=generator, provenance=_provenance(weights, info) | {"cached": False}
    )


def _provenance(weights: Path, info: dict[str, Any]) -> dict[str, Any]:
    """What a policy file carries about its generator: file, hash, recipe, quality figures."""
    keys = ("fingerprint", "sha256", "recipe", "seed", "quality", "dataset", "train_images")
    return {"file": str(weights), **{key: info.get(key) for key in keys}}


def _refuse_bad(path: Path, quality: Quality, finite: bool, floor: float) -> None:
    if (problem := quality_problem(quality, finite, floor)) is not None:
        raise UserError(f"generator {path} is refused: {problem}")


def load_source(spec: str, data: ImageData, teacher: nn.Module, normalise: Normaliser) -> Source:
    """``source: npz:PATH``: the user's images (``x``: uint8 (N, H, W) or (N, H, W, C), the data's shape),
    with labels ``y`` in [0, classes) if the file has them, else the teacher's top-1 class of each."""
    if not spec.startswith("npz:") or not spec[4:]:
        raise UserError(f"synthesis source {spec!r}: expected npz:PATH")
    path = Path(spec[4:]).expanduser()
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive:
                raise UserError(
                    f"{path}: needs an array 'x' (and optionally 'y'), has {sorted(archive.files)}"
                )
            x = archive["x"]
            y = archive.get("y")
    except FileNotFoundError:
        raise UserError(f"synthesis source not found: {path}") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read as npz without pickles ({error})") from None
    if x.dtype != np.uint8:
        raise UserError(f"{path}: x must be uint8, got {x.dtype}")
    x = x[..., None] if x.ndim == 3 else x
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(data.x_train.shape[1:]) or len(x) == 0:
        raise UserError(
            f"{path}: x must be N images of the data's shape {tuple(data.x_train.shape[1:])}, got {x.shape}"
        )
    if y is not None:
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
            raise UserError(f"{path}: y must be 1-D integers, one per image, got {y.dtype} shape {y.shape}")
        if y.min() < 0 or y.max() >= data.num_classes:
            raise UserError(
                f"{path}: y must be classes in [0, {data.num_classes}), found {int(y.min())}..{int(y.max())}"
            )
        labels, labelled = y.astype(np.int64), "file"
    else:
        labels, labelled = features_and_predictions(teacher, np.ascontiguousarray(x), normalise)[1], "teacher"
    info = {"file": str(path), "sha256": sha256_of(path), "images": len(x), "labels": labelled}
    return Source(
        data.num_classes, images=np.ascontiguousarray(x), labels=labels.astype(np.int64), provenance=info
    )

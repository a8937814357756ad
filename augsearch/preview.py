"""Preview grids: what a policy does to a few fixed images, as one small, deterministic PNG.

Why: a trial's score says how well a policy did, not what it does; a rotation of 30° or a JPEG
quality of 20 is easier to judge by eye than by name. Every trial stores its grid as an Optuna
artifact, so optuna-dashboard shows it beside the score, and ``augsearch preview``
(:func:`augsearch.pipeline.write_preview`) draws the same grid for an exported policy file or a stored trial.

The grid is the same for the same policy: the same validation images (one per class in turn,
chosen with the study's seed), the pipeline reseeded with that seed before drawing, fixed PNG
settings and no timestamps. One row per image: the original first, then ``samples`` draws of the
policy. Small images are upscaled (nearest neighbour) so 28 px Fashion-MNIST cells are 56 px.
"""

from __future__ import annotations

import io
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import albumentations as A  # augsearch/__init__ has set NO_ALBUMENTATIONS_UPDATE
import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna_dashboard import save_note
from optuna_dashboard.artifact import get_artifact_path
from PIL import Image

from augsearch.data import ImageData
from augsearch.policy import Policy

FILENAME = "augmentation-preview.png"  # how the artifact is named in optuna-dashboard
BACKGROUND = 128  # mid grey: gaps stay visible between black and between white images


@dataclass(frozen=True)
class GridSpec:
    """The grid's shape; the defaults keep a 28 px grid at 410 x 466 px, about 10 ms to draw."""

    rows: int = 8  # images, one per class in turn
    samples: int = 6  # draws of the policy per image, right of the original
    min_cell: int = 56  # smaller images are upscaled by a whole factor to at least this side
    max_cell: int = 128  # larger ones are shrunk to this side
    gap: int = 2  # pixels between cells; twice that after the originals' column


def cell_side(image_side: int, spec: GridSpec = GridSpec()) -> int:
    if image_side > spec.max_cell:
        return spec.max_cell
    return image_side * max(1, math.ceil(spec.min_cell / image_side))


def grid_size(image_side: int, rows: int, spec: GridSpec = GridSpec()) -> tuple[int, int]:
    """(width, height) of the PNG: ``1 + samples`` columns of cells, ``rows`` rows, gaps around."""
    cell = cell_side(image_side, spec)
    width = spec.gap + (1 + spec.samples) * (cell + spec.gap) + spec.gap
    return width, spec.gap + rows * (cell + spec.gap)


def pick_images(x: np.ndarray, y: np.ndarray, index: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """``rows`` images of ``x[index]``, one per class in turn, chosen with ``seed``: the same every trial."""
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(index[y[index] == label]) for label in np.unique(y[index])]
    longest = max((len(members) for members in by_class), default=0)
    order = [members[depth] for depth in range(longest) for members in by_class if depth < len(members)]
    if not order:
        raise ValueError("no images to preview")
    return x[np.asarray(order[:rows], dtype=np.int64)]


def preview_images(
    data: ImageData, val_index: np.ndarray, seed: int, spec: GridSpec = GridSpec()
) -> np.ndarray:
    """The grid's images: from the validation split (from the training set when there is none)."""
    index = val_index if len(val_index) else np.arange(len(data.y_train))
    return pick_images(data.x_train, data.y_train, index, spec.rows, seed)


def _cell(image: np.ndarray, cell: int, channels: int) -> np.ndarray:
    """One image as a (cell, cell, channels) uint8 array: resized, grey broadcast to colour if needed."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:  # some albumentations ops drop a singleton channel axis
        image = image[..., None]
    if image.shape[2] != channels:
        image = np.repeat(image[..., :1], channels, axis=2)
    if image.shape[:2] != (cell, cell):
        grow = image.shape[0] <= cell and image.shape[1] <= cell
        picture = Image.fromarray(image[..., 0] if channels == 1 else image)
        picture = picture.resize((cell, cell), Image.NEAREST if grow else Image.LANCZOS)
        image = np.asarray(picture).reshape(cell, cell, channels)
    return image


def render_grid(transform: A.Compose, images: np.ndarray, seed: int, spec: GridSpec = GridSpec()) -> bytes:
    """The PNG bytes of the grid: row r is ``images[r]`` then ``spec.samples`` draws of ``transform``.

    ``transform`` (an albumentations Compose) is reseeded with ``seed`` first, so the same policy
    gives byte-identical PNGs.
    """
    rows, side, channels = len(images), images.shape[1], images.shape[3]
    cell, gap = cell_side(side, spec), spec.gap
    width, height = grid_size(side, rows, spec)
    canvas = np.full((height, width, channels), BACKGROUND, dtype=np.uint8)
    transform.set_random_seed(seed)
    for row, image in enumerate(images):
        top = gap + row * (cell + gap)
        drawn = [image] + [transform(image=image)["image"] for _ in range(spec.samples)]
        for column, picture in enumerate(drawn):
            left = gap + column * (cell + gap) + (gap if column else 0)
            canvas[top : top + cell, left : left + cell] = _cell(picture, cell, channels)
    picture = Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=6)  # PIL writes no time chunk: bytes are stable
    return buffer.getvalue()


def note(policy: Policy, image_url: str | None, spec: GridSpec = GridSpec()) -> str:
    """The trial's note in optuna-dashboard (Markdown): the grid inline, then the policy as a table."""
    lines = ["### Augmentation preview", ""]
    if image_url:
        lines += [f"![augmentation preview]({image_url})", ""]
    lines += [
        f"Originals on the left, then {spec.samples} draws of the policy (fixed stages included).",
        "",
    ]
    if policy.synthesis is not None and policy.synthesis.active:  # rows added by the objective (study.py)
        lines += [
            "The lower half of the rows are synthetic images (augsearch/synthesis.py), drawn with the policy "
            f"like the real ones; in training the policy runs on them only with augment on "
            f"(here {policy.synthesis.augment}).",
            "",
        ]
    if policy.ops:  # op slots read best as a table
        lines += ["| op | p | magnitude |", "|---|---|---|"]
        lines += [f"| {op.name} | {op.p:.2f} | {op.magnitude:.2f} |" for op in policy.ops] + [""]
    # Every part of the policy, whatever its structure (sub-policies, RandAugment, Cutout, mixing, KD):
    # the same lines the trial's `policy` attribute and the report show.
    lines += [f"- {line}" for line in policy.describe().splitlines() if not _is_slot_line(line, policy)]
    return "\n".join(lines)


def _is_slot_line(line: str, policy: Policy) -> bool:
    """Whether ``line`` of :meth:`Policy.describe` is an op slot, already in the table above it."""
    return any(line.startswith(f"{op.name:<24} p=") for op in policy.ops)


def attach(trial: optuna.Trial, store: FileSystemArtifactStore, png: bytes, policy: Policy) -> str:
    """Upload ``png`` as the trial's artifact and write its note; returns the artifact id.

    Optuna's upload reads a path, so the bytes pass through a temporary file. The note links the
    artifact by the URL optuna-dashboard serves it at, so the trial page shows the grid inline.
    """
    with tempfile.TemporaryDirectory(prefix="augsearch-preview-") as folder:
        path = Path(folder) / FILENAME
        path.write_bytes(png)
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype="image/png"
        )
    save_note(trial, note(policy, get_artifact_path(trial, artifact_id)))
    return artifact_id


def artifact_store(folder: Path) -> FileSystemArtifactStore:
    """An artifact store in ``folder`` (by default ``<studies>/<study>/artifacts/``), created on first use."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(folder)

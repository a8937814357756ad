"""What every run of a study shares: the space, the data, the device, the normaliser and the teacher.

``augsearch run`` builds it from its options; ``augsearch retrain`` and ``report`` rebuild the same one
from what the study recorded (space file, dataset, seed), so a retrain days later uses the same data,
split and cached teacher as the search did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from augsearch.data import ImageData, load_dataset
from augsearch.distill import inference_teacher
from augsearch.loader import Normaliser
from augsearch.models import build_model
from augsearch.runtime import Runtime, resolve
from augsearch.space import Space
from augsearch.teacher import get_teacher


@dataclass(frozen=True)
class Workspace:
    space: Space
    data: ImageData
    runtime: Runtime
    normalise: Normaliser
    seed: int


def open_workspace(space: Space, dataset: str, data_dir: Path | None, device: str, seed: int) -> Workspace:
    """Load the data and settle the device; builds teacher and student once so a bad name fails early."""
    runtime = resolve(device)
    data = load_dataset(dataset, data_dir, synthetic=space.dataset.synthetic)
    for name in (space.teacher.model, space.student):
        build_model(name, in_channels=data.channels, num_classes=data.num_classes, image_size=data.image_size)
    for note in data.notes:
        tqdm.write(f"note: {note}")
    return Workspace(space, data, runtime, Normaliser.fit(data.x_train, runtime), seed)


def teacher_for(
    workspace: Workspace, studies_dir: Path, checkpoint: Path | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The study's teacher, ready for distillation (:func:`augsearch.distill.inference_teacher`): the
    user's checkpoint, else the cached one, else trained now and cached."""
    model, info = get_teacher(
        workspace.space,
        workspace.data,
        workspace.normalise,
        studies_dir / "teachers",
        workspace.seed,
        checkpoint,
    )
    return inference_teacher(model, workspace.runtime), info

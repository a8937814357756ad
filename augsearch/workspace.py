"""What every run of a study shares: the space, the data, the device, the normaliser, the teacher and
the trial context; the one place that turns a space and a device into them.

``augsearch run`` builds it from its options; ``augsearch worker``, ``retrain`` and ``report`` rebuild the
same one from what the study recorded (space file, dataset, seed), so a retrain days later uses the same
data, split and cached teacher as the search did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from torch import nn
from tqdm import tqdm

from augsearch.data import ImageData, load_dataset, stratified_draw, validation_split
from augsearch.distill import inference_teacher
from augsearch.errors import UserError
from augsearch.generator import get_generator, load_source
from augsearch.loader import Normaliser
from augsearch.models import build_model
from augsearch.runtime import Runtime, resolve
from augsearch.settings import Space
from augsearch.space import load_space
from augsearch.study import TrialContext
from augsearch.synthesis import Source
from augsearch.teacher import get_teacher


@dataclass(frozen=True)
class Workspace:
    space: Space
    data: ImageData
    runtime: Runtime
    normalise: Normaliser
    seed: int

    def retrain_images(self) -> tuple[np.ndarray, np.ndarray]:
        """What a final retrain learns from: the whole training split (the trials' part and the
        validation part), or with ``dataset.labelled`` the labelled pool alone (:func:`labelled_pool`)."""
        if self.space.dataset.labelled is None:
            return self.data.x_train, self.data.y_train
        pool = labelled_pool(self.space, self.data, self.seed)
        return self.data.x_train[pool], self.data.y_train[pool]


def open_workspace(space: Space, dataset: str, data_dir: Path | None, device: str, seed: int) -> Workspace:
    """Load the data and settle the device; builds teacher and student once so a bad name fails early."""
    runtime = resolve(device)
    data = load_dataset(dataset, data_dir, synthetic=space.dataset.synthetic)
    for name in (space.teacher.model, space.student):
        build_model(name, **data.model_shape)
    for note in data.notes:
        tqdm.write(f"note: {note}")
    labelled_pool(space, data, seed)  # a labelled count the data cannot give fails here, before any work
    return Workspace(space, data, runtime, Normaliser.fit(data.x_train, runtime), seed)


def labelled_pool(space: Space, data: ImageData, seed: int) -> np.ndarray:
    """The training images (indices into ``data.x_train``) the student may learn from: the training
    part of the validation split, or with ``dataset.labelled: N`` a seeded stratified draw of N of them.

    Why the teacher still sees the whole training split and the trials still validate on the whole
    validation part: the scarce-labels setting stands for distilling a given teacher (trained elsewhere,
    on more data) into a small student with the few labelled images one has, where augmentation is
    what makes each image count; a validation split of a few dozen images would rank policies by noise.
    """
    train_index, _ = validation_split(data.y_train, space.dataset.validation_fraction, seed)
    size = space.dataset.labelled
    if size is None:
        return train_index
    if not data.num_classes <= size <= len(train_index):
        raise UserError(
            f"dataset.labelled: {size} images; {data.name} has {len(train_index)} training images outside "
            f"the validation split and {data.num_classes} classes: expected {data.num_classes} to "
            f"{len(train_index)}"
        )
    return stratified_draw(data.y_train, train_index, size, seed)


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


def synthesis_for(workspace: Workspace, teacher: nn.Module, studies_dir: Path) -> Source | None:
    """The study's synthetic images (None when its space has no ``synthesis:``): the user's
    ``source``, else its generator, cached in ``<studies>/generators/`` or trained now on the training
    split (validation left out) with the study's seed."""
    space, data, seed = workspace.space, workspace.data, workspace.seed
    if space.synthesis is None:
        return None
    if space.synthesis.source is not None:
        return load_source(space.synthesis.source, data, teacher, workspace.normalise)
    train_index, val_index = validation_split(data.y_train, space.dataset.validation_fraction, seed)
    return get_generator(
        space.synthesis, data, train_index, val_index, teacher, workspace.normalise,
        studies_dir / "generators", seed, space.dataset.synthetic,
    )  # fmt: skip


def workspace_of(study: optuna.Study, data_dir: Path | None, device: str) -> Workspace:
    """The workspace a study was searched in, from its recorded space file, dataset and seed."""
    space_path = study.user_attrs.get("space")
    if not space_path or not Path(space_path).is_file():
        raise UserError(
            f"study '{study.study_name}' records no readable space file ({space_path}); cannot rebuild it"
        )
    space = load_space(space_path)
    if space.sha256 != study.user_attrs.get("space_sha256"):
        raise UserError(
            f"{space_path} changed since study '{study.study_name}' was made; restore it to retrain"
        )
    return open_workspace(space, study.user_attrs["dataset"], data_dir, device, int(study.user_attrs["seed"]))


def trial_subset(train_index: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """The same seeded subset of the training split for every trial (cheap proxy of the full data)."""
    if size is None or size >= len(train_index):
        return train_index
    return np.sort(np.random.default_rng(seed).choice(train_index, size=size, replace=False))


def trial_context(
    workspace: Workspace, teacher: nn.Module, study_dir: Path | None, synthesis: Source | None = None
) -> TrialContext:
    """What every trial of the study needs, the same in ``run``, in each ``augsearch worker``, in ``bench``
    and in the tests: the validation split, the trial subset, the teacher; ``study_dir=None``: no
    preview artifacts."""
    space, data, seed = workspace.space, workspace.data, workspace.seed
    _, val_index = validation_split(data.y_train, space.dataset.validation_fraction, seed)
    subset = trial_subset(labelled_pool(space, data, seed), space.trial.subset, seed)
    return TrialContext(
        space,
        data,
        subset,
        val_index,
        teacher,
        workspace.normalise,
        seed,
        artifacts_dir=None if study_dir is None else study_dir / "artifacts",
        synthesis=synthesis,
    )

"""Transfer: the study's searched policy (and the same baselines) retrained on another student, and
optionally distilled from another teacher checkpoint.

Why: a policy searched with a 9k-parameter student on 2-epoch trials may or may not help a larger one;
the user deciding whether to reuse it needs the same table, split and verdict for that student.

The results are kept apart from the original student's: each transfer writes its runs and its report
under ``<study>/transfer/<student>[-teacher-<sha256 prefix>]/``, and the run keys include the student
and the teacher checkpoint's sha256 (augsearch/retrain.py: run_key), so nothing is overwritten or
wrongly reused. The teacher checkpoint must fit the space's teacher architecture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from augsearch.errors import UserError
from augsearch.models import build_model
from augsearch.teacher import checkpoint_sha256
from augsearch.workspace import Workspace, teacher_for


@dataclass(frozen=True)
class Target:
    """What a retrain trains with and where its runs and report go."""

    workspace: Workspace
    teacher: Any
    sha256: str | None  # the teacher checkpoint's, for the run keys (None: augsearch's cached teacher)
    folder: Path


def transfer_dir(study_dir: Path, student: str, teacher_sha256: str | None) -> Path:
    """Where one transfer's runs and report live: readable, one folder per (student, teacher file)."""
    slug = re.sub(r"[^a-z0-9]+", "-", student.lower()).strip("-") or "student"
    return (
        study_dir / "transfer" / (slug if teacher_sha256 is None else f"{slug}-teacher-{teacher_sha256[:10]}")
    )


def transfer_workspace(
    workspace: Workspace, student: str | None, checkpoint: Path | None, studies_dir: Path
) -> tuple[Workspace, Any, str | None]:
    """The workspace with the other student, and the other teacher when a checkpoint is given (loaded
    with ``weights_only=True``, checked against the space's teacher model): (workspace, teacher or None
    to keep the study's, the checkpoint's sha256). A bad name or checkpoint: one-line UserError."""
    space = workspace.space
    if student is not None:
        build_model(student, **workspace.data.model_shape)  # an unknown name: UserError, one line
        space = replace(space, student=student)
    moved = replace(workspace, space=space)
    if checkpoint is None:
        return moved, None, None
    if not checkpoint.is_file():
        raise UserError(f"--teacher-checkpoint {checkpoint}: no such file")
    sha256 = checkpoint_sha256(space, checkpoint)
    teacher, _ = teacher_for(moved, studies_dir, checkpoint)
    return moved, teacher, sha256


def transfer_target(
    target: Target, student: str | None, checkpoint: Path | None, studies_dir: Path
) -> Target:
    """The study's own target moved to ``student`` and/or the teacher in ``checkpoint``, with its own
    folder under ``<study>/transfer/``."""
    moved, teacher, sha256 = transfer_workspace(target.workspace, student, checkpoint, studies_dir)
    folder = transfer_dir(target.folder, moved.space.student, sha256)
    if teacher is None:
        return Target(moved, target.teacher, target.sha256, folder)
    return Target(moved, teacher, sha256, folder)

"""The final retrain: a fresh student trained in full with a policy, then tested once.

The student trains on the whole training split (trials' train subset plus the validation part) for
the space's retrain budget and is evaluated on the test split, which nothing before this reads.
The same student in the same budget without distillation shows what the teacher contributed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augsearch import files
from augsearch.data import ImageData
from augsearch.distill import evaluate, train_student
from augsearch.loader import Normaliser, make_loader
from augsearch.models import build_model
from augsearch.policy import Policy, build_transform
from augsearch.runtime import seed_everything
from augsearch.space import Space


@dataclass(frozen=True)
class RetrainResult:
    name: str  # "searched + KD", "searched, no KD", ...
    test_accuracy: float
    epochs: int
    seed: int
    kd: bool
    train_seconds: float
    images_per_second: float
    train_loss: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retrain(
    name: str,
    policy: Policy,
    space: Space,
    data: ImageData,
    normalise: Normaliser,
    teacher: nn.Module | None,
    seed: int,
    weights_path: Path | None = None,
) -> RetrainResult:
    """Train ``space.student`` from scratch with ``policy`` on all training images; test it.

    ``teacher=None`` (or ``policy.kd.alpha == 0``) trains with cross-entropy alone.
    """
    seed_everything(seed)
    student = build_model(
        space.student, in_channels=data.channels, num_classes=data.num_classes, image_size=data.image_size
    )
    settings = replace(space.retrain, subset=None)
    batches = make_loader(
        data.x_train, data.y_train, build_transform(policy), settings.batch_size, normalise.runtime, seed
    )
    result = train_student(student, batches, settings, normalise, teacher, policy.kd, description=name)
    accuracy = evaluate(student, data.x_test, data.y_test, normalise)
    if weights_path is not None:
        state = {k: v.detach().cpu() for k, v in student.state_dict().items()}
        files.save_torch(
            weights_path,
            {
                "state_dict": state,
                "model": space.student,
                "test_accuracy": accuracy,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "torch": torch.__version__,
            },
        )
    return RetrainResult(
        name=name,
        test_accuracy=accuracy,
        epochs=settings.epochs,
        seed=seed,
        kd=teacher is not None and policy.kd.alpha > 0,
        train_seconds=round(result.seconds, 2),
        images_per_second=round(result.images_per_second, 1),
        train_loss=[round(v, 5) for v in result.train_loss],
    )

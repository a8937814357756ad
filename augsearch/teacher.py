"""The frozen teacher: trained once per (dataset, architecture, budget, seed) and cached, or loaded.

A cached teacher lives in ``<studies>/teachers/<key>.pt`` with ``<key>.json`` beside it saying how it
was trained and its test accuracy, so a second study on the same data reuses it at no cost.
Checkpoints hold only tensors and plain values and are read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augsearch import files
from augsearch.data import ImageData
from augsearch.distill import evaluate, freeze, train_student
from augsearch.errors import UserError
from augsearch.loader import Normaliser, make_loader
from augsearch.models import build_model
from augsearch.policy import KDSettings, Policy, build_transform
from augsearch.runtime import seed_everything
from augsearch.settings import Space, TrainSettings


def cache_key(space: Space, data: ImageData, seed: int) -> str:
    """Readable name plus a hash of everything that changes the teacher's weights."""
    recipe = {
        "dataset": data.name,
        "synthetic": asdict(space.dataset.synthetic) if space.dataset.synthetic else None,
        "shape": list(data.x_train.shape),
        "teacher": asdict(space.teacher),
        "fixed": [[stage.name, stage.args] for stage in space.fixed],
        "seed": seed,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:10]
    name = data.name.replace("/", "_").replace(":", "_").strip("_")[-40:]
    return f"{name}-{space.teacher.model}-e{space.teacher.epochs}-s{seed}-{digest}"


def _build(space: Space, data: ImageData) -> nn.Module:
    return build_model(space.teacher.model, **data.model_shape)


def load_checkpoint(path: Path, model: nn.Module) -> None:
    """Load a checkpoint written by augsearch (``{"state_dict": ...}``) or a bare state dict."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"teacher checkpoint not found: {path}") from None
    except Exception as error:  # unpickling refused or a corrupt file: either way, not usable
        raise UserError(f"cannot read teacher checkpoint {path}: {str(error).splitlines()[0]}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise UserError(
            f"teacher checkpoint {path} does not fit model {type(model).__name__}: "
            f"{str(error).splitlines()[0]}"
        ) from None


def get_teacher(
    space: Space,
    data: ImageData,
    normalise: Normaliser,
    teachers_dir: Path,
    seed: int,
    checkpoint: Path | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Return the frozen teacher and its metadata, training and caching it on first use.

    The teacher is trained on the whole training split (train + validation) with the space's fixed
    stages as augmentation, and tested once on the test split: its accuracy is the ceiling the
    report shows, never used to choose anything.
    """
    model = _build(space, data)
    checkpoint = checkpoint or (Path(space.teacher.checkpoint) if space.teacher.checkpoint else None)
    if checkpoint is not None:
        load_checkpoint(checkpoint, model)
        info = {"source": str(checkpoint), "model": space.teacher.model}
        info["test_accuracy"] = evaluate(
            freeze(model.to(normalise.runtime.device)), data.x_test, data.y_test, normalise
        )
        return model, info

    key = cache_key(space, data, seed)
    weights, meta = teachers_dir / f"{key}.pt", teachers_dir / f"{key}.json"
    if weights.is_file() and meta.is_file():
        load_checkpoint(weights, model)
        info = json.loads(meta.read_text())
        return freeze(model.to(normalise.runtime.device)), info | {"source": str(weights), "cached": True}

    seed_everything(seed)
    model = _build(space, data)
    settings = TrainSettings(
        epochs=space.teacher.epochs,
        batch_size=space.teacher.batch_size,
        lr=space.teacher.lr,
        schedule="onecycle",
    )
    transform = build_transform(Policy(space.fixed, (), KDSettings(1.0, 0.0)))
    batches = make_loader(data.x_train, data.y_train, transform, settings.batch_size, normalise.runtime, seed)
    result = train_student(model, batches, settings, normalise, description="teacher")
    accuracy = evaluate(freeze(model), data.x_test, data.y_test, normalise)
    info = {
        "model": space.teacher.model,
        "dataset": data.name,
        "test_accuracy": accuracy,
        "trained": {**asdict(settings), "seed": seed, "fixed": [[s.name, s.args] for s in space.fixed]},
        "train_seconds": round(result.seconds, 1),
        "images_per_second": round(result.images_per_second, 1),
        "device": normalise.runtime.describe(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    files.save_torch(weights, {"state_dict": state, "model": space.teacher.model})
    files.write_json(meta, info)
    return model, info | {"source": str(weights), "cached": False}

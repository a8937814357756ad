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

import numpy as np
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


class EpochBatches:
    """The teacher's batches, each epoch's order and augmentation drawn from ``(seed, epoch)`` alone.

    Why: the teacher checkpoints every epoch, and a run resumed after a kill must end with the same
    weights as one never stopped. One loader for all epochs would draw a resumed epoch's order and
    augmentation from a fresh stream; this one is rebuilt for the epoch ``train_student`` announces
    (``set_epoch``, the convention of PyTorch's DistributedSampler), with torch's global generator
    seeded alike for whatever the model draws (dropout).
    """

    def __init__(self, data: ImageData, transform: Any, batch_size: int, runtime: Any, seed: int) -> None:
        self.data, self.transform, self.batch_size, self.runtime, self.seed = (
            data, transform, batch_size, runtime, seed,
        )  # fmt: skip
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _loader(self) -> Any:
        seed = int(np.random.SeedSequence([self.seed % 2**32, self.epoch]).generate_state(1)[0])
        torch.manual_seed(seed)
        x, y = self.data.x_train, self.data.y_train
        return make_loader(x, y, self.transform, self.batch_size, self.runtime, seed)

    def __len__(self) -> int:
        return len(self._loader())

    def __iter__(self) -> Any:
        return iter(self._loader())


def checkpoint_sha256(space: Space, checkpoint: Path | None) -> str | None:
    """The sha256 of the teacher checkpoint a study uses (``checkpoint``, else the space's
    ``teacher.checkpoint``), or None when its teacher is trained and cached by augsearch (the cache key
    already says how). A study's fingerprint and a retrain's key include it, so another teacher never
    resumes a study or reuses retrain runs made with the first."""
    path = checkpoint or (Path(space.teacher.checkpoint) if space.teacher.checkpoint else None)
    if path is None:
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise UserError(f"cannot read teacher checkpoint {path}: {error.strerror or error}") from None
    return digest.hexdigest()


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
    batches = EpochBatches(data, transform, settings.batch_size, normalise.runtime, seed)
    progress = teachers_dir / f"{key}.ckpt"  # every epoch, atomically: a killed run resumes from it
    result = train_student(model, batches, settings, normalise, description="teacher", checkpoint=progress)
    accuracy = evaluate(freeze(model), data.x_test, data.y_test, normalise)
    info = {
        "model": space.teacher.model,
        "dataset": data.name,
        "test_accuracy": accuracy,
        "trained": {**settings.to_dict(), "seed": seed, "fixed": [[s.name, s.args] for s in space.fixed]},
        "train_seconds": round(result.seconds, 1),
        "images_per_second": round(result.images_per_second, 1),
        "device": normalise.runtime.describe(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    files.save_torch(weights, {"state_dict": state, "model": space.teacher.model})
    files.write_json(meta, info)
    progress.unlink(missing_ok=True)
    return model, info | {"source": str(weights), "cached": False}

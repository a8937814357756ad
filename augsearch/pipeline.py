"""``augsearch run`` from top to bottom: space, data, teacher, search, export, retrain, report.

Every step reads its inputs from the step above and writes its outputs under
``<studies>/<study>/``; running the same command again resumes: finished trials are kept, a cached
teacher is reused, and a retrain already done for the same best trial is not redone.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from tqdm.auto import tqdm

from augsearch import files, report
from augsearch.data import ImageData, load_dataset, validation_split
from augsearch.errors import UserError
from augsearch.export import write_policy
from augsearch.loader import Normaliser
from augsearch.models import build_model
from augsearch.policy import KDSettings, Policy
from augsearch.retrain import retrain
from augsearch.runtime import resolve
from augsearch.space import Space, load_space
from augsearch.study import (
    TrialContext,
    default_storage,
    finished,
    make_objective,
    open_study,
    optimize,
    requeue_interrupted,
    trial_subset,
)
from augsearch.teacher import get_teacher


@dataclass(frozen=True)
class RunOptions:
    """``augsearch run``'s settings; ``None`` means "as the space says"."""

    space: str = "default"
    study: str | None = None
    studies_dir: Path = Path("studies")
    dataset: str | None = None
    data_dir: Path | None = None
    trials: int | None = None
    timeout: float | None = None
    device: str = "auto"
    seed: int | None = None
    storage: str | None = None
    retrain: bool = True
    teacher_checkpoint: Path | None = None


def check_models(space: Space, data: ImageData) -> None:
    """Build teacher and student once before anything is written, so a bad name changes nothing."""
    for name in (space.teacher.model, space.student):
        build_model(name, in_channels=data.channels, num_classes=data.num_classes, image_size=data.image_size)


def _progress_line(bar: tqdm) -> Any:
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        best = f"{study.best_value:.4f}" if any(t.value is not None for t in study.trials) else "-"
        seconds = trial.user_attrs.get("wall_seconds", 0)
        bar.write(
            f"trial {trial.number:>3} {trial.state.name.lower():<8} val {value}  best {best}  {seconds:.0f}s"
        )
        bar.update(1)

    return callback


def run(options: RunOptions) -> dict[str, Any]:
    started = time.perf_counter()
    space = load_space(options.space)
    name = options.study or space.name
    seed = space.study.seed if options.seed is None else options.seed
    trials = space.study.trials if options.trials is None else options.trials
    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    runtime = resolve(options.device)
    data = load_dataset(
        options.dataset or space.dataset.name, options.data_dir, synthetic=space.dataset.synthetic
    )
    check_models(space, data)
    for note in data.notes:
        tqdm.write(f"note: {note}")

    study_dir = options.studies_dir / name
    storage = options.storage or default_storage(study_dir)
    if options.storage is None:
        study_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(name, storage, space, data.name, seed)
    if options.storage is None and (stale := requeue_interrupted(study)):
        tqdm.write(f"re-queued {stale} trial(s) left running by an interrupted run")
    study_dir.mkdir(parents=True, exist_ok=True)

    normalise = Normaliser.fit(data.x_train, runtime)
    tqdm.write(
        f"device: {runtime.describe()}; data: {data.name} {tuple(data.x_train.shape)} from {data.source}"
    )
    teacher, teacher_info = get_teacher(
        space, data, normalise, options.studies_dir / "teachers", seed, options.teacher_checkpoint
    )
    tqdm.write(
        f"teacher {space.teacher.model}: test accuracy {teacher_info['test_accuracy']:.4f} "
        f"({'cached' if teacher_info.get('cached') else teacher_info['source']})"
    )
    study.set_user_attr("teacher", {k: teacher_info.get(k) for k in ("model", "source", "test_accuracy")})
    study.set_user_attr("student", space.student)

    train_index, val_index = validation_split(data.y_train, space.dataset.validation_fraction, seed)
    context = TrialContext(
        space, data, trial_subset(train_index, space.trial.subset, seed), val_index, teacher, normalise, seed
    )
    search_start = time.perf_counter()
    done_before = finished(study)
    with tqdm(total=trials, initial=min(done_before, trials), desc="trials", unit="trial") as bar:
        optimize(study, make_objective(context), trials, options.timeout, [_progress_line(bar)])
    search_seconds = time.perf_counter() - search_start
    if not any(trial.value is not None for trial in study.trials):
        raise UserError(
            f"study '{name}' has no completed trial yet; run again with more --trials or --timeout"
        )

    best = study.best_trial
    policy = Policy.from_dict(best.user_attrs["policy_json"])
    provenance = {
        "study": name,
        "storage": storage if options.storage else str(study_dir / "study.db"),
        "trial": best.number,
        "validation_accuracy": best.value,
        "space": str(space.path),
        "space_sha256": space.sha256,
        "dataset": data.name,
        "teacher": study.user_attrs["teacher"],
        "student": space.student,
        "seed": seed,
    }
    write_policy(study_dir / "best_policy.json", policy, provenance)

    results = (
        _retrain_all(space, data, normalise, teacher, policy, best.number, seed, study_dir)
        if options.retrain
        else []
    )
    summary = {
        "study": name,
        "space": space.name,
        "dataset": data.name,
        "device": runtime.describe(),
        "teacher": study.user_attrs["teacher"],
        "student": space.student,
        "trials": report.trial_counts(study),
        "best_trial": {"number": best.number, "validation_accuracy": best.value, "policy": policy.describe()},
        "search_seconds_this_run": round(search_seconds, 1),
        "retrain": results,
        "wall_seconds_this_run": round(time.perf_counter() - started, 1),
    }
    report.write(study_dir, summary)
    return summary


def _retrain_all(
    space: Space,
    data: ImageData,
    normalise: Normaliser,
    teacher,
    policy: Policy,
    trial: int,
    seed: int,
    study_dir: Path,
) -> list[dict[str, Any]]:
    """The searched policy with KD, and the same without KD; reused when already done for this trial."""
    path = study_dir / "retrain.json"
    key = {"trial": trial, "policy": policy.to_dict(), "retrain": asdict(space.retrain), "seed": seed}
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == json.loads(json.dumps(key)):
            tqdm.write("retrain already done for this best trial: reusing retrain.json")
            return stored["results"]
    no_kd = Policy(policy.fixed, policy.ops, KDSettings(policy.kd.temperature, 0.0))
    runs = [
        retrain("searched + KD", policy, space, data, normalise, teacher, seed, study_dir / "student.pt"),
        retrain("searched, no KD", no_kd, space, data, normalise, None, seed),
    ]
    results = [run.to_dict() for run in runs]
    files.write_json(path, {"key": key, "results": results})
    return results

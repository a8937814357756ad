"""The commands' flows, top to bottom: ``run``, ``retrain``, ``report`` and ``validate``.

``run``: space -> data -> teacher -> search -> export -> retrain -> report. Every step writes under
``<studies>/<study>/``, and running the same command again resumes: finished trials are kept, a cached
teacher is reused, and a retrain run already finished is not redone. ``retrain`` and ``report`` rebuild
the same workspace from what the study recorded (space file, dataset, seed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from tqdm import tqdm

from augsearch import report
from augsearch.attributes import WALL_SECONDS
from augsearch.data import validation_split
from augsearch.errors import UserError
from augsearch.export import export_best, load_policy
from augsearch.owner import own_study, release_study, share_study
from augsearch.policy import build_transform, trial_policy
from augsearch.preview import preview_images, render_grid
from augsearch.retrain import candidates, load_runs, retrain_all
from augsearch.space import load_space
from augsearch.storage import load_stored_study, local_storage, requeue_interrupted
from augsearch.study import make_objective, open_study
from augsearch.trials import finished, optimize
from augsearch.warmstart import enqueue_warm_starts
from augsearch.workers import SpawnOptions, WorkersFailed, describe_exit, spawn_workers
from augsearch.workspace import Workspace, open_workspace, teacher_for, trial_context, workspace_of


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
    workers: int = 1  # worker processes on this machine (augsearch/workers.py)


@dataclass(frozen=True)
class RetrainOptions:
    """``augsearch retrain``'s settings."""

    study: str
    studies_dir: Path = Path("studies")
    storage: str | None = None
    epochs: int | None = None
    seeds: int = 3
    baselines: tuple[str, ...] = ()
    top: int = 1
    device: str = "auto"
    data_dir: Path | None = None


def _progress_line(bar: tqdm) -> Any:
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        best = f"{study.best_value:.4f}" if any(t.value is not None for t in study.trials) else "-"
        seconds = trial.user_attrs.get(WALL_SECONDS, 0)
        bar.write(
            f"trial {trial.number:>3} {trial.state.name.lower():<8} val {value}  best {best}  {seconds:.0f}s"
        )
        bar.update(1)

    return callback


def run(options: RunOptions) -> tuple[str, Path]:
    """Search, export the best policy, retrain it beside the space's baselines, report.

    Returns the report's text and the study's folder.
    """
    space = load_space(options.space)
    name = options.study or space.name
    seed = space.study.seed if options.seed is None else options.seed
    trials = space.study.trials if options.trials is None else options.trials
    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    if options.workers < 1:
        raise UserError(f"--workers must be at least 1, got {options.workers}")
    if options.workers > 1 and (options.storage or "").startswith("sqlite"):
        raise UserError(
            "SQLite is not safe for several workers; pass --storage postgresql://... or a journal file "
            "path, or leave --storage out (a journal file in the study's folder)"
        )
    study_dir = options.studies_dir / name
    storage = options.storage or local_storage(study_dir, options.workers)
    workspace = open_workspace(
        space, options.dataset or space.dataset.name, options.data_dir, options.device, seed
    )
    data = workspace.data

    if options.storage is None:
        study_dir.mkdir(parents=True, exist_ok=True)
    own_study(name, storage)  # one `run` at a time: the sweep and the warm starts (augsearch/owner.py)
    study = open_study(name, storage, space, data.name, seed)
    enqueue_warm_starts(study, space, data.channels)  # the space's baselines first, once per study
    # `run` owns the study: before its workers start, a RUNNING trial is a dead process's (a server's
    # dead trials are told by their heartbeats instead, so live workers elsewhere are safe).
    if stale := requeue_interrupted(study, owned=True):
        tqdm.write(f"re-queued {stale} trial(s) left running by an interrupted run")
    share_study(name, storage)  # held shared, as each worker holds it, until the search ends
    study_dir.mkdir(parents=True, exist_ok=True)

    shape = tuple(data.x_train.shape)
    tqdm.write(f"device: {workspace.runtime.describe()}; data: {data.name} {shape} from {data.source}")
    teacher, teacher_info = teacher_for(workspace, options.studies_dir, options.teacher_checkpoint)
    origin = "cached" if teacher_info.get("cached") else teacher_info["source"]
    tqdm.write(f"teacher {space.teacher.model}: test accuracy {teacher_info['test_accuracy']:.4f} ({origin})")
    study.set_user_attr("teacher", {k: teacher_info.get(k) for k in ("model", "source", "test_accuracy")})
    study.set_user_attr("student", space.student)
    study.set_user_attr("device", workspace.runtime.describe())
    checkpoint = options.teacher_checkpoint
    study.set_user_attr("teacher_checkpoint", str(checkpoint.resolve()) if checkpoint else None)

    study.set_user_attr("target_trials", trials)  # what `augsearch worker` runs up to, by default
    if options.workers > 1:
        spawn = SpawnOptions(
            options.workers, name, options.studies_dir, storage, trials, options.timeout, options.device,
            options.data_dir,
        )  # fmt: skip
        codes = spawn_workers(spawn, tqdm.write)
        if dead := [f"worker {i}: {describe_exit(code)}" for i, code in enumerate(codes) if code]:
            if finished(study) < trials:
                raise WorkersFailed(f"{'; '.join(dead)}; run the same command again to resume")
            tqdm.write(f"note: {'; '.join(dead)}, but the study has its {trials} trials")
    else:
        context = trial_context(workspace, teacher, study_dir)
        with tqdm(total=trials, initial=min(finished(study), trials), desc="trials", unit="trial") as bar:
            optimize(study, make_objective(context), trials, options.timeout, [_progress_line(bar)])
    if not any(trial.value is not None for trial in study.trials):
        raise UserError(
            f"study '{name}' has no completed trial yet; run again with more --trials or --timeout"
        )

    release_study(name, storage)
    export_best(study, storage, study_dir / "best_policy.json")
    if options.retrain:
        runs = candidates(study, workspace, 1, space.baselines.names)
        retrain_all(runs, workspace, teacher, 1, None, study_dir)
    return _report(study, workspace, study_dir), study_dir


def retrain(options: RetrainOptions) -> str:
    """Retrain the best ``top`` trials and the named baselines with ``seeds`` seeds each; report."""
    if options.seeds < 1 or options.top < 1 or (options.epochs is not None and options.epochs < 1):
        raise UserError("--seeds, --top and --epochs must be at least 1")
    study = load_stored_study(options.study, options.studies_dir, options.storage)
    workspace = workspace_of(study, options.data_dir, options.device)
    checkpoint = study.user_attrs.get("teacher_checkpoint")
    teacher, _ = teacher_for(workspace, options.studies_dir, Path(checkpoint) if checkpoint else None)
    runs = candidates(study, workspace, options.top, options.baselines)
    if not runs:
        raise UserError(f"study '{options.study}' has no completed trial to retrain and no --baselines given")
    study_dir = options.studies_dir / options.study
    retrain_all(runs, workspace, teacher, options.seeds, options.epochs, study_dir)
    return _report(study, workspace, study_dir)


def report_only(study_name: str, studies_dir: Path, storage: str | None, data_dir: Path | None) -> str:
    """Rewrite the report of a stored study from its trials and finished retrain runs."""
    study = load_stored_study(study_name, studies_dir, storage)
    workspace = workspace_of(study, data_dir, "cpu")
    return _report(study, workspace, studies_dir / study_name)


def _report(study: optuna.Study, workspace: Workspace, study_dir: Path) -> str:
    samples = None
    if any(trial.value is not None for trial in study.trials):
        policy = trial_policy(study.best_trial)
        space, data = workspace.space, workspace.data
        _, val_index = validation_split(data.y_train, space.dataset.validation_fraction, workspace.seed)
        samples = render_grid(
            build_transform(policy), preview_images(data, val_index, workspace.seed), workspace.seed
        )
    return report.write(study_dir, study, load_runs(study_dir), samples)


def _is_policy_file(path: Path) -> bool:
    """By extension (.json: policy, .yaml/.yml: space), else by content: a JSON object with "format"."""
    if path.suffix == ".json":
        return True
    if path.suffix in (".yaml", ".yml") or not path.is_file():
        return False
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(document, dict) and "format" in document


def validate_file(name: str) -> str:
    """``augsearch validate FILE``: the one-line verdict for a space or a policy file; UserError if bad."""
    path = Path(name)
    if _is_policy_file(path):
        loaded = load_policy(path)
        kd = loaded.kd
        beta = "" if kd.beta is None else f", beta={kd.beta:g}"
        mix = loaded.mix
        mixing = f"; mixing {mix.kind}, p={mix.p:g}, alpha={mix.alpha:g}" if mix.active else ""
        return (
            f"ok: policy file {path} ({len(loaded.transform.transforms)} top-level transforms; "
            f"KD {kd.loss}, T={kd.temperature:g}, alpha={kd.alpha:g}{beta}{mixing})"
        )
    if path.is_file() and "/" not in name and path.suffix not in (".yaml", ".yml"):
        name = f"./{name}"  # a file, not a shipped space's name
    space = load_space(name)
    return f"ok: search space '{space.name}' ({space.path}): {space.description or 'no description'}"

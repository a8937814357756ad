"""The commands' flows, top to bottom: ``run``, ``retrain``, ``report``, ``validate`` and ``preview``.

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

import albumentations as A
import optuna
from tqdm import tqdm

from augsearch import files, progress, report
from augsearch.attributes import POLICY_JSON, WALL_SECONDS
from augsearch.bounded import parse_json, read_bounded
from augsearch.data import load_dataset, validation_split
from augsearch.errors import UserError
from augsearch.export import export_best, load_policy
from augsearch.fair import KD_TUNED, expand
from augsearch.kdtuned import as_dict as kd_tuned_dict
from augsearch.kdtuned import kd_tuned
from augsearch.lineup import lineup
from augsearch.owner import own_study, release_study, share_study
from augsearch.policy import build_transform, trial_policy
from augsearch.preview import GridSpec, grid_size, preview_images, render_grid
from augsearch.retrain import load_runs, retrain_all
from augsearch.schedule import describe_schedule
from augsearch.settings import Space
from augsearch.space import load_space
from augsearch.storage import load_stored_study, local_storage, requeue_interrupted
from augsearch.study import make_objective, open_study
from augsearch.teacher import checkpoint_sha256
from augsearch.transfer import Target, transfer_target
from augsearch.trials import finished, optimize
from augsearch.warmstart import enqueue_warm_starts
from augsearch.workers import SpawnOptions, WorkersFailed, describe_exit, spawn_workers
from augsearch.workspace import (
    Workspace,
    open_workspace,
    synthesis_for,
    teacher_for,
    trial_context,
    workspace_of,
)


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
    baselines_kd: tuple[str, ...] | None = None  # fixed/searched KD for the KD baselines; None: the space's
    student: str | None = None  # transfer: retrain on this student (augsearch/transfer.py)
    teacher_checkpoint: Path | None = None  # transfer: distil from this teacher file


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


@dataclass(frozen=True)
class RunPlan:
    """What ``augsearch run`` does, every setting resolved: the command line's, else the space's, else
    the default."""

    space: Space
    study: str
    dataset: str
    seed: int
    trials: int
    storage: str  # the URL; without --storage, the study's local storage (storage.local_storage)


def resolve_run(options: RunOptions) -> RunPlan:
    """The one place where ``run``'s options meet the space: CLI > space > default, checked."""
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
    storage = options.storage or local_storage(options.studies_dir / name, options.workers)
    return RunPlan(space, name, options.dataset or space.dataset.name, seed, trials, storage)


def run(options: RunOptions) -> tuple[str, Path]:
    """Search, export the best policy, retrain it beside the space's baselines, report.

    Returns the report's text and the study's folder.
    """
    plan = resolve_run(options)
    space, name, seed, trials, storage = plan.space, plan.study, plan.seed, plan.trials, plan.storage
    study_dir = options.studies_dir / name
    workspace = open_workspace(space, plan.dataset, options.data_dir, options.device, seed)
    data = workspace.data

    if options.storage is None:
        study_dir.mkdir(parents=True, exist_ok=True)
    teacher_sha256 = checkpoint_sha256(space, options.teacher_checkpoint)
    own_study(name, storage)  # one `run` at a time: the sweep and the warm starts (augsearch/owner.py)
    study = open_study(name, storage, space, data.name, seed, teacher_sha256=teacher_sha256)
    enqueue_warm_starts(study, space, data.channels)  # the space's baselines first, once per study
    # `run` owns the study: before its workers start, a RUNNING trial is a dead process's (a server's
    # dead trials are told by their heartbeats instead, so live workers elsewhere are safe).
    if stale := requeue_interrupted(study, owned=True):
        tqdm.write(f"re-queued {stale} trial(s) left running by an interrupted run")
    share_study(name, storage)  # held shared, as each worker holds it, until the search ends
    study_dir.mkdir(parents=True, exist_ok=True)

    shape = tuple(data.x_train.shape)
    few = space.dataset.labelled
    labelled = "" if few is None else f"; the student learns from {few} labelled images of them"
    where = f"{data.name} {shape} from {data.source}{labelled}"
    tqdm.write(f"device: {workspace.runtime.describe()}; data: {where}")
    teacher, teacher_info = teacher_for(workspace, options.studies_dir, options.teacher_checkpoint)
    origin = "cached" if teacher_info.get("cached") else teacher_info["source"]
    tqdm.write(f"teacher {space.teacher.model}: test accuracy {teacher_info['test_accuracy']:.4f} ({origin})")
    study.set_user_attr("teacher", {k: teacher_info.get(k) for k in ("model", "source", "test_accuracy")})
    study.set_user_attr("student", space.student)
    study.set_user_attr("device", workspace.runtime.describe())
    checkpoint = options.teacher_checkpoint
    study.set_user_attr("teacher_checkpoint", str(checkpoint.resolve()) if checkpoint else None)
    synthesis = _synthesis(workspace, teacher, options.studies_dir, study)  # trained once, if asked for

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
        context = trial_context(workspace, teacher, study_dir, synthesis)
        with progress.bar(
            total=trials, initial=min(finished(study), trials), desc="trials", unit="trial"
        ) as bar:
            optimize(study, make_objective(context), trials, options.timeout, [_progress_line(bar)])
    if not any(trial.value is not None for trial in study.trials):
        raise UserError(
            f"study '{name}' has no completed trial yet; run again with more --trials or --timeout"
        )

    release_study(name, storage)
    export_best(study, storage, study_dir / "best_policy.json")
    if options.retrain:
        names, kd_row = expand(space.baselines.names, space.baselines.kd), None
        if KD_TUNED in names:  # asked for by the space: the KD-only search runs here (augsearch/kdtuned.py)
            teacher_file, where = Path(teacher_info["source"]), options.studies_dir
            kd_row, info = kd_tuned(study, workspace, teacher, teacher_file, where, options.storage)
            tqdm.write(report.describe_kd_tuned(kd_tuned_dict(info)))
            files.write_json(study_dir / "kd-tuned.json", kd_tuned_dict(info))
        runs = lineup(study, workspace, 1, names, kd_row)
        retrain_all(runs, workspace, teacher, 1, None, study_dir, teacher_sha256, synthesis)
    return _report(study, workspace, study_dir), study_dir


def _synthesis(workspace: Workspace, teacher: Any, studies_dir: Path, study: optuna.Study | None) -> Any:
    """The study's synthetic-image source (None without ``synthesis:``), said on one line; its
    provenance goes into the study (``synthesis_source``), whence export writes it into the policy file."""
    source = synthesis_for(workspace, teacher, studies_dir)
    if source is None:
        return None
    info = source.provenance
    quality = info.get("quality") or {}
    figures = (
        f"teacher agreement {quality['teacher_agreement']:.3f}, Frechet distance "
        f"{quality['frechet_distance']:.3g} (real: accuracy {quality['real_teacher_accuracy']:.3f}, "
        f"distance {quality['real_frechet_distance']:.3g})"
        if quality
        else f"{info.get('images')} images, labels from the {info.get('labels')}"
    )
    origin = "cached" if info.get("cached", True) else "trained now"
    tqdm.write(f"synthesis: {info['file']} ({origin}); {figures}")
    if study is not None:
        study.set_user_attr("synthesis_source", {k: v for k, v in info.items() if k != "cached"})
    return source


def retrain(options: RetrainOptions) -> str:
    """Retrain the best ``top`` trials and the named baselines with ``seeds`` seeds each; report."""
    if options.seeds < 1 or options.top < 1 or (options.epochs is not None and options.epochs < 1):
        raise UserError("--seeds, --top and --epochs must be at least 1")
    study = load_stored_study(options.study, options.studies_dir, options.storage)
    workspace = workspace_of(study, options.data_dir, options.device)
    checkpoint = study.user_attrs.get("teacher_checkpoint")
    checkpoint = Path(checkpoint) if checkpoint else None
    teacher, teacher_info = teacher_for(workspace, options.studies_dir, checkpoint)
    teacher_sha256 = checkpoint_sha256(workspace.space, checkpoint)
    synthesis = _synthesis(workspace, teacher, options.studies_dir, None)
    study_dir = options.studies_dir / options.study
    names = expand(options.baselines, options.baselines_kd or workspace.space.baselines.kd)
    target = Target(workspace, teacher, teacher_sha256, study_dir)
    if options.student is not None or options.teacher_checkpoint is not None:  # checked before any work
        target = transfer_target(target, options.student, options.teacher_checkpoint, options.studies_dir)
    kd_row = None
    if KD_TUNED in names:  # the KD-only search with the same trials, reused or run now (augsearch/kdtuned.py)
        kd_row, info = kd_tuned(
            study, workspace, teacher, Path(teacher_info["source"]), options.studies_dir, options.storage
        )  # with the study's own student and teacher, also for a transfer
        tqdm.write(report.describe_kd_tuned(kd_tuned_dict(info)))
        files.write_json(target.folder / "kd-tuned.json", kd_tuned_dict(info))
    runs = lineup(study, target.workspace, options.top, names, kd_row)
    if not runs:
        raise UserError(f"study '{options.study}' has no completed trial to retrain and no --baselines given")
    workspace, folder = target.workspace, target.folder
    retrain_all(
        runs, workspace, target.teacher, options.seeds, options.epochs, folder, target.sha256, synthesis
    )
    return _report(study, workspace, folder, workspace.space.student if folder != study_dir else None)


@dataclass(frozen=True)
class ReportOptions:
    """``augsearch report``: which stored study, where its data is."""

    study: str
    studies_dir: Path = Path("studies")
    storage: str | None = None
    data_dir: Path | None = None


def report_only(options: ReportOptions) -> str:
    """Rewrite the report of a stored study from its trials and finished retrain runs."""
    study = load_stored_study(options.study, options.studies_dir, options.storage)
    workspace = workspace_of(study, options.data_dir, "cpu")
    return _report(study, workspace, options.studies_dir / options.study)


def _report(study: optuna.Study, workspace: Workspace, study_dir: Path, student: str | None = None) -> str:
    samples = None
    if any(trial.value is not None for trial in study.trials):
        policy = trial_policy(study.best_trial)
        space, data = workspace.space, workspace.data
        _, val_index = validation_split(data.y_train, space.dataset.validation_fraction, workspace.seed)
        samples = render_grid(
            build_transform(policy), preview_images(data, val_index, workspace.seed), workspace.seed
        )
    return report.write(study_dir, study, load_runs(study_dir), samples, student)


@dataclass(frozen=True)
class GeneratorOptions:
    """``augsearch generator``: train (or load) the space's generator and say its quality figures."""

    space: str = "default"
    studies_dir: Path = Path("studies")
    dataset: str | None = None
    data_dir: Path | None = None
    device: str = "auto"
    seed: int | None = None
    teacher_checkpoint: Path | None = None


def generator(options: GeneratorOptions) -> str:
    """Train the space's generator (its teacher first, if not cached) or load the cached one; the
    quality figures, one per line. The same seed as ``augsearch run`` gives the same cache entry."""
    space = load_space(options.space)
    if space.synthesis is None:
        raise UserError(f"{space.path}: the space has no synthesis section, so no generator to train")
    seed = space.study.seed if options.seed is None else options.seed
    workspace = open_workspace(
        space, options.dataset or space.dataset.name, options.data_dir, options.device, seed
    )
    teacher, _ = teacher_for(workspace, options.studies_dir, options.teacher_checkpoint)
    source = _synthesis(workspace, teacher, options.studies_dir, None)
    return json.dumps(source.provenance, indent=2)


def _is_policy_file(path: Path) -> bool:
    """By extension (.json: policy, .yaml/.yml: space), else by content: a JSON object with "format"."""
    if path.suffix == ".json":
        return True
    if path.suffix in (".yaml", ".yml") or not path.is_file():
        return False
    try:
        document = parse_json(read_bounded(path).decode(), path)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    except UserError:
        return True  # JSON, refused by a bound: load_policy says why
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
        schedule = "" if loaded.schedule.constant else f"; strength {describe_schedule(loaded.schedule)}"
        if (syn := loaded.synthesis) is not None:
            mixing += f"; synthesis ratio={syn.ratio:g}, hard_labels={syn.hard_labels}, augment={syn.augment}"
        return (
            f"ok: policy file {path} ({len(loaded.transform.transforms)} top-level transforms; "
            f"KD {kd.loss}, T={kd.temperature:g}, alpha={kd.alpha:g}{beta}{mixing}{schedule})"
        )
    if path.is_file() and "/" not in name and path.suffix not in (".yaml", ".yml"):
        name = f"./{name}"  # a file, not a shipped space's name
    space = load_space(name)
    return f"ok: search space '{space.name}' ({space.path}): {space.description or 'no description'}"


@dataclass(frozen=True)
class PreviewOptions:
    """``augsearch preview``'s settings: a policy file, or a study (and a trial, default the best)."""

    output: Path
    policy_file: Path | None = None
    study: str | None = None
    trial: int | None = None
    studies_dir: Path = Path("studies")
    storage: str | None = None
    dataset: str | None = None
    data_dir: Path | None = None


def _source(options: PreviewOptions) -> tuple[A.Compose, dict[str, Any], str]:
    """(transform, settings that chose the images, what it is) for a policy file or a stored trial."""
    if options.policy_file is not None:
        loaded = load_policy(options.policy_file)
        return loaded.transform, loaded.provenance, str(options.policy_file)
    study = load_stored_study(options.study, options.studies_dir, options.storage)
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    if options.trial is None:
        try:
            trial = study.best_trial
        except ValueError:
            raise UserError(f"study '{options.study}' has no completed trial; pass --trial N") from None
    elif options.trial in trials:
        trial = trials[options.trial]
    else:
        raise UserError(f"study '{options.study}' has no trial {options.trial} (it has {len(trials)})")
    if POLICY_JSON not in trial.user_attrs:
        raise UserError(f"trial {trial.number} of study '{options.study}' stored no policy")
    what = f"trial {trial.number} of study '{options.study}'"
    return build_transform(trial_policy(trial)), dict(study.user_attrs), what


def write_preview(options: PreviewOptions, spec: GridSpec | None = None) -> str:
    """Draw the grid a trial stores, for a policy file or a stored trial, to ``options.output``.

    The images come from the dataset and seed the policy was searched with (the file's provenance
    or the study's attributes), so the grid of a stored trial is byte-identical to its artifact.
    Returns a one-line description for the CLI.
    """
    spec = spec or GridSpec()
    if (options.policy_file is None) == (options.study is None):
        raise UserError("give either a policy file or --study NAME")
    transform, settings, what = _source(options)
    dataset = options.dataset or settings.get("dataset")
    if dataset is None:
        raise UserError(f"{what} does not say which dataset it was searched on; pass --dataset")
    seed = int(settings.get("seed") or 0)
    fraction, synthetic = 0.1, None
    if settings.get("space"):
        try:
            space = load_space(settings["space"])
            fraction, synthetic = space.dataset.validation_fraction, space.dataset.synthetic
        except UserError:
            pass  # the space file moved: a 10% split still shows the policy, on other images maybe
    data = load_dataset(dataset, options.data_dir, synthetic=synthetic)
    images = preview_images(data, validation_split(data.y_train, fraction, seed)[1], seed, spec)
    files.write_bytes(options.output, render_grid(transform, images, seed, spec))
    width, height = grid_size(images.shape[1], len(images), spec)
    return f"wrote {options.output} ({what}, {len(images)} {data.name} images, {width}x{height} px)"

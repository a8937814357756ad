"""The Optuna study: storage, sampler, pruner, the objective of one trial, and resuming.

One trial = sample a policy and KD settings, distil a fresh student on a fixed training subset for
a few epochs, report validation accuracy after every epoch (so the pruner can stop it), return the
last one. Every trial starts from the same student initialisation and the same data order (common
random numbers): differences between trials then come from the policy, not from the seed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import TrialState
from torch import nn

from augsearch.data import ImageData
from augsearch.distill import NonFiniteLoss, train_student
from augsearch.errors import UserError
from augsearch.loader import Normaliser, make_loader
from augsearch.models import build_model
from augsearch.policy import build_transform, sample_policy, sample_training
from augsearch.preview import artifact_store, attach, preview_images, render_grid
from augsearch.proxy import proxy_images, screen
from augsearch.runtime import seed_everything
from augsearch.space import Space
from augsearch.warmstart import WARM_START

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def default_storage(study_dir: Path) -> str:
    """One embedded SQLite file per study, which ``optuna-dashboard sqlite:///...`` opens as is."""
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def journal_storage(study_dir: Path) -> str:
    """The study's journal file: the local storage for several worker processes (SQLite is not safe there).

    A storage "URL" without ``://`` is a journal file path; ``optuna-dashboard PATH`` opens it as is.
    """
    return str((study_dir / "journal.log").resolve())


def local_storage(study_dir: Path, workers: int) -> str:
    """The storage ``run`` uses without ``--storage``: the study's existing one, else SQLite for one worker
    and a journal file for several. A SQLite study is not moved to a journal behind the user's back."""
    journal, database = study_dir / "journal.log", study_dir / "study.db"
    if journal.is_file():
        return journal_storage(study_dir)
    if database.is_file() and workers > 1:
        raise UserError(
            f"study '{study_dir.name}' is stored in SQLite ({database}), which is not safe for several "
            f"workers; resume it with --workers 1, or pass --study NEW_NAME or --storage postgresql://..."
        )
    return default_storage(study_dir) if workers == 1 else journal_storage(study_dir)


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds for server storages; the environment may shorten them.

    A live worker records a heartbeat every interval; a RUNNING trial whose last one is older than the grace
    period belongs to a dead worker (kill -9, lost machine). The grace is three intervals, so a busy database
    or a long pause of one process never fails a live trial. ``AUGSEARCH_HEARTBEAT_INTERVAL`` and
    ``AUGSEARCH_GRACE_PERIOD`` override them (the tests use 1 s and 3 s).
    """
    values = []
    for name, default in (("AUGSEARCH_HEARTBEAT_INTERVAL", 60), ("AUGSEARCH_GRACE_PERIOD", None)):
        raw = os.environ.get(name)
        if raw is None:
            values.append(default if default is not None else 3 * values[0])
            continue
        if not raw.isdigit() or int(raw) < 1:
            raise UserError(f"{name} must be a whole number of seconds >= 1, got {raw!r}")
        values.append(int(raw))
    return values[0], values[1]


def _server_url(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy; with only psycopg 3 installed, ask for that one."""
    scheme, rest = url.split("://", 1)
    plain = scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg2") is None
    if plain and importlib.util.find_spec("psycopg") is not None:
        return f"postgresql+psycopg://{rest}"
    return url


def _retry_callback() -> dict[str, Any]:
    """Re-queue a dead worker's trial with its parameters, at most 3 times (a trial that kills its
    worker every time must not loop forever). Optuna 4.9 renamed the callback and its argument."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        if retry is not None:
            return {"heartbeat_stale_trial_callback": retry(max_retry=3)}
        return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage behind ``url``: an RDB URL, or a journal file path (no ``://``).

    SQLite gets a generous lock timeout so a dashboard reading it never fails a write. A server keeps its
    pooled connections checked (``pool_pre_ping``: a connection the server dropped during a long trial is
    replaced, not failed) and runs Optuna's heartbeats, so a dead worker's trial is failed after the grace
    period and re-queued with its parameters (``RetryHeartbeatStaleTrialCallback``, at most 3 times).
    Several processes creating the tables of an empty database at once can collide; that is retried.
    """
    if "://" not in url:
        return open_journal(Path(url))
    if url.startswith("sqlite"):
        options: dict[str, Any] = {"engine_kwargs": {"connect_args": {"timeout": 60}}}
    else:
        interval, grace = heartbeat_settings()
        options = {"engine_kwargs": {"pool_pre_ping": True}, "heartbeat_interval": interval}
        options |= {"grace_period": grace, **_retry_callback()}
        url = _server_url(url)
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **options)
        except Exception as error:  # bad URL, unreachable server, missing driver: all the user's to fix
            racing = "already exists" in str(error) or "duplicate key" in str(error)
            if racing and attempt < 3:  # another process is creating the same tables right now
                time.sleep(0.5 * (attempt + 1))
                continue
            raise UserError(f"cannot open storage {url}: {str(error).splitlines()[0]}") from None
    raise AssertionError("unreachable")


def repair_journal(path: Path) -> int:
    """Cut a torn last record off a journal file; returns how many bytes were cut (0: none was torn).

    A writer killed in the middle of an append leaves a last line without its newline (or, rarely, one
    that is not JSON). Optuna's reader skips such a last line, but the next append would glue a new
    record onto it: that line and every record after it would then be unreadable. Cutting the torn tail
    before anyone appends keeps every earlier record, so every trial finished before the crash. It runs
    under the journal's own lock, so a live writer's half-written line is never mistaken for a torn one.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    lock = JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        with open(path, "rb+") as handle:
            data = handle.read()
            keep = data.rfind(b"\n") + 1  # 0 when there is no complete line at all
            start = data.rfind(b"\n", 0, max(keep - 1, 0)) + 1
            if keep and not _is_json(data[start:keep]):
                keep = start
            if keep < len(data):
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())
    finally:
        lock.release()
    return len(data) - keep


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def open_journal(path: Path) -> optuna.storages.BaseStorage:
    """A journal file storage, repaired first. ``JournalFileOpenLock`` (O_EXCL lock file), Optuna's advice
    for local disks and NFSv3 or later; it excludes the default symlink lock too (same lock file name), so
    a plain ``optuna-dashboard journal.log`` beside a search is safe."""
    if not path.parent.is_dir():
        raise UserError(f"cannot open journal {path}: folder {path.parent} does not exist")
    if cut := repair_journal(path):
        print(f"note: {path}: cut a torn last record ({cut} bytes) left by a killed writer", file=sys.stderr)
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return JournalStorage(backend)


def make_sampler(space: Space, seed: int) -> optuna.samplers.BaseSampler:
    """The space's sampler, seeded; ``study.sampler_args`` override the keyword arguments set here.

    tpe: multivariate TPE models a slot's op, p and magnitude jointly; ``group`` splits the space by
    which parameters occur together (both flagged experimental by Optuna, which is all the warning says).
    cmaes: CMA-ES (with margin, for the integer N of RandAugment) models the floats and integers that
    every trial has; it cannot model categoricals (op identities, kd_loss, mix_kind, fixed_on) nor
    conditional parameters (beta, mix_p, mix_alpha), which a seeded univariate TPE samples instead.
    gp: Gaussian-process Bayesian optimisation, which handles categoricals; conditional parameters are
    sampled at random. Each models nothing during its first ``n_startup_trials`` (random) trials.
    """
    name, startup = space.study.sampler, min(10, max(2, space.study.trials // 3))
    samplers = optuna.samplers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            if name == "random":
                return samplers.RandomSampler(**({"seed": seed} | space.study.sampler_args))
            if name == "cmaes":
                independent = samplers.TPESampler(seed=seed, n_startup_trials=startup)
                defaults = {"seed": seed, "n_startup_trials": startup, "with_margin": True}
                defaults |= {"independent_sampler": independent, "warn_independent_sampling": False}
                return samplers.CmaEsSampler(**(defaults | space.study.sampler_args))
            if name == "gp":
                defaults = {"seed": seed, "n_startup_trials": startup, "warn_independent_sampling": False}
                return samplers.GPSampler(**(defaults | space.study.sampler_args))
            defaults = {"seed": seed, "multivariate": True, "group": True, "n_startup_trials": startup}
            return samplers.TPESampler(**(defaults | space.study.sampler_args))
        except (TypeError, ValueError) as error:
            raise UserError(f"{space.path}: study.sampler_args: {error}") from None


def make_pruner(space: Space) -> optuna.pruners.BasePruner:
    args = dict(space.study.pruner_args)
    try:
        if space.study.pruner == "median":
            return optuna.pruners.MedianPruner(**({"n_startup_trials": 4, "n_warmup_steps": 0} | args))
        if space.study.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(
                **({"min_resource": 1, "max_resource": space.trial.epochs} | args)
            )
    except TypeError as error:
        raise UserError(f"{space.path}: study.pruner_args: {error}") from None
    return optuna.pruners.NopPruner()


def fingerprint(space: Space, dataset: str, seed: int, teacher_sha256: str | None = None) -> str:
    """What a study may only be resumed with: the space file, the dataset, the seed and, when the
    teacher comes from a checkpoint file, that file's sha256 (augsearch/teacher.py: checkpoint_sha256;
    a trained teacher follows from the rest). Without a checkpoint the mark is what it always was."""
    mark = f"{space.sha256}:{dataset}:{seed}"
    return mark if teacher_sha256 is None else f"{mark}:teacher-{teacher_sha256}"


def sampler_seed(seed: int, resumed: int, worker: int = 0) -> int:
    """The sampler's seed for a process that finds ``resumed`` trials in the study, as worker ``worker``.

    A fresh study's only process gets ``seed`` itself, so the same seed proposes the same parameters. A
    process that resumes, or one of several workers, gets a seed derived from all three: restarting a
    seeded sampler from ``seed`` would replay its random start-up proposals, and workers started together
    would propose the same parameters. Still a function of the study's history: a resume is reproducible.
    """
    if resumed == 0 and worker == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2**32, resumed, worker]).generate_state(1)[0])


def open_study(
    name: str,
    storage: str,
    space: Space,
    dataset: str,
    seed: int,
    worker: int = 0,
    teacher_sha256: str | None = None,
) -> optuna.Study:
    """Create the study, or load it to resume; refuse to resume with a different space or data.

    Concurrent first starts on one server are safe: ``create_study`` turns the loser's duplicate
    insert into a load, and :func:`open_storage` retries colliding table creation.
    """
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(storage),
        sampler=make_sampler(space, seed),
        pruner=make_pruner(space),
        direction="maximize",
        load_if_exists=True,
    )
    resumed = len(study.get_trials(deepcopy=False))
    if resumed or worker:
        study.sampler = make_sampler(space, sampler_seed(seed, resumed, worker))
    mark = fingerprint(space, dataset, seed, teacher_sha256)
    found = study.user_attrs.get("fingerprint")
    if found is None:
        study.set_user_attr("fingerprint", mark)
        study.set_user_attr("space", str(space.path))
        study.set_user_attr("space_sha256", space.sha256)
        study.set_user_attr("dataset", dataset)
        study.set_user_attr("seed", seed)
    elif found != mark:
        raise UserError(
            f"study '{name}' was made with another space file, dataset, seed or teacher checkpoint "
            f"({found[:12]}... != {mark[:12]}...); "
            f"pass --study NEW_NAME to start a new study, or restore the original settings to resume"
        )
    return study


def heartbeats(study: optuna.Study) -> bool:
    """Whether the study's storage runs Optuna's heartbeats (server RDB storages, see open_storage)."""
    return getattr(study._storage, "get_heartbeat_interval", lambda: None)() is not None


def requeue_interrupted(study: optuna.Study, owned: bool = True) -> int:
    """Trials a killed process left RUNNING: mark them failed, enqueue their parameters; returns how many.

    With heartbeats (a server), only the trials whose heartbeat is older than the grace period are
    failed, by Optuna, whose retry callback re-queues them: safe while other workers run. Without
    (SQLite, a journal file), every RUNNING trial is taken for dead, so only a process that owns the
    storage (``owned``: ``run`` before it starts its workers) may sweep.
    """
    if heartbeats(study):
        before = sum(t.state == TrialState.FAIL for t in study.get_trials(deepcopy=False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return sum(t.state == TrialState.FAIL for t in study.get_trials(deepcopy=False)) - before
    if not owned:
        return 0
    stale = [trial for trial in study.get_trials(deepcopy=False) if trial.state == TrialState.RUNNING]
    for trial in stale:
        reason = "interrupted: left running by a process that was killed; re-queued"
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished after all
        requeue(study, trial)
    return len(stale)


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial | optuna.Trial) -> None:
    """Enqueue an interrupted trial's parameters again, keeping what it was enqueued as.

    A warm start stays one (so it is still never pruned), like Optuna's own RetryFailedTrialCallback,
    which copies the user attributes of the trials it re-queues.
    """
    attrs = {"requeued_from": trial.number}
    if WARM_START in trial.user_attrs:
        attrs[WARM_START] = trial.user_attrs[WARM_START]
    study.enqueue_trial(trial.params, user_attrs=attrs)


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs that does not change between trials."""

    space: Space
    data: ImageData
    train_index: np.ndarray  # the fixed training subset every trial uses
    val_index: np.ndarray
    teacher: nn.Module
    normalise: Normaliser
    seed: int
    artifacts_dir: Path | None = None  # each trial's preview grid goes here (optuna artifacts); None: none


def trial_subset(train_index: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """The same seeded subset of the training split for every trial (cheap proxy of the full data)."""
    if size is None or size >= len(train_index):
        return train_index
    return np.sort(np.random.default_rng(seed).choice(train_index, size=size, replace=False))


def make_objective(context: TrialContext) -> Callable[[optuna.Trial], float]:
    space, data, normalise = context.space, context.data, context.normalise
    x_val, y_val = data.x_train[context.val_index], data.y_train[context.val_index]
    x_sub, y_sub = data.x_train[context.train_index], data.y_train[context.train_index]
    store = None if context.artifacts_dir is None else artifact_store(context.artifacts_dir)
    preview = None if store is None else preview_images(data, context.val_index, context.seed)
    batches_for_proxy = space.proxy.batches
    x_proxy = proxy_images(x_sub, batches_for_proxy, space.trial.batch_size, context.seed)

    def objective(trial: optuna.Trial) -> float:
        space = replace(context.space, trial=sample_training(trial, context.space))  # searched lr, epochs...
        policy = sample_policy(trial, space, data.channels)
        trial.set_user_attr("policy", policy.describe())
        trial.set_user_attr("policy_json", policy.to_dict())
        if store is not None:  # what the policy does to fixed images, for optuna-dashboard (preview.py)
            attach(trial, store, render_grid(build_transform(policy), preview, context.seed), policy)
        if batches_for_proxy:  # T. stddev before training; may prune at step 0 (augsearch/proxy.py)
            transform = build_transform(policy, seed=context.seed)
            screen(trial, transform, context.teacher, x_proxy, normalise, space.trial.batch_size, space.proxy)
        seed_everything(context.seed)
        student = build_model(
            space.student, in_channels=data.channels, num_classes=data.num_classes, image_size=data.image_size
        )
        batches = make_loader(
            x_sub, y_sub, build_transform(policy), space.trial.batch_size, normalise.runtime, context.seed
        )

        def on_epoch(epoch: int, accuracy: float) -> None:
            # The step is the resource spent, epochs done (1, 2, ...): Hyperband's first rung is at step
            # min_resource = 1, which a 0-based step would put on the last epoch of a 2-epoch trial.
            trial.report(accuracy, epoch + 1)
            # After the last epoch the work is done: pruning then would only hide a finished result.
            # A warm start (augsearch/warmstart.py) runs to the end: the search must not lose a baseline.
            if epoch + 1 < space.trial.epochs and WARM_START not in trial.user_attrs and trial.should_prune():
                raise optuna.TrialPruned(
                    f"pruned after epoch {epoch + 1} at validation accuracy {accuracy:.4f}"
                )

        start = time.perf_counter()
        try:
            result = train_student(
                student,
                batches,
                space.trial,
                normalise,
                context.teacher,
                policy.kd,
                (x_val, y_val),
                on_epoch,
                description=f"trial {trial.number}",
                mix=policy.mix,
            )
        except NonFiniteLoss as error:
            trial.set_user_attr("pruned_reason", str(error))
            raise optuna.TrialPruned(str(error)) from None
        except torch.cuda.OutOfMemoryError as error:  # the trial loop fails it, frees memory, goes on
            trial.set_user_attr("fail_reason", f"CUDA out of memory: {str(error).splitlines()[0][:300]}")
            raise
        finally:
            trial.set_user_attr("wall_seconds", round(time.perf_counter() - start, 2))
        trial.set_user_attr("images_per_second", round(result.images_per_second, 1))
        return result.val_accuracy[-1]

    return objective


def study_storage_url(name: str, studies_dir: Path, storage: str | None) -> str:
    """The storage URL of an existing study: ``storage``, else its SQLite file or its journal file.

    Opening a missing SQLite file would create an empty database where the user mistyped a name.
    """
    if storage is not None:
        return storage
    folder = Path(studies_dir) / name
    database = folder / "study.db"
    if database.is_file():
        return default_storage(folder)
    if (folder / "journal.log").is_file():
        return journal_storage(folder)
    raise UserError(f"no study database at {database}; run `augsearch run` first or pass --storage")


def load_stored_study(name: str, studies_dir: Path, storage: str | None) -> optuna.Study:
    """An existing study, for commands that only read it; a one-line error when there is none."""
    storage = study_storage_url(name, studies_dir, storage)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise UserError(f"no study named '{name}' in {storage}") from None


def finished(study: optuna.Study) -> int:
    return sum(trial.state in DONE for trial in study.get_trials(deepcopy=False))


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    trials: int,
    timeout: float | None = None,
    callbacks: list | None = None,
) -> int:
    """Run the trials still missing to reach ``trials`` finished ones; returns how many ran now.

    The trial loop is the same one every worker runs (:func:`augsearch.workers.run_trials`).
    """
    from augsearch.workers import run_trials  # workers builds on this module

    return run_trials(study, objective, trials, timeout=timeout, callbacks=callbacks or [])

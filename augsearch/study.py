"""The Optuna study: storage, sampler, pruner, the objective of one trial, and resuming.

One trial = sample a policy and KD settings, distil a fresh student on a fixed training subset for
a few epochs, report validation accuracy after every epoch (so the pruner can stop it), return the
last one. Every trial starts from the same student initialisation and the same data order (common
random numbers): differences between trials then come from the policy, not from the seed.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
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


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage; SQLite gets a generous lock timeout so a dashboard reading it never fails a write."""
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as error:  # bad URL, unreachable server, missing driver: all the user's to fix
        raise UserError(f"cannot open storage {url}: {str(error).splitlines()[0]}") from None


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


def fingerprint(space: Space, dataset: str, seed: int) -> str:
    return f"{space.sha256}:{dataset}:{seed}"


def open_study(name: str, storage: str, space: Space, dataset: str, seed: int) -> optuna.Study:
    """Create the study, or load it to resume; refuse to resume with a different space or data."""
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(storage),
        sampler=make_sampler(space, seed),
        pruner=make_pruner(space),
        direction="maximize",
        load_if_exists=True,
    )
    mark = fingerprint(space, dataset, seed)
    found = study.user_attrs.get("fingerprint")
    if found is None:
        study.set_user_attr("fingerprint", mark)
        study.set_user_attr("space", str(space.path))
        study.set_user_attr("space_sha256", space.sha256)
        study.set_user_attr("dataset", dataset)
        study.set_user_attr("seed", seed)
    elif found != mark:
        raise UserError(
            f"study '{name}' was made with another space file, dataset or seed "
            f"({found[:12]}... != {mark[:12]}...); "
            f"pass --study NEW_NAME to start a new study, or restore the original settings to resume"
        )
    return study


def requeue_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed single-process run: mark them failed, enqueue their parameters.

    Only for storage that one process owns (the default SQLite file): with a shared server another
    worker's RUNNING trial is alive, and Optuna's heartbeat handles the dead ones.
    """
    stale = [trial for trial in study.get_trials(deepcopy=False) if trial.state == TrialState.RUNNING]
    for trial in stale:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
    return len(stale)


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
            trial.report(accuracy, epoch)
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
        finally:
            trial.set_user_attr("wall_seconds", round(time.perf_counter() - start, 2))
        trial.set_user_attr("images_per_second", round(result.images_per_second, 1))
        return result.val_accuracy[-1]

    return objective


def study_storage_url(name: str, studies_dir: Path, storage: str | None) -> str:
    """The storage URL of an existing study: ``storage``, else its SQLite file, which must exist.

    Opening a missing SQLite file would create an empty database where the user mistyped a name.
    """
    if storage is not None:
        return storage
    database = Path(studies_dir) / name / "study.db"
    if not database.is_file():
        raise UserError(f"no study database at {database}; run `augsearch run` first or pass --storage")
    return default_storage(Path(studies_dir) / name)


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
    """Run the trials still missing to reach ``trials`` finished ones; returns how many ran now."""
    missing = trials - finished(study)
    if missing <= 0:
        return 0
    before = len(study.trials)
    study.optimize(objective, n_trials=missing, timeout=timeout, callbacks=callbacks, gc_after_trial=False)
    return len(study.trials) - before

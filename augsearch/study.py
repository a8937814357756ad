"""The Optuna study: sampler, pruner, opening it (or resuming it), and the objective of one trial.

One trial = sample a policy and KD settings, distil a fresh student on a fixed training subset for
a few epochs, report validation accuracy after every epoch, several times an epoch
(``trial.reports_per_epoch``) or every few epochs (``trial.epochs_per_report``), so the pruner can stop
it early; return the last one. Every trial starts
from the same student initialisation and the same data order (common random numbers): differences
between trials then come from the policy, not from the seed.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import torch
from torch import nn

from augsearch.attributes import (
    FAIL_REASON,
    IMAGES_PER_SECOND,
    POLICY,
    POLICY_JSON,
    PRUNED_REASON,
    STRENGTH,
    STRENGTH_REACHED,
    SYNTHETIC_IMAGES,
    TEACHER_PASSES,
    TEACHER_PASSES_SAVED,
    TRAINED_IMAGES,
    WALL_SECONDS,
    WARM_START,
)
from augsearch.control import run_transform, strength_control
from augsearch.data import ImageData
from augsearch.distill import NonFiniteLoss, TrainResult, train_student
from augsearch.errors import UserError
from augsearch.loader import Normaliser, make_loader
from augsearch.models import build_model
from augsearch.policy import build_transform, build_transform_at, sample_policy, sample_training
from augsearch.preview import artifact_store, attach, preview_images, render_grid
from augsearch.proxy import proxy_images, screen
from augsearch.reuse import clean_outputs
from augsearch.runtime import seed_everything
from augsearch.schedule import strength_at
from augsearch.settings import Space
from augsearch.storage import open_storage
from augsearch.synthesis import Source, preview_rows, synthesizer_for

METRIC = "val_accuracy"  # what the objective returns: the student's validation accuracy after its last epoch


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
            defaults = {"min_resource": 1, "max_resource": reports(space)}
            return optuna.pruners.HyperbandPruner(**(defaults | args))
        if space.study.pruner == "successive-halving":  # Li et al. 2020 (ASHA): rungs at 1, 3, 9... reports
            defaults = {"min_resource": 1, "reduction_factor": 3}
            return optuna.pruners.SuccessiveHalvingPruner(**(defaults | args))
    except TypeError as error:
        raise UserError(f"{space.path}: study.pruner_args: {error}") from None
    return optuna.pruners.NopPruner()


def reports(space: Space) -> int:
    """How many validation reports a whole trial makes: the pruner's steps are 1 .. this."""
    return space.trial.reports


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
    if study.metric_names != [METRIC]:  # optuna-dashboard's plots say "val_accuracy", not "Objective 0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC])
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
    # None: distill.train_student. ``augsearch bench`` passes a stand-in that only reports accuracies, to
    # time everything else a trial does through this very objective.
    train: Callable[..., TrainResult] | None = None
    synthesis: Source | None = None  # where synthetic images come from, when the space has synthesis


def make_objective(context: TrialContext) -> Callable[[optuna.Trial], float]:
    space, data, normalise = context.space, context.data, context.normalise
    x_val, y_val = data.x_train[context.val_index], data.y_train[context.val_index]
    x_sub, y_sub = data.x_train[context.train_index], data.y_train[context.train_index]
    store = None if context.artifacts_dir is None else artifact_store(context.artifacts_dir)
    preview = None if store is None else preview_images(data, context.val_index, context.seed)
    batches_for_proxy = space.proxy.batches
    x_proxy = proxy_images(x_sub, batches_for_proxy, space.trial.batch_size, context.seed)
    clean = clean_outputs(context.teacher, x_sub, normalise)  # shared by this process's trials

    def objective(trial: optuna.Trial) -> float:
        space = replace(context.space, trial=sample_training(trial, context.space))  # searched lr, epochs...
        policy = sample_policy(trial, space, data.channels)
        trial.set_user_attr(POLICY, policy.describe())
        trial.set_user_attr(POLICY_JSON, policy.to_dict())
        control = strength_control(policy)  # None for a constant schedule: the loader as it always was
        synthesis = synthesizer_for(
            policy.synthesis, context.synthesis, lambda: run_transform(policy, control), context.seed,
            normalise.runtime.device, strength=None if control is None else control.knob,
        )  # fmt: skip
        if store is not None:  # what the policy does to fixed images, for optuna-dashboard (preview.py)
            shown = preview  # with synthesis, synthetic images in the rows below the real ones
            if synthesis is not None:
                shown = np.concatenate([preview, preview_rows(context.synthesis, len(preview), context.seed)])
            attach(trial, store, render_grid(build_transform(policy), shown, context.seed), policy)
        if batches_for_proxy:  # T. stddev before training; may prune at step 0 (augsearch/proxy.py)
            # at the strength the run starts at (1 for the constant schedule: build_transform itself)
            transform = build_transform_at(policy, strength_at(policy.schedule, 0, 1), seed=context.seed)
            screen(trial, transform, context.teacher, x_proxy, normalise, space.trial.batch_size, space.proxy)
        seed_everything(context.seed)
        student = build_model(space.student, **data.model_shape)
        batches = make_loader(
            x_sub, y_sub, run_transform(policy, control), space.trial.batch_size, normalise.runtime,
            context.seed, strength=None if control is None else control.knob,
        )  # fmt: skip
        # Only a run with a schedule passes one: a stand-in trainer (augsearch bench) needs no new argument.
        scheduled = {} if control is None else {"control": control}

        def on_report(step: int, accuracy: float) -> None:
            # The step is the resource spent, reports done (1, 2, ...; epochs done with one report per
            # epoch): Hyperband's first rung is at step min_resource = 1, which a 0-based step would put
            # on the last epoch of a 2-epoch trial.
            trial.report(accuracy, step)
            if control is not None:  # the strength per epoch so far, pruned or not; constant: no attribute
                trial.set_user_attr(STRENGTH, control.history)
                trial.set_user_attr(STRENGTH_REACHED, control.reached)
            # After the last report the work is done: pruning then would only hide a finished result.
            # A warm start (augsearch/warmstart.py) runs to the end: the search must not lose a baseline.
            if step < reports(space) and WARM_START not in trial.user_attrs and trial.should_prune():
                epochs = space.trial.epochs_at(step)
                raise optuna.TrialPruned(
                    f"pruned after epoch {epochs:g} at validation accuracy {accuracy:.4f}"
                )

        extra = {} if synthesis is None else {"synthesis": synthesis}  # augsearch/synthesis.py
        start = time.perf_counter()
        try:
            result = (context.train or train_student)(
                student,
                batches,
                space.trial,
                normalise,
                context.teacher,
                policy.kd,
                (x_val, y_val),
                on_report,
                description=f"trial {trial.number}",
                mix=policy.mix,
                clean=clean,
                **scheduled,
                **extra,
            )
        except NonFiniteLoss as error:
            trial.set_user_attr(PRUNED_REASON, str(error))
            raise optuna.TrialPruned(str(error)) from None
        except torch.cuda.OutOfMemoryError as error:  # the trial loop fails it, frees memory, goes on
            trial.set_user_attr(FAIL_REASON, f"CUDA out of memory: {str(error).splitlines()[0][:300]}")
            raise
        finally:
            trial.set_user_attr(WALL_SECONDS, round(time.perf_counter() - start, 2))
        trial.set_user_attr(IMAGES_PER_SECOND, round(result.images_per_second, 1))
        trial.set_user_attr(TEACHER_PASSES, result.teacher_images)
        trial.set_user_attr(TEACHER_PASSES_SAVED, result.teacher_saved)
        if policy.synthesis is not None:  # a space with synthesis: 0 for a trial at ratio 0
            trial.set_user_attr(SYNTHETIC_IMAGES, result.synthetic_images)
            trial.set_user_attr(TRAINED_IMAGES, result.images)
        return result.val_accuracy[-1]

    return objective

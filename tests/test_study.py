import dataclasses

import optuna
import pytest
import torch
from optuna.trial import TrialState

from augsearch.errors import UserError
from augsearch.report import trials_csv
from augsearch.space import load_space
from augsearch.storage import default_storage, requeue_interrupted
from augsearch.study import open_study
from augsearch.trials import finished, optimize
from augsearch.workspace import trial_subset


def test_reopening_with_another_space_is_refused(tmp_path):
    space = load_space("smoke")
    storage = default_storage(tmp_path)
    open_study("s", storage, space, "synthetic", 0)
    open_study("s", storage, space, "synthetic", 0)  # same settings: resumes
    changed = dataclasses.replace(space, sha256="0" * 64)
    with pytest.raises(UserError, match="pass --study NEW_NAME"):
        open_study("s", storage, changed, "synthetic", 0)
    with pytest.raises(UserError, match="another space file, dataset, seed or teacher checkpoint"):
        open_study("s", storage, space, "synthetic", 1)


def test_the_objective_is_named_for_the_dashboard_and_trials_csv_keeps_its_value_column(tmp_path):
    study = open_study("s", default_storage(tmp_path), load_space("smoke"), "synthetic", 0)
    assert study.metric_names == ["val_accuracy"]  # optuna-dashboard shows it instead of "Objective 0"
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    reopened = open_study("s", default_storage(tmp_path), load_space("smoke"), "synthetic", 0, worker=1)
    assert reopened.metric_names == ["val_accuracy"]
    assert trials_csv(reopened).splitlines()[0].startswith("number,value,state,")


def test_interrupted_trials_are_failed_and_requeued_with_their_parameters(tmp_path):
    space = load_space("smoke")
    study = open_study("s", default_storage(tmp_path), space, "synthetic", 0)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    orphan = study.ask()  # a trial a killed process left RUNNING
    orphan.suggest_float("x", 0, 1)
    assert requeue_interrupted(study) == 1
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert study.trials[3].params == {} and study.trials[3].system_attrs["fixed_params"] == orphan.params


def test_optimize_runs_only_the_missing_trials(tmp_path):
    study = open_study("s", default_storage(tmp_path), load_space("smoke"), "synthetic", 0)
    objective = lambda t: t.suggest_float("x", 0, 1)  # noqa: E731
    assert optimize(study, objective, 3) == 3
    assert optimize(study, objective, 3) == 0
    assert optimize(study, objective, 5) == 2
    assert finished(study) == 5


def test_pruned_trials_count_as_finished(tmp_path):
    study = open_study("s", default_storage(tmp_path), load_space("smoke"), "synthetic", 0)

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 0:
            raise optuna.TrialPruned()
        return 1.0

    optimize(study, objective, 2)
    assert finished(study) == 2


def test_trial_subset_is_fixed_and_inside_the_training_split():
    import numpy as np

    train = np.arange(100, 200)
    a, b = trial_subset(train, 30, 0), trial_subset(train, 30, 0)
    assert (a == b).all() and len(a) == 30 and set(a) <= set(train)
    assert (trial_subset(train, None, 0) == train).all()


def test_hyperband_prunes_a_two_epoch_trial_after_its_first_epoch(tmp_path):
    """The real objective reports epochs done as the step (1, 2): Hyperband's first rung (resource 1)
    then falls after epoch 1, where pruning still saves work, not on the last epoch, where it never prunes."""
    from augsearch.data import load_dataset, validation_split
    from augsearch.loader import Normaliser
    from augsearch.models import build_model
    from augsearch.runtime import resolve
    from augsearch.study import TrialContext, make_objective

    smoke = load_space("smoke")
    space = dataclasses.replace(
        smoke,
        trial=dataclasses.replace(smoke.trial, epochs=2),
        study=dataclasses.replace(smoke.study, pruner="hyperband", pruner_args={}),
    )
    data = load_dataset("synthetic", synthetic=space.dataset.synthetic)
    train, val = validation_split(data.y_train, space.dataset.validation_fraction, 0)
    runtime = resolve("cpu", loader_workers=0)
    torch.manual_seed(0)  # the teacher's weights, else whatever the tests before left in the global RNG
    teacher = build_model("cnn-tiny", in_channels=1, num_classes=4, image_size=16).eval()
    context = TrialContext(
        space, data, trial_subset(train, 64, 0), val, teacher, Normaliser.fit(data.x_train, runtime), 0
    )
    study = open_study("s", default_storage(tmp_path), space, "synthetic", 0)
    optimize(study, make_objective(context), 8)
    steps = {tuple(t.intermediate_values) for t in study.trials}
    assert steps <= {(1,), (1, 2)}
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(tuple(t.intermediate_values) == (1,) for t in pruned)


def test_successive_halving_on_half_epochs_prunes_after_half_an_epoch(tmp_path):
    """With two reports an epoch the pruner's first rung falls after half of the first epoch: a pruned
    trial has trained on half the images a whole trial does, and says so."""
    from augsearch.study import make_objective

    smoke = load_space("smoke")
    space = dataclasses.replace(
        smoke,
        trial=dataclasses.replace(smoke.trial, epochs=1, reports_per_epoch=2, batch_size=16),
        study=dataclasses.replace(smoke.study, pruner="successive-halving", pruner_args={}, warm_starts=()),
    )
    study = open_study("s", default_storage(tmp_path), space, "synthetic", 0)
    optimize(study, make_objective(_smoke_context(space, 64)), 8)
    assert {tuple(t.intermediate_values) for t in study.trials} <= {(1,), (1, 2)}
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert pruned and complete
    assert all(tuple(t.intermediate_values) == (1,) for t in pruned)
    assert all(t.value == t.intermediate_values[2] for t in complete)


def test_trials_validating_every_few_epochs_report_one_step_per_validation(tmp_path):
    """With epochs_per_report = 2 a 3-epoch trial reports twice, after epochs 2 and 3 (steps 1, 2), and its
    value is the last report: what the pruner and the dashboard see of a long trial on few images."""
    from augsearch.study import make_objective, reports

    smoke = load_space("smoke")
    space = dataclasses.replace(
        smoke,
        trial=dataclasses.replace(smoke.trial, epochs=3, epochs_per_report=2, batch_size=16),
        study=dataclasses.replace(smoke.study, pruner="none", pruner_args={}, warm_starts=()),
    )
    assert reports(space) == 2
    study = open_study("s", default_storage(tmp_path), space, "synthetic", 0)
    optimize(study, make_objective(_smoke_context(space, 32)), 2)
    assert [tuple(t.intermediate_values) for t in study.trials] == [(1, 2), (1, 2)]
    assert all(t.value == t.intermediate_values[2] for t in study.trials)


def _smoke_context(space, images: int):
    """A trial context for a variant of the smoke space: its synthetic data, ``images`` training images,
    a seeded random cnn-tiny teacher, the CPU."""
    from augsearch.data import load_dataset, validation_split
    from augsearch.loader import Normaliser
    from augsearch.models import build_model
    from augsearch.runtime import resolve
    from augsearch.study import TrialContext

    data = load_dataset("synthetic", synthetic=space.dataset.synthetic)
    train, val = validation_split(data.y_train, space.dataset.validation_fraction, 0)
    runtime = resolve("cpu", loader_workers=0)
    torch.manual_seed(0)
    teacher = build_model("cnn-tiny", in_channels=1, num_classes=4, image_size=16).eval()
    normalise = Normaliser.fit(data.x_train, runtime)
    return TrialContext(space, data, trial_subset(train, images, 0), val, teacher, normalise, 0)

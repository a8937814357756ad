"""Warm starts: the baselines a study starts from are the baselines exactly, first, once, never pruned."""

import dataclasses
import types
import warnings

import albumentations as A
import numpy as np
import optuna
import pytest
from conftest import run_cli, smoke_variant
from optuna.trial import TrialState

from augsearch import study as study_module
from augsearch.baselines import baseline
from augsearch.cli import main
from augsearch.errors import UserError
from augsearch.mixing import NO_MIXING
from augsearch.policy import KDSettings, Policy, build_transform, sample_policy
from augsearch.space import load_space, space_names
from augsearch.storage import default_storage, requeue_interrupted
from augsearch.warmstart import WARM_START, enqueue_warm_starts, warm_start_params


def _active(transform: A.BaseCompose) -> list:
    """``A.to_dict`` of the transforms that can change an image (p > 0), containers opened, empty ones
    left out."""
    out = []
    for child in transform.transforms:
        if child.p == 0:
            continue
        if isinstance(child, A.BaseCompose):
            inner = _active(child)
            if any(inner):  # a container of nothing but switched-off ops changes nothing
                out.append((type(child).__name__, inner))
        else:
            out.append(A.to_dict(child))
    return out


WARM_STARTED = [(name, start) for name in space_names() for start in load_space(name).study.warm_starts]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("space_name", "start"), WARM_STARTED)
def test_a_warm_start_is_its_baseline_exactly(space_name, start, channels):
    space = load_space(space_name)
    params = warm_start_params(start, space, channels)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when an enqueued value is outside its distribution
        trial = study.ask()
        policy = sample_policy(trial, space, channels)
    assert {key: trial.params[key] for key in params} == params
    settings = space.baselines
    kd = KDSettings(settings.temperature, settings.alpha)
    candidate = baseline(start, Policy(space.fixed, (), kd), kd, channels)
    expected = _active(candidate.transform) if candidate.transform is not None else []
    assert _active(build_transform(policy)) == expected
    assert policy.kd == (candidate.kd or KDSettings(policy.kd.temperature, 0.0)) and policy.mix == NO_MIXING


@pytest.mark.parametrize("name", ["default", "full-labels"])
def test_default_spaces_start_from_none_and_standard(name):
    space = load_space(name)
    assert space.study.warm_starts == ("none", "standard") and space.fixed_searched
    none = warm_start_params("none", space, 1)
    assert none["fixed_on"] is False and none["op0_p"] == none["op1_p"] == 0.0
    assert (none["temperature"], none["alpha"]) == (4.0, 0.9)
    assert warm_start_params("standard", space, 1)["fixed_on"] is True


def test_the_default_and_the_former_default_keep_their_budgets():
    """default: 1,000 labels, cnn-small, 16 whole-length trials that nothing prunes; full-labels (the
    default until 2026-12-08): all labels, cnn-tiny, 30 pruned 2-epoch trials. The same teacher recipe,
    so the two share the cached teacher."""
    default, full = load_space("default"), load_space("full-labels")
    assert (default.dataset.labelled, default.student, default.study.trials) == (1000, "cnn-small", 16)
    assert default.trial.epochs == default.retrain.epochs == 120 and default.trial.subset is None
    assert default.trial.epochs_per_report == 20 and default.study.pruner == "none"
    assert (full.dataset.labelled, full.student, full.study.trials) == (None, "cnn-tiny", 30)
    assert (full.trial.epochs, full.trial.subset, full.retrain.epochs) == (2, 10000, 8)
    assert default.teacher == full.teacher and default.fixed == full.fixed and default.kd == full.kd


def _warm_space(tmp_path, **study):
    def mutate(raw):
        raw["fixed_searched"] = True
        raw["study"] |= {"warm_starts": ["none", "standard"], **study}

    return load_space(str(smoke_variant(tmp_path, mutate)))


def _cheap_objective(space):
    def objective(trial):
        policy = sample_policy(trial, space, 1)
        trial.set_user_attr("policy_json", policy.to_dict())
        return 0.1 * len(policy.fixed)

    return objective


def test_warm_starts_are_the_first_trials_and_are_not_enqueued_again_on_resume(tmp_path):
    space = _warm_space(tmp_path)
    storage = default_storage(tmp_path)
    study = study_module.open_study("s", storage, space, "synthetic", 0)
    assert enqueue_warm_starts(study, space, 1) == ["none", "standard"]
    assert enqueue_warm_starts(study, space, 1) == []  # enqueued, not yet run: not twice either
    study.optimize(_cheap_objective(space), n_trials=3)
    first, second, third = study.trials
    assert first.user_attrs[WARM_START] == "none" and second.user_attrs[WARM_START] == "standard"
    assert WARM_START not in third.user_attrs
    assert first.params == warm_start_params("none", space, 1)
    assert second.params == warm_start_params("standard", space, 1)
    assert Policy.from_dict(first.user_attrs["policy_json"]).fixed == ()
    resumed = study_module.open_study("s", storage, space, "synthetic", 0)
    assert enqueue_warm_starts(resumed, space, 1) == []
    resumed.optimize(_cheap_objective(space), n_trials=1)
    assert [t.user_attrs.get(WARM_START) for t in resumed.trials] == ["none", "standard", None, None]
    assert resumed.best_value >= max(first.value, second.value)


def test_a_warm_start_interrupted_mid_trial_is_requeued_as_a_warm_start(tmp_path):
    space = _warm_space(tmp_path)
    study = study_module.open_study("s", default_storage(tmp_path), space, "synthetic", 0)
    enqueue_warm_starts(study, space, 1)
    killed = study.ask()  # the `none` warm start, left RUNNING as by a process killed mid-trial
    sample_policy(killed, space, 1)  # as its objective did before it was killed
    assert requeue_interrupted(study) == 1
    states = [
        (t.state, t.user_attrs.get(WARM_START), t.user_attrs.get("requeued_from")) for t in study.trials
    ]
    assert states == [
        (TrialState.FAIL, "none", None),
        (TrialState.WAITING, "standard", None),
        (TrialState.WAITING, "none", killed.number),
    ]
    study.optimize(_cheap_objective(space), n_trials=2)
    rerun = study.trials[2]
    assert rerun.state == TrialState.COMPLETE and rerun.params == warm_start_params("none", space, 1)
    assert rerun.user_attrs[WARM_START] == "none"


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_a_warm_start_is_never_pruned(tmp_path, monkeypatch):
    """The search must keep the baselines' results: a pruner that prunes everything spares them."""
    space = _warm_space(tmp_path)
    space = dataclasses.replace(space, trial=dataclasses.replace(space.trial, epochs=3))

    def fake_train(student, batches, settings, normalise, teacher, kd, validation, on_report, **kwargs):
        for step in range(1, settings.epochs + 1):
            on_report(step, 0.5)
        return types.SimpleNamespace(
            val_accuracy=[0.5], images_per_second=1.0, teacher_images=0, teacher_saved=0
        )

    monkeypatch.setattr(study_module, "train_student", fake_train)
    from augsearch.data import load_dataset
    from augsearch.loader import Normaliser
    from augsearch.models import build_model
    from augsearch.runtime import resolve

    data = load_dataset("synthetic", synthetic=space.dataset.synthetic)
    context = study_module.TrialContext(
        space, data, np.arange(64), np.arange(64, 96),
        build_model(space.teacher.model, in_channels=1, num_classes=4, image_size=data.image_size),
        Normaliser.fit(data.x_train, resolve("cpu", 0)), 0,
    )  # fmt: skip
    study = optuna.create_study(direction="maximize", pruner=_AlwaysPrune())
    enqueue_warm_starts(study, space, 1)
    study.optimize(study_module.make_objective(context), n_trials=3)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]


def _starts(*names, **top):
    """A mutation of the smoke space: ``top`` keys replaced, then ``study.warm_starts = names``."""

    def mutate(raw):
        raw.update(top)
        raw["study"]["warm_starts"] = list(names)

    return mutate


W0 = "study.warm_starts[0]"
ERASING = {"slots": 1, "erasing": {"p": {"low": 0.2, "high": 1}, "size": 0.3}}
MIXUP = {"kinds": ["mixup"], "p": 0.5, "alpha": 1.0}
STRICT_PROXY = {"skip_worst_fraction": 0.5, "startup_trials": 1}
SMOKE_STUDY = {"trials": 3, "sampler": "tpe", "seed": 0, "pruner": "median"}


@pytest.mark.parametrize(
    ("mutate", "where", "expected"),
    [
        (_starts("nothing"), W0, "unknown baseline 'nothing'"),
        (_starts("standard", "standard"), "study.warm_starts", "expected distinct names"),
        (
            _starts("none"),
            W0,
            "cannot express baseline 'none': it applies no fixed stages, but this space always",
        ),
        (_starts("randaugment"), W0, "it needs policy.structure randaugment, this space has slots"),
        (
            _starts("standard", kd={"temperature": {"low": 1, "high": 3}, "alpha": 0.5}),
            W0,
            "its KD temperature 4 (baselines.temperature) is outside kd.temperature [1, 3]",
        ),
        (_starts("student-alone"), W0, "it trains without a teacher, which needs kd.alpha to allow 0"),
        (
            _starts("standard", policy=ERASING),
            W0,
            "it applies no erasing, which needs policy.erasing.p to allow 0",
        ),
        (
            _starts("standard", policy={"structure": "trivial"}),
            W0,
            "the trivial structure applies an op to every",
        ),
        (_starts("standard", mixing=MIXUP), W0, "it mixes no batches, which needs none among mixing.kinds"),
        (
            _starts("none", "standard", fixed_searched=True, proxy=STRICT_PROXY),
            "study.warm_starts",
            "2 warm starts need proxy.startup_trials >= 2",
        ),
        (
            _starts("none", "standard", fixed_searched=True, study=SMOKE_STUDY | {"trials": 1}),
            "study.warm_starts",
            "2 warm starts but only 1 trials",
        ),
    ],
)
def test_bad_warm_starts_are_refused_in_one_line_and_run_creates_nothing(
    tmp_path, monkeypatch, capsys, mutate, where, expected
):
    path = smoke_variant(tmp_path, mutate)
    with pytest.raises(UserError) as error:
        load_space(str(path))
    assert str(error.value).startswith(f"{path}: {where}: ") and expected in str(error.value)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(["run", "--space", str(path), "--no-retrain"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: {where}: " in err
    assert sorted(tmp_path.rglob("*")) == before and not (tmp_path / "studies").exists()


def test_run_enqueues_the_warm_starts_end_to_end(tmp_path):
    """The real CLI on a smoke space with warm starts: they are its first two trials."""
    space = smoke_variant(
        tmp_path,
        lambda r: r.update(fixed_searched=True) or r["study"].update(warm_starts=["none", "standard"]),
    )
    result = run_cli("run", "--space", str(space), "--no-retrain", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    study = optuna.load_study(study_name="smoke", storage=default_storage(tmp_path / "studies/smoke"))
    assert [t.user_attrs.get(WARM_START) for t in study.trials] == ["none", "standard", None]
    assert study.trials[0].params["fixed_on"] is False and study.trials[1].params["fixed_on"] is True

"""Strength schedules in real training runs and trials (augsearch/control.py, distill.py, study.py):
no per-batch rebuild, replay, the strength recorded per epoch, and that the constant schedule gives
today's trial to the bit. Split from test_schedule.py so each file stays short."""

from __future__ import annotations

import dataclasses
import json

import optuna
import torch
from conftest import smoke_variant
from test_schedule import ADAPTIVE, POLICY, _tiny_data

from augsearch.attributes import POLICY_JSON, STRENGTH
from augsearch.control import run_transform, strength_control
from augsearch.data import load_dataset
from augsearch.distill import train_student
from augsearch.loader import Normaliser, make_loader
from augsearch.models import build_model
from augsearch.policy import build_transform_at
from augsearch.runtime import resolve
from augsearch.schedule import replay, with_trajectory
from augsearch.space import load_space
from augsearch.study import make_objective, make_sampler
from augsearch.workspace import Workspace, trial_context


def test_a_controlled_training_run_rebuilds_at_most_once_per_controller_step():
    x, y = _tiny_data()
    runtime = resolve("cpu", 0)
    normalise = Normaliser.fit(x, runtime)
    builds = []
    policy = dataclasses.replace(POLICY, schedule=dataclasses.replace(ADAPTIVE, interval=3))
    control = strength_control(policy)
    control.knob.build = lambda s: (builds.append(s), build_transform_at(policy, s))[1]
    settings = load_space("smoke").trial
    settings = dataclasses.replace(settings, epochs=2, batch_size=8)
    torch.manual_seed(0)
    teacher, student = (
        build_model(name, in_channels=1, num_classes=4, image_size=12) for name in ("cnn-small", "cnn-tiny")
    )
    batches = make_loader(x, y, run_transform(policy, control), 8, runtime, 0, strength=control.knob)
    result = train_student(student, batches, settings, normalise, teacher, policy.kd, control=control)
    assert result.batches == 16 and control.readings == 5  # 16 steps, a reading every 3
    # the starting pipeline, then a rebuild only after a controller step that moved s: never per batch
    assert builds[0] == 0.5 and 0 < len(builds) - 1 <= control.readings
    assert len(result.strength) == 2 and all(0.0 <= s <= 1.0 for s in result.strength)


def test_replay_follows_the_stored_trajectory_without_a_controller():
    x, y = _tiny_data()
    runtime = resolve("cpu", 0)
    followed = with_trajectory(ADAPTIVE, [0.2, 0.9])
    played = replay(followed)
    assert played.kind == "replay" and played.trajectory == (0.2, 0.9)
    policy = dataclasses.replace(POLICY, schedule=played)
    control = strength_control(policy)
    settings = dataclasses.replace(load_space("smoke").trial, epochs=4, batch_size=16)
    student = build_model("cnn-tiny", in_channels=1, num_classes=4, image_size=12)
    batches = make_loader(x, y, run_transform(policy, control), 16, runtime, 0, strength=control.knob)
    result = train_student(
        student, batches, settings, Normaliser.fit(x, runtime), None, None, control=control
    )
    assert result.strength == [0.2, 0.2, 0.9, 0.9] and control.readings == 0


# --- trials ----------------------------------------------------------------------------------------


def _smoke_trials(space, params: dict, trials: int = 1) -> optuna.Study:
    """Trials of the real objective on the smoke space's data with an untrained teacher."""
    data = load_dataset("synthetic", synthetic=space.dataset.synthetic)
    runtime = resolve("cpu", 0)
    workspace = Workspace(space, data, runtime, Normaliser.fit(data.x_train, runtime), seed=0)
    torch.manual_seed(0)
    context = trial_context(workspace, build_model(space.teacher.model, **data.model_shape), None)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(space, 0))
    for _ in range(trials):
        study.enqueue_trial(params, skip_if_exists=False)
    study.optimize(make_objective(context), n_trials=trials)
    return study


def _tiny_smoke(space):
    synthetic = dataclasses.replace(space.dataset.synthetic, train_size=160, test_size=20)
    return dataclasses.replace(space, dataset=dataclasses.replace(space.dataset, synthetic=synthetic))


def test_constant_schedule_reproduces_todays_trial_exactly(tmp_path):
    """A space without a schedule, the same space with ``schedule: {kind: constant}``, and a linear
    schedule held at 1 (strength 1 through the shared-strength loader) give the very same trial."""
    params = {"op0": "Rotate", "op0_p": 0.9, "op0_m": 0.8, "op1": "GaussNoise", "op1_p": 0.5, "op1_m": 0.5}
    params |= {"temperature": 3.0, "alpha": 0.5}
    today = _smoke_trials(_tiny_smoke(load_space("smoke")), params).trials[0]
    constant = smoke_variant(tmp_path, lambda raw: raw.update(schedule={"kind": "constant"}))
    fixed = _smoke_trials(_tiny_smoke(load_space(str(constant))), params).trials[0]
    held = smoke_variant(
        tmp_path, lambda raw: raw.update(schedule={"kind": "linear", "start": 1.0, "end": 1.0})
    )
    linear = _smoke_trials(_tiny_smoke(load_space(str(held))), params).trials[0]
    assert today.value == fixed.value == linear.value
    assert today.intermediate_values == fixed.intermediate_values == linear.intermediate_values
    assert today.params == fixed.params == linear.params
    # timings, and the teacher passes saved: the clean outputs are kept per process (augsearch/reuse.py),
    # so the later runs here find them filled by the first (a saving, the same logits)
    timing = ("wall_seconds", "images_per_second", "proxy_seconds", "teacher_passes_saved")
    same = {k: v for k, v in today.user_attrs.items() if k not in timing}
    assert same == {k: v for k, v in fixed.user_attrs.items() if k not in timing}
    assert STRENGTH not in today.user_attrs and linear.user_attrs[STRENGTH] == [1.0]


def test_an_adaptive_trial_records_its_strength_per_epoch(tmp_path):
    space = load_space("adaptive")
    smoke = _tiny_smoke(load_space("smoke"))
    space = dataclasses.replace(
        smoke, schedule=dataclasses.replace(space.schedule, interval=type(space.schedule.interval)(2, 2))
    )
    space = dataclasses.replace(space, trial=dataclasses.replace(space.trial, epochs=2))
    params = {"schedule_kind": "adaptive", "ada_signal": "agreement", "ada_target_agreement": 0.5}
    params |= {"strength_initial": 0.5, "ada_step": 0.1}
    trial = _smoke_trials(space, params).trials[0]
    strength = trial.user_attrs[STRENGTH]
    assert len(strength) == 2 and all(0.0 <= s <= 1.0 for s in strength)
    assert strength != [0.5, 0.5]  # the controller moved it (a step of 0.1 every 2 of ~15 steps)
    assert json.loads(json.dumps(trial.user_attrs[POLICY_JSON]))["schedule"]["kind"] == "adaptive"

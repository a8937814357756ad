"""Strength schedules (augsearch/schedule.py, control.py): values at known steps, the controller's
direction and clamping on a faked signal, the loader's rebuilds, the policy file round trip, replay,
and that the constant schedule changes nothing about a trial."""

from __future__ import annotations

import dataclasses
import json
from functools import partial

import albumentations as A
import numpy as np
import optuna
import pytest
import torch
from conftest import smoke_variant

from augsearch import distill as distill_module
from augsearch import report
from augsearch.attributes import POLICY_JSON, STRENGTH, STRENGTH_REACHED
from augsearch.cli import main
from augsearch.control import StrengthControl
from augsearch.distill import train_student
from augsearch.errors import UserError
from augsearch.export import export_best, load_policy, policy_document, write_policy
from augsearch.loader import Normaliser, Strength, make_loader
from augsearch.models import build_model
from augsearch.pipeline import validate_file
from augsearch.policy import (
    KDSettings,
    OpChoice,
    Policy,
    build_transform,
    build_transform_at,
    sample_policy,
    scale_policy,
)
from augsearch.runtime import resolve
from augsearch.schedule import CONSTANT, Schedule, adjust, replay, strength_at, with_trajectory
from augsearch.settings import Stage
from augsearch.space import load_space
from augsearch.storage import default_storage
from augsearch.strength_report import strength_curves, strength_lines
from augsearch.warmstart import warm_start_params

POLICY = Policy(
    (Stage("HorizontalFlip", {"p": 0.5}),),
    (OpChoice("Rotate", 0.8, 0.9), OpChoice("GaussNoise", 0.5, 0.6)),
    KDSettings(4.0, 0.7),
)
ADAPTIVE = Schedule("adaptive", initial=0.5, signal="agreement", target=0.6, step=0.1, interval=2)


# --- strength at known steps -----------------------------------------------------------------------


def test_strength_at_known_epochs_for_each_kind():
    assert [strength_at(CONSTANT, e, 4) for e in range(4)] == [1.0] * 4
    linear = Schedule("linear", start=0.2, end=0.8)
    assert [strength_at(linear, e, 4) for e in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert strength_at(linear, 0, 1) == 0.2  # one epoch: the start
    down = Schedule("linear", start=1.0, end=0.0)
    assert [strength_at(down, e, 3) for e in range(3)] == [1.0, 0.5, 0.0]
    assert strength_at(ADAPTIVE, 0, 10) == 0.5 and strength_at(ADAPTIVE, 7, 10) == 0.5  # no trajectory
    played = Schedule("replay", trajectory=(0.1, 0.5))
    assert [strength_at(played, e, 4) for e in range(4)] == [0.1, 0.1, 0.5, 0.5]  # stretched over 4
    assert [strength_at(played, e, 2) for e in range(2)] == [0.1, 0.5]


def test_the_controller_moves_toward_the_set_point_and_stays_clamped():
    # agreement above the set-point: the student keeps up -> harder; below -> easier; at it: holds
    assert adjust(0.5, 0.9, ADAPTIVE) == pytest.approx(0.6)
    assert adjust(0.5, 0.2, ADAPTIVE) == pytest.approx(0.4)
    assert adjust(0.5, 0.6, ADAPTIVE) == 0.5
    # the KD loss over its running mean above the set-point: falling behind -> easier
    loss = dataclasses.replace(ADAPTIVE, signal="kd_loss", target=1.0)
    assert adjust(0.5, 1.3, loss) == pytest.approx(0.4) and adjust(0.5, 0.7, loss) == pytest.approx(0.6)
    assert adjust(0.5, float("nan"), loss) == 0.5
    strength = 0.5
    for _ in range(20):
        strength = adjust(strength, 1.0, ADAPTIVE)
    assert strength == 1.0  # driven to the top bound: stays there
    for _ in range(30):
        strength = adjust(strength, 0.0, ADAPTIVE)
    assert strength == 0.0


class _Knob:
    """A stand-in for the loader's shared strength that records every value set."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def set(self, value: float) -> None:
        self.values.append(value)


def _faked_run(schedule: Schedule, agree: bool, steps: int, kd: list[float] | None = None) -> StrengthControl:
    """Drive a control with batches whose student agrees with the teacher on every image or on none."""
    control = StrengthControl(schedule, _Knob())
    teacher = torch.eye(4)[[0, 1, 2, 3]] * 5
    student = teacher if agree else torch.eye(4)[[1, 2, 3, 0]] * 5
    control.begin_epoch(0, 1, [])
    for step in range(steps):
        control.observe(student, teacher, torch.tensor(kd[step] if kd else 1.0))
    control.end_epoch()
    return control


def test_a_faked_signal_drives_the_strength_and_it_stays_clamped():
    up = _faked_run(ADAPTIVE, agree=True, steps=40)
    assert up.readings == 20 and up.value == 1.0  # 0.5 + 5 steps of 0.1, then clamped for 15 readings
    assert up.knob.values[1:6] == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0])
    assert max(up.knob.values) == 1.0 and up.history[0] < 1.0
    down = _faked_run(ADAPTIVE, agree=False, steps=40)
    assert down.value == 0.0 and min(down.knob.values) == 0.0
    rising = _faked_run(
        dataclasses.replace(ADAPTIVE, signal="kd_loss", target=1.0), True, 8, [1, 2, 3, 4, 5, 6, 7, 8]
    )
    assert rising.value < 0.5  # the KD loss keeps rising above its running mean: easier
    no_teacher = StrengthControl(ADAPTIVE, _Knob())
    no_teacher.begin_epoch(0, 1, [])
    for _ in range(10):
        no_teacher.observe(torch.eye(4), None, torch.tensor(0.0))
    assert no_teacher.value == 0.5 and no_teacher.end_epoch() == 0.5  # no KD term, no signal: holds


# --- the pipeline at a strength ----------------------------------------------------------------------


def test_strength_scales_searched_magnitudes_and_strength_one_is_the_stored_pipeline():
    assert scale_policy(POLICY, 1.0) is POLICY
    assert A.to_dict(build_transform_at(POLICY, 1.0)) == A.to_dict(build_transform(POLICY))
    half = scale_policy(POLICY, 0.5)
    assert [op.magnitude for op in half.ops] == pytest.approx([0.45, 0.3])
    assert [op.p for op in half.ops] == [0.8, 0.5] and half.fixed == POLICY.fixed
    scaled_p = scale_policy(
        dataclasses.replace(POLICY, schedule=dataclasses.replace(ADAPTIVE, scale_p=True)), 0.5
    )
    assert [op.p for op in scaled_p.ops] == pytest.approx([0.4, 0.25])
    rotate = A.to_dict(build_transform_at(POLICY, 0.5))["transform"]["transforms"][1]
    assert rotate["limit"] == pytest.approx((-13.5, 13.5))  # 30 degrees x 0.9 x 0.5


def _tiny_data(n: int = 64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 12, 12, 1), dtype=np.uint8), rng.integers(0, 4, n).astype(np.int64)


def test_the_loader_rebuilds_only_when_the_strength_changes():
    x, y = _tiny_data()
    built: list[float] = []

    def build(strength: float) -> A.Compose:
        built.append(strength)
        return build_transform_at(POLICY, strength)

    runtime = resolve("cpu", 0)
    knob = Strength(build, 0.5)
    loader = make_loader(x, y, build(0.5), 8, runtime, seed=0, strength=knob)
    for _ in loader:  # 8 batches at an unchanged strength: no rebuild
        pass
    assert built == [0.5]
    for index, _ in enumerate(loader):
        if index in (2, 5):
            knob.set(0.25 * index / 2)
    assert built == [0.5, 0.25, 0.625]  # one rebuild per change, none per batch


# --- the policy file ---------------------------------------------------------------------------------


def test_policy_file_round_trip_with_an_adaptive_schedule_and_its_trajectory(tmp_path):
    policy = dataclasses.replace(POLICY, schedule=with_trajectory(ADAPTIVE, [0.5, 0.7, 1.0]))
    assert Policy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    path = tmp_path / "policy.json"
    document = write_policy(path, policy, {"study": "t"})
    assert document["schema_version"] == 3 and document["schedule"]["trajectory"] == [0.5, 0.7, 1.0]
    assert "schedule" not in document["policy"]
    loaded = load_policy(path)
    assert loaded.policy == policy and loaded.schedule.kind == "adaptive"
    assert "; strength adaptive from 0.50, agreement toward 0.60" in validate_file(str(path))
    assert [loaded.strength_at(e, 3) for e in range(3)] == [0.5, 0.7, 1.0]
    assert [loaded.strength_at(e, 6) for e in range(6)] == [0.5, 0.5, 0.7, 0.7, 1.0, 1.0]
    assert A.to_dict(loaded.transform_at(1.0)) == A.to_dict(loaded.transform)  # the stored pipeline = 1
    assert A.to_dict(loaded.transform_at(0.3)) != A.to_dict(loaded.transform)
    image = np.random.default_rng(1).integers(0, 256, (12, 12, 1), dtype=np.uint8)
    a, b = loaded.transform_at(0.3, seed=5), build_transform_at(policy, 0.3, seed=5)
    assert np.array_equal(a(image=image)["image"], b(image=image)["image"])


def test_a_constant_schedule_writes_the_file_it_always_did(tmp_path):
    document = policy_document(POLICY, {})
    assert document["schema_version"] == 2 and "schedule" not in document
    assert "schedule" not in POLICY.to_dict()
    assert (
        load_policy(write_policy(tmp_path / "p.json", POLICY, {}) and tmp_path / "p.json").schedule
        == CONSTANT
    )


def test_export_carries_the_trajectory_the_best_trial_followed(tmp_path):
    storage = default_storage(tmp_path)
    study = optuna.create_study(storage=storage, direction="maximize")
    for value, trajectory in ((0.5, [0.5, 0.4]), (0.9, [0.6, 0.8])):
        trial = study.ask()
        trial.set_user_attr(POLICY_JSON, dataclasses.replace(POLICY, schedule=ADAPTIVE).to_dict())
        trial.set_user_attr(STRENGTH, trajectory)
        study.tell(trial, value)
    export_best(study, storage, tmp_path / "best.json")
    loaded = load_policy(tmp_path / "best.json")
    assert loaded.schedule.trajectory == (0.6, 0.8)
    assert replay(loaded.schedule).trajectory == (0.6, 0.8)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"kind": "cosine"}, "schedule.kind"),
        ({"signal": "loss"}, "schedule.signal"),
        ({"target": 1.5}, "schedule.target"),
        ({"step": 0.9}, "schedule.step"),
        ({"interval": 0}, "schedule.interval"),
        ({"initial": -0.1}, "schedule.initial"),
        ({"trajectory": [0.5, 1.2]}, "schedule.trajectory[1]"),
        ({"extra": 1}, "schedule.extra"),
    ],
)
def test_a_bad_schedule_in_a_policy_file_is_one_line_naming_the_key(tmp_path, change, where):
    path = tmp_path / "policy.json"
    document = write_policy(path, dataclasses.replace(POLICY, schedule=ADAPTIVE), {})
    document["schedule"] |= change
    path.write_text(json.dumps(document))
    with pytest.raises(UserError, match=f": {where.replace('[', '.').replace(']', '.')}"):
        load_policy(path)
    assert main(["validate", str(path)]) == 2


# --- the space -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "where"),
    [
        ({"kind": "cosine"}, "schedule.kind"),
        ({"kind": ["constant", "warmup"]}, "schedule.kind[1]"),
        ({"kind": "adaptive", "signal": "accuracy"}, "schedule.signal"),
        ({"kind": "adaptive", "target": {"agreement": 1.5}}, "schedule.target.agreement"),
        ({"kind": "adaptive", "target": {"kd_loss": 1.0}}, "schedule.target.kd_loss"),  # signal not listed
        ({"kind": "adaptive", "step": {"low": 0.1, "high": 0.9}}, "schedule.step.high"),
        ({"kind": "adaptive", "interval": 0}, "schedule.interval"),
        ({"kind": "adaptive", "initial": 1.5}, "schedule.initial"),
        ({"kind": "linear", "start": -0.5}, "schedule.start"),
        ({"kind": "linear", "step": 0.1}, "schedule.step"),  # an adaptive setting without adaptive
        ({"kind": "constant", "speed": 1}, "schedule.speed"),
    ],
)
def test_a_bad_schedule_section_exits_2_naming_the_key_path(tmp_path, capsys, section, where):
    path = smoke_variant(tmp_path, lambda raw: raw.update(schedule=section))
    with pytest.raises(UserError, match=f"{path}: {where.replace('[', '.').replace(']', '.')}:"):
        load_space(str(path))
    assert main(["validate", str(path)]) == 2
    assert where in capsys.readouterr().err


def test_shipped_adaptive_space_searches_schedules_and_warm_starts_constant():
    space = load_space("adaptive")
    assert space.schedule.kinds == ("constant", "linear", "adaptive")
    assert set(space.schedule.signals) == {"agreement", "kd_loss"}
    for name in space.study.warm_starts:
        assert warm_start_params(name, space, 1)["schedule_kind"] == "constant"


def test_strength_knob_is_shared_memory():
    knob = Strength(partial(build_transform_at, POLICY), 0.5)
    assert knob._value.is_shared()
    knob.set(0.75)
    assert knob.value == 0.75


# --- the report ------------------------------------------------------------------------------------


def test_the_report_plots_the_strength_beside_the_accuracy_and_shows_a_clamped_controller(tmp_path):
    study = optuna.create_study(direction="maximize")
    for value, strength, reached in ((0.8, [0.7, 1.0], [1.0, 1.0]), (0.6, [0.5, 0.3], [0.4, 0.2])):
        trial = study.ask()
        trial.set_user_attr(POLICY_JSON, dataclasses.replace(POLICY, schedule=ADAPTIVE).to_dict())
        trial.set_user_attr(STRENGTH, strength)
        trial.set_user_attr(STRENGTH_REACHED, reached)
        trial.report(value - 0.1, 1)
        trial.report(value, 2)
        study.tell(trial, value)
    plain = study.ask()
    study.tell(plain, 0.7)  # a constant-schedule trial: no strength, no curve
    run = {"name": "searched (trial 0)", "seed": 0, "schedule": ADAPTIVE.to_dict(), "strength": [0.9, 1.0]}
    curves = strength_curves(study, [run, {"name": "standard", "seed": 0}])
    assert [curve.name for curve in curves] == ["trial 0", "trial 1", "searched (trial 0) seed 0"]
    assert (
        curves[0].accuracy == pytest.approx((0.7, 0.8))
        and curves[0].clamped == 2
        and curves[2].accuracy == ()
    )
    lines = strength_lines(curves)
    assert "strength per epoch: 0.70 1.00; clamped at a bound at the end of 2 of 2 epochs" in lines[0]
    assert "clamped" not in lines[1]
    text = report.write(tmp_path, study, [])
    markdown = (tmp_path / "report.md").read_text()
    assert "## Augmentation strength" in markdown and "![strength.png](strength.png)" in markdown
    assert (tmp_path / "strength.png").stat().st_size > 0 and isinstance(text, str)


# --- the KD temperature's schedule -----------------------------------------------------------------


def test_a_linear_temperature_moves_from_its_start_to_its_end_and_is_used_per_epoch(monkeypatch, tmp_path):
    kd = KDSettings(2.0, 0.5, temperature_end=6.0)
    assert [kd.at_epoch(e, 3).temperature for e in range(3)] == [2.0, 4.0, 6.0]
    assert KDSettings(2.0, 0.5).at_epoch(2, 3) == KDSettings(2.0, 0.5)  # constant: the settings themselves
    assert (
        KDSettings.from_dict(kd.to_dict()) == kd and "temperature_end" not in KDSettings(2.0, 0.5).to_dict()
    )
    seen = []
    real = distill_module.distillation_loss
    monkeypatch.setattr(
        distill_module, "distillation_loss", lambda *a, **k: (seen.append(a[3].temperature), real(*a, **k))[1]
    )
    x, y = _tiny_data(32)
    runtime = resolve("cpu", 0)
    settings = dataclasses.replace(load_space("smoke").trial, epochs=3, batch_size=16)
    teacher, student = (
        build_model(n, in_channels=1, num_classes=4, image_size=12) for n in ("cnn-small", "cnn-tiny")
    )
    loader = make_loader(x, y, None, 16, runtime, 0)
    train_student(student, loader, settings, Normaliser.fit(x, runtime), teacher, kd)
    assert seen == [2.0, 2.0, 4.0, 4.0, 6.0, 6.0]  # two batches per epoch
    path = write_policy(tmp_path / "p.json", dataclasses.replace(POLICY, kd=kd), {}) and tmp_path / "p.json"
    assert load_policy(path).kd == kd


def test_the_space_searches_the_temperature_schedule_and_warm_starts_keep_it_constant(tmp_path):
    def mutate(raw):
        raw["kd"] |= {
            "temperature_schedule": ["constant", "linear"],
            "temperature_end": {"low": 1.0, "high": 8.0},
        }
        raw["study"]["warm_starts"] = ["standard"]

    space = load_space(str(smoke_variant(tmp_path, mutate)))
    assert space.kd.temperature_schedules == ("constant", "linear")
    assert warm_start_params("standard", space, 1)["temperature_schedule"] == "constant"
    study = optuna.create_study()
    study.enqueue_trial({"temperature_schedule": "linear", "temperature_end": 7.0})
    assert sample_policy(study.ask(), space, 1).kd.temperature_end == 7.0


@pytest.mark.parametrize(
    ("kd", "where"),
    [
        ({"temperature_schedule": "cosine"}, "kd.temperature_schedule"),
        ({"temperature_end": 4.0}, "kd.temperature_end"),  # without a linear schedule
        ({"temperature_schedule": "linear", "temperature_end": 500.0}, "kd.temperature_end"),
        ({"temperature_schedule": "linear"}, "kd.temperature_end"),  # missing
    ],
)
def test_a_bad_temperature_schedule_exits_2_naming_the_key_path(tmp_path, kd, where):
    path = smoke_variant(tmp_path, lambda raw: raw["kd"].update(kd))
    with pytest.raises(UserError, match=f"{path}: {where}:"):
        load_space(str(path))
    assert main(["validate", str(path)]) == 2

"""Checkpoints that fail, and teachers that change (issue 17, item 8, part A): an unusable retrain
checkpoint is moved aside and the run redone; the teacher checkpoints every epoch and a killed
training resumes to the same weights; a teacher checkpoint file is part of a study's fingerprint and
of a retrain run's key."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import optuna
import pytest
import torch

from augsearch import distill
from augsearch.baselines import Candidate
from augsearch.data import SyntheticSpec, load_dataset
from augsearch.errors import UserError
from augsearch.loader import Normaliser
from augsearch.retrain import retrain_run, run_key
from augsearch.runtime import resolve
from augsearch.space import load_space
from augsearch.storage import default_storage
from augsearch.study import open_study
from augsearch.teacher import checkpoint_sha256, get_teacher
from augsearch.workspace import open_workspace

PLAIN = Candidate("plain", None, None)  # no augmentation, no KD: a retrain run that needs no teacher


@pytest.fixture(scope="module")
def workspace():
    return open_workspace(load_space("smoke"), "synthetic", None, "cpu", 0)


@pytest.fixture(scope="module")
def clean_run(workspace, tmp_path_factory):
    """The run never interrupted: what a redone run must equal."""
    return retrain_run(PLAIN, workspace, None, 0, 2, tmp_path_factory.mktemp("clean"))


def _torch_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


UNUSABLE = {
    "truncated": lambda: _torch_bytes({"epochs_done": 1, "model": {"w": torch.zeros(1000)}})[:300],
    "not-a-zip": lambda: b"not a checkpoint at all",
    "wrong-keys": lambda: _torch_bytes({"epochs_done": 1, "model": {"nonsense": torch.zeros(3)}}),
    "empty": lambda: b"",
}


@pytest.mark.parametrize("case", sorted(UNUSABLE))
def test_an_unusable_retrain_checkpoint_is_moved_aside_and_the_run_redone(
    workspace, clean_run, tmp_path, capsys, case
):
    settings = replace(workspace.space.retrain, subset=None, epochs=2)
    key = run_key(PLAIN, settings, workspace.space.student, 0)
    checkpoint = tmp_path / f"{key}.ckpt"
    content = UNUSABLE[case]()
    checkpoint.write_bytes(content)
    result = retrain_run(PLAIN, workspace, None, 0, 2, tmp_path)
    aside = tmp_path / f"{key}.ckpt.corrupt"
    assert aside.read_bytes() == content and not checkpoint.exists()
    lines = [line for line in capsys.readouterr().err.splitlines() if "augsearch:" in line]
    assert len(lines) == 1 and f"checkpoint {checkpoint} is unusable" in lines[0] and str(aside) in lines[0]
    assert result["train_loss"] == clean_run["train_loss"]
    assert result["test_accuracy"] == clean_run["test_accuracy"]
    assert (tmp_path / f"{key}.json").is_file()


@pytest.fixture
def teacher_setup():
    space = load_space("smoke")
    space = replace(space, teacher=replace(space.teacher, epochs=3))
    data = load_dataset(
        "synthetic", synthetic=SyntheticSpec(num_classes=3, image_size=12, train_size=120, test_size=60)
    )
    return space, data, Normaliser.fit(data.x_train, resolve("cpu", 0))


class _Killed(BaseException):
    """Stands in for SIGKILL right after a checkpoint was written."""


def test_a_killed_teacher_training_resumes_at_the_next_epoch_with_the_same_weights(
    tmp_path, teacher_setup, monkeypatch
):
    space, data, normalise = teacher_setup
    real_save, saved = distill._save, []

    def save_then_die(path, epochs_done, *args):
        real_save(path, epochs_done, *args)
        saved.append(epochs_done)
        if epochs_done == 1 and len(saved) == 1:
            raise _Killed

    monkeypatch.setattr(distill, "_save", save_then_die)
    with pytest.raises(_Killed):
        get_teacher(space, data, normalise, tmp_path / "killed", seed=0)
    (progress,) = (tmp_path / "killed").glob("*.ckpt")
    assert torch.load(progress, weights_only=True)["epochs_done"] == 1
    assert not list((tmp_path / "killed").glob("*.pt"))
    _, info = get_teacher(space, data, normalise, tmp_path / "killed", seed=0)
    assert saved == [1, 2, 3] and info["cached"] is False  # resumed at epoch 2, not from scratch
    assert not list((tmp_path / "killed").glob("*.ckpt"))

    _, whole = get_teacher(space, data, normalise, tmp_path / "whole", seed=0)
    (resumed_file,) = (tmp_path / "killed").glob("*.pt")
    (whole_file,) = (tmp_path / "whole").glob("*.pt")
    resumed = torch.load(resumed_file, weights_only=True)["state_dict"]
    uninterrupted = torch.load(whole_file, weights_only=True)["state_dict"]
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[key], uninterrupted[key]) for key in resumed)
    assert info["test_accuracy"] == whole["test_accuracy"]


def _teacher_files(tmp_path, teacher_setup):
    """Two teacher checkpoints of the same architecture with different weights."""
    space, data, normalise = teacher_setup
    model, _ = get_teacher(
        replace(space, teacher=replace(space.teacher, epochs=1)), data, normalise, tmp_path, 0
    )
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    torch.save({"state_dict": state}, first)
    torch.save(
        {
            "state_dict": {
                key: value + 1 if value.is_floating_point() else value for key, value in state.items()
            }
        },
        second,
    )
    return first, second


def test_another_teacher_checkpoint_does_not_resume_the_study(tmp_path, teacher_setup):
    space, _, _ = teacher_setup
    first, second = _teacher_files(tmp_path, teacher_setup)
    storage = default_storage(tmp_path)
    sha_first, sha_second = checkpoint_sha256(space, first), checkpoint_sha256(space, second)
    assert sha_first != sha_second and checkpoint_sha256(space, None) is None
    open_study("s", storage, space, "synthetic", 0, teacher_sha256=sha_first)
    open_study("s", storage, space, "synthetic", 0, teacher_sha256=sha_first)  # the same teacher resumes
    for other in (sha_second, None):
        with pytest.raises(UserError, match="another space file, dataset, seed or teacher checkpoint"):
            open_study("s", storage, space, "synthetic", 0, teacher_sha256=other)
    plain = optuna.load_study(study_name="s", storage=storage).user_attrs["fingerprint"]
    assert plain.endswith(f":teacher-{sha_first}")
    # a study made without a checkpoint keeps the fingerprint it always had
    open_study("t", storage, space, "synthetic", 0)
    assert optuna.load_study(study_name="t", storage=storage).user_attrs["fingerprint"] == (
        f"{space.sha256}:synthetic:0"
    )
    space_with_file = replace(space, teacher=replace(space.teacher, checkpoint=str(second)))
    assert checkpoint_sha256(space_with_file, None) == sha_second


def test_another_teacher_checkpoint_does_not_reuse_retrain_runs(workspace, tmp_path, teacher_setup):
    first, second = _teacher_files(tmp_path / "teachers", teacher_setup)
    space = workspace.space
    sha_first, sha_second = checkpoint_sha256(space, first), checkpoint_sha256(space, second)
    out = tmp_path / "retrain"
    retrain_run(PLAIN, workspace, None, 0, 1, out, sha_first)
    retrain_run(PLAIN, workspace, None, 0, 1, out, sha_first)  # found finished: not redone
    assert len(list(out.glob("*.json"))) == 1
    retrain_run(PLAIN, workspace, None, 0, 1, out, sha_second)
    assert len(list(out.glob("*.json"))) == 2
    settings = replace(space.retrain, subset=None, epochs=1)
    keys = {run_key(PLAIN, settings, space.student, 0, sha) for sha in (sha_first, sha_second, None)}
    assert len(keys) == 3
    assert {path.stem for path in out.glob("*.json")} == keys - {run_key(PLAIN, settings, space.student, 0)}
    assert all(json.loads(path.read_text())["epochs"] == 1 for path in out.glob("*.json"))

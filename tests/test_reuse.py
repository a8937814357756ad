"""Exact reuse of the teacher's clean-image outputs (augsearch/reuse.py): the outputs a batch gets equal
a fresh teacher pass on that very batch, in trials, retrains and baselines; counted right; keyed.

Tolerance: the teacher runs on a sub-batch (the changed images) where a fresh pass runs on the whole
batch, and oneDNN may compute another batch size with other kernels. Measured here in fp32 for
cnn-tiny, cnn-small, cnn-teacher and resnet8x4, folded or not: at most 3e-7 of the largest logit (a
few float32 ulps; emulated bf16 gave identical outputs). The tests allow 1e-5 relative plus 1e-6
absolute, far below the difference between two images' outputs (about 1e-2 here).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np
import optuna
import pytest
import torch

from augsearch import reuse
from augsearch.baselines import Candidate, baseline
from augsearch.data import load_dataset
from augsearch.distill import freeze, inference_teacher, train_student
from augsearch.loader import Normaliser, make_loader, unchanged
from augsearch.mixing import MixSettings
from augsearch.models import build_model
from augsearch.policy import KDSettings, OpChoice, Policy, build_transform
from augsearch.retrain import retrain_run
from augsearch.reuse import CleanOutputs, clean_outputs
from augsearch.runtime import resolve
from augsearch.settings import TrainSettings
from augsearch.space import load_space
from augsearch.study import make_objective
from augsearch.warmstart import enqueue_warm_starts
from augsearch.workspace import Workspace, trial_context

RTOL, ATOL = 1e-5, 1e-6
MILD = Policy(
    fixed=(), ops=(OpChoice("Rotate", 0.3, 0.6), OpChoice("InvertImg", 0.3, 1.0)), kd=KDSettings(2.0, 0.5)
)


@pytest.fixture(autouse=True)
def _fresh_kept(monkeypatch):
    """Each test starts with no kept outputs (they live for the process, as in a study's worker)."""
    monkeypatch.setattr(reuse, "_KEPT", OrderedDict())


@pytest.fixture
def checked(monkeypatch) -> list[tuple[int, int, float]]:
    """Every call of ``CleanOutputs.targets`` made by the real training code, checked against a fresh
    teacher pass on the whole batch: (batch size, outputs reused, largest difference)."""
    calls: list[tuple[int, int, float]] = []
    real = CleanOutputs.targets

    def targets(self, images, indices, same, run):
        out, saved = real(self, images, indices, same, run)
        fresh = run(images)
        torch.testing.assert_close(out, fresh, rtol=RTOL, atol=ATOL)
        calls.append((len(indices), saved, float((out - fresh).abs().max())))
        return out, saved

    monkeypatch.setattr(CleanOutputs, "targets", targets)
    return calls


def _data(n: int = 96, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, size, size, 1)).astype(np.uint8)
    x[:, : size // 2] += (y * 60).astype(np.uint8)[:, None, None, None]
    return x, y.astype(np.int64)


def _plain_teacher(seed: int = 1, size: int = 12) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("cnn-small", in_channels=1, num_classes=3, image_size=size)
    model.train()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding changes the graph
        model(torch.randn(32, 1, size, size) * 2 + 1)
    return freeze(model)


def _teacher(seed: int = 1) -> torch.nn.Module:
    """A cnn-small teacher with its BatchNorms folded, as distillation uses it."""
    return inference_teacher(_plain_teacher(seed), resolve("cpu", 0))


def _train(transform, mix=None, reuse_on=True, epochs=2):
    runtime = resolve("cpu", 0)
    x, y = _data()
    normalise = Normaliser.fit(x, runtime)
    teacher = _teacher()
    torch.manual_seed(0)
    student = build_model("cnn-tiny", in_channels=1, num_classes=3, image_size=12)
    if transform is not None:
        transform.set_random_seed(0)
    result = train_student(
        student, make_loader(x, y, transform, 16, runtime, 0), TrainSettings(epochs=epochs, lr=0.05),
        normalise, teacher, KDSettings(2.0, 0.7), mix=mix, mix_seed=0,
        clean=clean_outputs(teacher, x, normalise) if reuse_on else None,
    )  # fmt: skip
    return result, student


def test_policy_none_reuses_every_output_after_the_first_epoch_and_trains_the_same(checked):
    result, student = _train(None)
    assert result.teacher_images == 2 * 96 and result.teacher_saved == 96  # epoch 2: all reused
    assert [saved for _, saved, _ in checked] == [0] * 6 + [16] * 6
    plain, plain_student = _train(None, reuse_on=False)
    assert plain.teacher_saved == 0 and plain.teacher_images == 2 * 96
    np.testing.assert_allclose(result.train_loss, plain.train_loss, rtol=1e-5)
    for key, value in student.state_dict().items():
        torch.testing.assert_close(value, plain_student.state_dict()[key], rtol=1e-4, atol=1e-5)


def test_a_mild_policy_reuses_the_unchanged_images_only(checked):
    result, _ = _train(build_transform(MILD, seed=0), epochs=3)
    assert 0 < result.teacher_saved < result.teacher_images - 96
    assert sum(saved for _, saved, _ in checked) == result.teacher_saved
    assert any(0 < saved < size for size, saved, _ in checked)  # mixed batches: a sub-batch ran


def test_mixed_batches_reuse_nothing(checked):
    result, _ = _train(None, mix=MixSettings("mixup", 1.0, 1.0))
    assert result.mixed_batches == result.batches == 12
    assert result.teacher_saved == 0 and result.teacher_images == 2 * 96 and checked == []


def test_unchanged_compares_bytes():
    x, _ = _data(4)
    out = x.copy()
    out[1, 3, 3, 0] ^= 1
    out[3] = 255 - out[3]
    assert unchanged(x, out).tolist() == [True, False, True, False]
    assert unchanged(x, out[:, :8, :8]).tolist() == [False] * 4  # another shape: all changed


def test_the_saved_share_is_counted_on_a_hand_made_batch():
    runs: list[int] = []

    def run(images: torch.Tensor) -> torch.Tensor:  # logits that name the image: its first pixel, its row
        runs.append(len(images))
        return images[:, :1, 0, 0].repeat(1, 3) * torch.tensor([1.0, 2.0, 3.0])

    images = torch.arange(8.0)[:, None, None, None].expand(8, 1, 2, 2).contiguous()
    clean = CleanOutputs(("hand",), 10)
    rows = np.array([9, 0, 1, 2, 3, 4, 5, 6])
    same = np.array([True, True, False, True, False, True, True, True])
    out, saved = clean.targets(images, rows, same, run)
    assert saved == 0 and runs == [8] and clean.known.sum() == 6
    torch.testing.assert_close(out, run(images))
    runs.clear()
    same_now = np.array([True, False, True, True, False, False, True, True])  # rows 9, 2, 5, 6 were kept
    out, saved = clean.targets(images, rows, same_now, run)
    assert saved == 4 and runs == [4]  # the teacher saw the four others only
    torch.testing.assert_close(out, images[:, :1, 0, 0].repeat(1, 3) * torch.tensor([1.0, 2.0, 3.0]))


def test_the_kept_outputs_are_keyed_by_teacher_data_and_inference_path(monkeypatch):
    x, _ = _data()
    runtime = dataclasses.replace(resolve("cpu", 0), teacher_dtype=None)  # fp32, also on a CPU with bf16
    normalise = Normaliser.fit(x, runtime)
    teacher = _teacher(1)
    first = clean_outputs(teacher, x, normalise)
    assert clean_outputs(teacher, x, normalise) is first
    bf16 = dataclasses.replace(normalise, runtime=dataclasses.replace(runtime, teacher_dtype=torch.bfloat16))
    contiguous = dataclasses.replace(normalise, runtime=dataclasses.replace(runtime, channels_last=False))
    others = [
        clean_outputs(_teacher(2), x, normalise),  # other weights
        clean_outputs(_plain_teacher(1), x, normalise),  # the same teacher, BatchNorms not folded
        clean_outputs(teacher, x[::-1].copy(), normalise),  # other images
        clean_outputs(teacher, x, dataclasses.replace(normalise, std=normalise.std * 2)),
        clean_outputs(teacher, x, bf16),  # another precision
        clean_outputs(teacher, x, contiguous),  # another memory format
    ]
    keys = {first.key} | {other.key for other in others}
    assert len(keys) == 1 + len(others)
    monkeypatch.setenv("AUGSEARCH_TEACHER_REUSE", "0")
    off = resolve("cpu", 0)
    assert not off.teacher_reuse and "no teacher reuse" in off.describe()
    assert clean_outputs(teacher, x, Normaliser.fit(x, off)) is None
    assert clean_outputs(None, x, normalise) is None


def _smoke_workspace(fixed: bool = True) -> Workspace:
    """The smoke space with trials of 2 epochs; ``fixed=False``: without its fixed stage (HorizontalFlip)."""
    space = load_space("smoke")
    space = dataclasses.replace(space, trial=dataclasses.replace(space.trial, epochs=2))
    space = space if fixed else dataclasses.replace(space, fixed=())
    data = load_dataset("synthetic", synthetic=space.dataset.synthetic)
    runtime = resolve("cpu", 0)
    return Workspace(space, data, runtime, Normaliser.fit(data.x_train, runtime), seed=0)


def _smoke_teacher(workspace: Workspace) -> torch.nn.Module:
    data = workspace.data
    torch.manual_seed(0)
    model = build_model(
        workspace.space.teacher.model, in_channels=data.channels, num_classes=data.num_classes,
        image_size=data.image_size,
    )  # fmt: skip
    return inference_teacher(model, workspace.runtime)


def test_trials_reuse_exactly_and_share_the_outputs(checked):
    workspace = _smoke_workspace(fixed=False)  # so that the warm start `none` changes no image
    context = trial_context(workspace, _smoke_teacher(workspace), None)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    assert enqueue_warm_starts(study, dataclasses.replace(workspace.space, study=dataclasses.replace(
        workspace.space.study, warm_starts=("none",))), workspace.data.channels) == ["none"]  # fmt: skip
    study.optimize(make_objective(context), n_trials=3)
    none, *others = study.trials
    assert none.user_attrs["teacher_passes_saved"] * 2 == none.user_attrs["teacher_passes"] > 0
    assert checked and all(difference <= ATOL for _, _, difference in checked)
    # The later trials find the clean outputs the first one kept: some reuse from their first epoch.
    distilled = [t for t in others if t.user_attrs["teacher_passes"]]
    assert distilled and all(t.user_attrs["teacher_passes_saved"] > 0 for t in distilled)


def test_retrains_and_baselines_reuse_exactly(checked, tmp_path):
    workspace = _smoke_workspace()
    teacher = _smoke_teacher(workspace)
    kd = KDSettings(4.0, 0.9)
    searched = Candidate("searched (trial 0)", build_transform(MILD), kd, trial=0)
    none = baseline("none", Policy(workspace.space.fixed, (), kd), kd, workspace.data.channels)
    standard = baseline("standard", Policy(workspace.space.fixed, (), kd), kd, workspace.data.channels)
    runs = [retrain_run(c, workspace, teacher, 0, 2, tmp_path) for c in (none, searched, standard)]
    per_epoch = len(workspace.data.x_train) // 32 * 32  # the loader drops the last partial batch
    assert all(run["teacher_passes"] == 2 * per_epoch for run in runs)
    # `none`: every image of epoch 2 reused, but for those the first epoch's dropped batch held
    dropped = len(workspace.data.x_train) - per_epoch
    assert per_epoch - dropped <= runs[0]["teacher_passes_saved"] <= per_epoch
    assert runs[1]["teacher_passes_saved"] > 0 and runs[2]["teacher_passes_saved"] > 0
    assert len(checked) == 3 * 2 * (len(workspace.data.x_train) // 32)
    assert all(difference <= ATOL for _, _, difference in checked)

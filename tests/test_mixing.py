"""Batch mixing (mixup, CutMix) and knowledge distillation with mixed targets."""

import hashlib
import json
import math
from dataclasses import asdict

import numpy as np
import optuna
import pytest
import torch
from torch import nn

from augsearch.baselines import Candidate
from augsearch.distill import distillation_loss, train_student
from augsearch.loader import Normaliser, make_loader
from augsearch.mixing import NO_MIXING, MixSettings, mix_batch
from augsearch.models import build_model
from augsearch.policy import KDSettings, Policy
from augsearch.retrain import run_key, searched
from augsearch.runtime import resolve
from augsearch.space import TrainSettings


def _images(b: int, h: int, w: int) -> torch.Tensor:
    return torch.arange(b * 2 * h * w, dtype=torch.float32).view(b, 2, h, w) / 7.0


def _documented_draws(seed: int, b: int, alpha: float) -> tuple[float, torch.Tensor, float, torch.Generator]:
    """The draws mix_batch's docstring lists, made again by hand: u, perm, λ; the generator for the box."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand((), generator=g).item()
    perm = torch.randperm(b, generator=g)
    lam = float(np.random.default_rng(int(torch.randint(2**62, (), generator=g))).beta(alpha, alpha))
    return u, perm, lam, g


def test_mixup_matches_a_hand_computation():
    x, y = _images(3, 4, 5), torch.tensor([7, 8, 9])
    settings = MixSettings("mixup", 1.0, 0.4)
    permuted = 0
    for seed in range(6):
        mixed = mix_batch(x, y, settings, torch.Generator().manual_seed(seed))
        _, perm, lam, _ = _documented_draws(seed, 3, 0.4)
        assert mixed.lam == lam and 0 < lam < 1
        assert mixed.labels_a.tolist() == [7, 8, 9]
        assert mixed.labels_b.tolist() == [[7, 8, 9][i] for i in perm.tolist()]
        for i in range(3):
            expected = lam * x[i] + (1 - lam) * x[perm[i]]
            assert torch.allclose(mixed.images[i], expected, atol=1e-6)
        permuted += perm.tolist() != [0, 1, 2]
    assert permuted > 0


def test_cutmix_matches_a_hand_computation():
    h, w = 8, 10
    x, y = _images(3, h, w), torch.tensor([0, 1, 2])
    settings = MixSettings("cutmix", 1.0, 1.0)
    for seed in range(6):
        mixed = mix_batch(x, y, settings, torch.Generator().manual_seed(seed))
        _, perm, lam, g = _documented_draws(seed, 3, 1.0)
        cy, cx = int(torch.randint(h, (), generator=g)), int(torch.randint(w, (), generator=g))
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        top, left = cy - cut_h // 2, cx - cut_w // 2
        rows = [r for r in range(top, top + cut_h) if 0 <= r < h]
        cols = [c for c in range(left, left + cut_w) if 0 <= c < w]
        expected = x.clone()
        for i in range(3):
            for r in rows:
                for c in cols:
                    expected[i, :, r, c] = x[perm[i], :, r, c]
        assert torch.equal(mixed.images, expected)
        assert mixed.lam == pytest.approx(1 - len(rows) * len(cols) / (h * w), abs=1e-12)
        assert mixed.labels_b.tolist() == perm.tolist()


def test_cutmix_lambda_is_the_share_of_pixels_kept():
    """Counted from the output alone: the pixels that differ from the image's own form one box
    covering 1 − λ of the image, clipped at the border where the centre lies near it."""
    h, w = 9, 12
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, h, w).contiguous()
    at_border = 0
    for seed in range(40):
        mixed = mix_batch(
            x, torch.arange(4), MixSettings("cutmix", 1.0, 0.5), torch.Generator().manual_seed(seed)
        )
        for i in [i for i in range(4) if mixed.labels_b[i] != i]:
            changed = mixed.images[i, 0] != x[i, 0]
            assert mixed.lam == pytest.approx(1 - changed.sum().item() / (h * w), abs=1e-12)
            rows, cols = changed.any(1), changed.any(0)
            assert torch.equal(changed, rows[:, None] & cols[None, :])  # a rectangle
            at_border += bool(rows[0] or rows[-1] or cols[0] or cols[-1])
    assert at_border > 0


def test_probability_zero_never_mixes_and_one_always_does():
    x, y = _images(4, 3, 3), torch.arange(4)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    for settings in (MixSettings("mixup", 0.0, 1.0), MixSettings("cutmix", 0.0, 1.0), NO_MIXING):
        for _ in range(20):
            mixed = mix_batch(x, y, settings, g)
            assert mixed.images is x and mixed.labels_b is y and mixed.lam == 1.0 and not mixed.applied
    assert torch.equal(g.get_state(), state)  # settings that never mix draw nothing
    assert all(mix_batch(x, y, MixSettings("mixup", 1.0, 1.0), g).applied for _ in range(50))
    half = [mix_batch(x, y, MixSettings("mixup", 0.5, 1.0), g).applied for _ in range(200)]
    assert 60 < sum(half) < 140


def _softmax(v: list[float]) -> list[float]:
    e = [math.exp(a) for a in v]
    return [a / sum(e) for a in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


S = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]  # student logits on the mixed two-image batch
T = [[1.0, 1.0, 0.0], [-1.0, 3.0, 0.5]]  # teacher logits on the same mixed batch
Y_A, PERM, LAM = [0, 2], [1, 0], 0.3
Y_B = [Y_A[i] for i in PERM]


def _ce(labels: list[int]) -> float:
    return sum(-math.log(_softmax(S[i])[labels[i]]) for i in range(2)) / 2


def test_hinton_with_mixed_targets_matches_a_hand_computation():
    temperature, alpha = 2.0, 0.7
    kd = (
        temperature**2
        * sum(
            _kl(_softmax([v / temperature for v in T[i]]), _softmax([v / temperature for v in S[i]]))
            for i in range(2)
        )
        / 2
    )
    ce = LAM * _ce(Y_A) + (1 - LAM) * _ce(Y_B)
    loss = distillation_loss(
        torch.tensor(S),
        torch.tensor(T),
        torch.tensor(Y_A),
        KDSettings(temperature, alpha),
        torch.tensor(Y_B),
        LAM,
    )
    assert loss["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert loss["kd"].item() == pytest.approx(kd, rel=1e-6)  # the teacher saw the mixed images: no label
    assert loss["total"].item() == pytest.approx(alpha * kd + (1 - alpha) * ce, rel=1e-6)


def _dkd_by_hand(
    labels: list[int], temperature: float, alpha: float, beta: float
) -> tuple[float, float, float]:
    """CE, TCKD and NCKD (Zhao et al. 2022) against ``labels``, one row at a time in plain floats."""
    tckd = nckd = 0.0
    for i in range(2):
        ps = _softmax([v / temperature for v in S[i]])
        pt = _softmax([v / temperature for v in T[i]])
        t = labels[i]
        tckd += _kl([pt[t], 1 - pt[t]], [ps[t], 1 - ps[t]])
        others = [k for k in range(3) if k != t]
        nckd += _kl([pt[k] / (1 - pt[t]) for k in others], [ps[k] / (1 - ps[t]) for k in others])
    return _ce(labels), temperature**2 * tckd / 2, temperature**2 * nckd / 2


def test_dkd_with_mixed_targets_matches_a_hand_computation():
    temperature, alpha, beta = 4.0, 1.0, 8.0
    ce_a, tckd_a, nckd_a = _dkd_by_hand(Y_A, temperature, alpha, beta)
    ce_b, tckd_b, nckd_b = _dkd_by_hand(Y_B, temperature, alpha, beta)
    expected = LAM * (ce_a + alpha * tckd_a + beta * nckd_a) + (1 - LAM) * (
        ce_b + alpha * tckd_b + beta * nckd_b
    )
    loss = distillation_loss(
        torch.tensor(S),
        torch.tensor(T),
        torch.tensor(Y_A),
        KDSettings(temperature, alpha, "dkd", beta),
        torch.tensor(Y_B),
        LAM,
    )
    assert loss["total"].item() == pytest.approx(expected, rel=1e-5)
    assert loss["tckd"].item() == pytest.approx(LAM * tckd_a + (1 - LAM) * tckd_b, rel=1e-5)
    assert loss["nckd"].item() == pytest.approx(LAM * nckd_a + (1 - LAM) * nckd_b, rel=1e-5)
    assert loss["ce"].item() == pytest.approx(LAM * ce_a + (1 - LAM) * ce_b, rel=1e-6)


@pytest.mark.parametrize("kd", [None, KDSettings(2.0, 0.7), KDSettings(4.0, 1.0, "dkd", 8.0)])
def test_lambda_one_is_the_unmixed_loss_exactly(kd):
    s, t, y_a, y_b = torch.tensor(S), torch.tensor(T), torch.tensor(Y_A), torch.tensor(Y_B)
    mixed = distillation_loss(s, t, y_a, kd, y_b, 1.0)
    plain = distillation_loss(s, t, y_a, kd)
    assert mixed.keys() == plain.keys()
    assert all(torch.equal(mixed[key], plain[key]) for key in plain)


def _toy(n: int = 64, size: int = 12):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 40, (n, size, size, 1)).astype(np.uint8)
    x[y == 1, : size // 2] += 150
    return x, y.astype(np.int64)


def _train_once(mix: MixSettings, mix_seed: int | None = None):
    runtime = resolve("cpu", 0)
    x, y = _toy()
    normalise = Normaliser.fit(x, runtime)
    torch.manual_seed(0)
    student = build_model("cnn-tiny", in_channels=1, num_classes=2, image_size=12)
    teacher = build_model("cnn-tiny", in_channels=1, num_classes=2, image_size=12)
    result = train_student(
        student, make_loader(x, y, None, 16, runtime, 0), TrainSettings(epochs=1, lr=0.05), normalise,
        teacher, KDSettings(2.0, 0.5), mix=mix, mix_seed=mix_seed,
    )  # fmt: skip
    return result, student.state_dict()


def test_train_student_with_mixup_is_reproducible():
    mix = MixSettings("mixup", 1.0, 0.4)
    first, weights = _train_once(mix)
    again, weights_again = _train_once(mix)
    assert first.batches == 4 and first.mixed_batches == 4
    assert math.isfinite(first.train_loss[0]) and first.train_loss == again.train_loss
    assert all(torch.equal(weights[key], weights_again[key]) for key in weights)
    other, _ = _train_once(mix, mix_seed=123)
    assert other.train_loss != first.train_loss
    unmixed, _ = _train_once(NO_MIXING)
    assert unmixed.mixed_batches == 0 and unmixed.train_loss != first.train_loss


class _Recorder(nn.Module):
    """Wraps a model and keeps a copy of every batch it is given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(images.detach().clone())
        return self.model(images)


def test_the_teacher_sees_the_same_mixed_batch_as_the_student():
    runtime = resolve("cpu", 0)
    x, y = _toy(48)
    normalise = Normaliser.fit(x, runtime)
    batches = [(torch.from_numpy(x[i : i + 16]), torch.from_numpy(y[i : i + 16])) for i in range(0, 48, 16)]
    teacher = _Recorder(build_model("cnn-tiny", in_channels=1, num_classes=2, image_size=12))
    student = _Recorder(build_model("cnn-tiny", in_channels=1, num_classes=2, image_size=12))
    mix = MixSettings("cutmix", 1.0, 1.0)
    train_student(
        student,
        batches,
        TrainSettings(epochs=1),
        normalise,
        teacher,
        KDSettings(2.0, 0.5),
        mix=mix,
        mix_seed=5,
    )
    g = torch.Generator().manual_seed(5)
    expected = [mix_batch(normalise(images), labels, mix, g) for images, labels in batches]
    assert len(teacher.seen) == len(student.seen) == 3
    for step, mixed in enumerate(expected):
        assert torch.equal(teacher.seen[step], mixed.images)
        assert torch.equal(student.seen[step], mixed.images)
    assert any(m.applied for m in expected)
    assert any(not torch.equal(m.images, normalise(b[0])) for m, b in zip(expected, batches, strict=True))


def test_run_key_keeps_old_names_without_mixing_and_records_active_mixing():
    settings, kd = TrainSettings(epochs=2), KDSettings(4.0, 0.9)
    newer = ("reports_per_epoch", "epochs_per_report")  # left out at 1: as before they existed
    train = {k: v for k, v in asdict(settings).items() if k not in newer}
    old = {"transform": None, "kd": kd.to_dict(), "train": train, "student": "cnn-tiny", "seed": 0}
    digest = hashlib.sha256(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()[:10]
    assert run_key(Candidate("none", None, kd), settings, "cnn-tiny", 0) == f"none-s0-{digest}"
    idle = Candidate("none", None, kd, mix=MixSettings("mixup", 0.0, 1.0))
    assert run_key(idle, settings, "cnn-tiny", 0) == f"none-s0-{digest}"
    active = Candidate("none", None, kd, mix=MixSettings("mixup", 0.5, 1.0))
    assert run_key(active, settings, "cnn-tiny", 0) != f"none-s0-{digest}"


def test_searched_candidates_carry_the_trial_mixing():
    mix = MixSettings("cutmix", 0.5, 1.0)
    policy = Policy((), (), KDSettings(2.0, 0.5), mix)
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.8, user_attrs={"policy_json": policy.to_dict()}))
    (candidate,) = searched(study)
    assert candidate.mix == mix and candidate.kd == policy.kd

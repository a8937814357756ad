"""Decoupled KD (Zhao et al., CVPR 2022): the loss by hand, its place in the space, the policy file."""

import json
import math
from pathlib import Path

import optuna
import pytest
import torch
from conftest import smoke_variant

from augsearch.distill import distillation_loss, dkd_loss, hinton_loss
from augsearch.errors import UserError
from augsearch.export import load_policy, write_policy
from augsearch.policy import KDSettings, Policy, sample_policy
from augsearch.space import load_space
from augsearch.study import make_sampler


def _softmax(v: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(x / t) for x in v]
    return [x / sum(e) for x in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def _dkd_by_hand(s, t, y, temperature, alpha, beta) -> dict[str, float]:
    """The paper's definitions, sample by sample, in plain floats."""
    ce = tckd = nckd = 0.0
    for zs, zt, label in zip(s, t, y, strict=True):
        ce -= math.log(_softmax(zs)[label])
        ps, pt = _softmax(zs, temperature), _softmax(zt, temperature)
        tckd += _kl([pt[label], 1 - pt[label]], [ps[label], 1 - ps[label]])
        others = [i for i in range(len(zs)) if i != label]
        nckd += _kl([pt[i] / (1 - pt[label]) for i in others], [ps[i] / (1 - ps[label]) for i in others])
    n = len(y)
    ce, tckd, nckd = ce / n, tckd / n * temperature**2, nckd / n * temperature**2
    return {"ce": ce, "tckd": tckd, "nckd": nckd, "total": ce + alpha * tckd + beta * nckd}


def test_dkd_loss_matches_hand_computation_on_two_samples():
    s = [[1.0, 2.0, 0.5, -0.3], [0.3, -1.0, 2.0, 0.1]]
    t = [[2.0, 1.0, -1.0, 0.4], [0.0, 0.5, 3.0, -2.0]]
    y = [0, 2]
    temperature, alpha, beta = 2.0, 0.7, 3.0
    loss = dkd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature, alpha, beta)
    expected = _dkd_by_hand(s, t, y, temperature, alpha, beta)
    for key, value in expected.items():
        assert loss[key].item() == pytest.approx(value, rel=1e-5), key
    assert loss["kd"].item() == pytest.approx(alpha * expected["tckd"] + beta * expected["nckd"], rel=1e-5)


def test_classical_kd_decomposes_into_tckd_and_weighted_nckd():
    """The paper's reformulation, per sample: KD = TCKD + (1 − p_t^teacher) · NCKD."""
    s, t, y, temperature = (
        torch.tensor([[0.5, 1.5, -1.0]]),
        torch.tensor([[2.5, 0.0, 1.0]]),
        torch.tensor([0]),
        3.0,
    )
    kd = hinton_loss(s, t, y, temperature, 1.0)["kd"].item()
    parts = dkd_loss(s, t, y, temperature, 1.0, 1.0)
    p_target = torch.softmax(t / temperature, dim=1)[0, 0].item()
    assert kd == pytest.approx(parts["tckd"].item() + (1 - p_target) * parts["nckd"].item(), rel=1e-5)


def test_dkd_gradients_are_finite_even_for_confident_logits():
    s = torch.tensor([[30.0, -30.0, 0.0], [0.0, 0.0, 50.0]], requires_grad=True)
    loss = dkd_loss(
        s, torch.tensor([[40.0, 0.0, -40.0], [1.0, 2.0, 3.0]]), torch.tensor([0, 2]), 1.0, 1.0, 8.0
    )
    loss["total"].backward()
    assert torch.isfinite(loss["total"]) and torch.isfinite(s.grad).all()


def test_distillation_loss_dispatches_on_the_loss_name():
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    hinton = distillation_loss(s, t, y, KDSettings(2.0, 0.5))
    assert hinton["total"].item() == pytest.approx(hinton_loss(s, t, y, 2.0, 0.5)["total"].item())
    dkd = distillation_loss(s, t, y, KDSettings(2.0, 0.5, "dkd", 4.0))
    assert dkd["total"].item() == pytest.approx(dkd_loss(s, t, y, 2.0, 0.5, 4.0)["total"].item())
    plain = distillation_loss(s, None, y, KDSettings(2.0, 0.5, "dkd", 4.0))
    assert plain["total"].item() == pytest.approx(torch.nn.functional.cross_entropy(s, y).item())


def test_kd_settings_refuse_beta_without_dkd_and_dkd_without_beta():
    with pytest.raises(ValueError, match="beta"):
        KDSettings(2.0, 0.5, "dkd")
    with pytest.raises(ValueError, match="beta"):
        KDSettings(2.0, 0.5, "hinton", 1.0)
    with pytest.raises(ValueError, match="unknown KD loss"):
        KDSettings(2.0, 0.5, "fitnet")
    assert KDSettings(2.0, 0.0, "dkd", 1.0).distils and not KDSettings(2.0, 0.0).distils


def test_beta_is_a_parameter_only_of_trials_that_chose_dkd():
    space = load_space("kd-only")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    chosen = set()
    for _ in range(24):
        trial = study.ask()
        policy = sample_policy(trial, space, 1)
        chosen.add(policy.kd.loss)
        assert trial.params["kd_loss"] == policy.kd.loss
        assert ("beta" in trial.params) == (policy.kd.loss == "dkd")
        assert (policy.kd.beta is not None) == (policy.kd.loss == "dkd")
        assert sample_policy(optuna.trial.FixedTrial(trial.params), space, 1) == policy
        study.tell(trial, 0.5)
    assert chosen == {"hinton", "dkd"}


def test_spaces_without_a_loss_key_search_hinton_only():
    space = load_space("default")
    assert space.kd.losses == ("hinton",) and space.kd.beta is None
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    policy = sample_policy(trial, space, 1)
    assert policy.kd.loss == "hinton" and not {"kd_loss", "beta"} & set(trial.params)


def test_tpe_handles_the_conditional_parameter():
    space = load_space("kd-only")
    study = optuna.create_study(sampler=make_sampler(space, 0), direction="maximize")  # multivariate TPE
    for _ in range(10):
        trial = study.ask()
        policy = sample_policy(trial, space, 1)
        study.tell(trial, policy.kd.beta or 0.0)
    assert {t.params["kd_loss"] for t in study.trials} == {"hinton", "dkd"}


def test_exported_policy_carries_the_loss_and_beta_and_reloads(tmp_path):
    space = load_space("kd-only")
    params = {"kd_loss": "dkd", "temperature": 4.0, "alpha": 1.0, "beta": 8.0}
    policy = sample_policy(optuna.trial.FixedTrial(params), space, 1)
    path = tmp_path / "best.json"
    write_policy(path, policy, {"study": "t"})
    document = json.loads(path.read_text())
    assert document["kd"] == {"loss": "dkd", "temperature": 4.0, "alpha": 1.0, "beta": 8.0}
    loaded = load_policy(path)
    assert loaded.kd == KDSettings(4.0, 1.0, "dkd", 8.0) and loaded.policy == policy


def test_old_policy_files_without_loss_or_beta_still_load(tmp_path):
    policy = Policy(load_space("default").fixed, (), KDSettings(2.0, 0.5))
    path = tmp_path / "old.json"
    write_policy(path, policy, {})
    document = json.loads(path.read_text())
    assert "beta" not in document["kd"]
    document["kd"] = {"temperature": 2.0, "alpha": 0.5}  # as written before the loss was recorded
    path.write_text(json.dumps(document))
    assert load_policy(path).kd == KDSettings(2.0, 0.5, "hinton", None)


def _space_with(tmp_path: Path, kd: dict) -> Path:
    return smoke_variant(tmp_path, lambda raw: raw["kd"].update(kd))


@pytest.mark.parametrize(
    ("kd", "expected"),
    [
        ({"loss": "fitnet"}, "kd.loss: expected hinton or dkd or a list of them, got 'fitnet'"),
        ({"loss": []}, "kd.loss: expected a non-empty list"),
        (
            {"loss": ["dkd", "dkd"], "beta": {"low": 1, "high": 2}},
            "kd.loss: expected a non-empty list of distinct",
        ),
        ({"loss": "dkd"}, "kd.beta: missing required key"),
        ({"beta": {"low": 1.0, "high": 8.0}}, "kd.beta: only the dkd loss has beta"),
        (
            {"loss": ["hinton", "dkd"], "beta": {"low": 8.0, "high": 1.0}},
            "kd.beta: low 8.0 is greater than high",
        ),
    ],
)
def test_bad_kd_sections_give_one_line(tmp_path, kd, expected):
    path = _space_with(tmp_path, kd)
    with pytest.raises(UserError) as error:
        load_space(str(path))
    assert expected in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_single_dkd_loss_is_fixed_not_categorical(tmp_path):
    space = load_space(str(_space_with(tmp_path, {"loss": "dkd", "beta": {"low": 2.0, "high": 2.0}})))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    policy = sample_policy(trial, space, 1)
    assert policy.kd.loss == "dkd" and policy.kd.beta == 2.0
    assert "kd_loss" not in trial.params and "beta" not in trial.params


def test_train_student_runs_the_teacher_for_dkd_even_with_alpha_zero():
    import numpy as np

    from augsearch.distill import train_student
    from augsearch.loader import Normaliser, make_loader
    from augsearch.models import build_model
    from augsearch.runtime import resolve
    from augsearch.space import TrainSettings

    runtime = resolve("cpu", 0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (32, 12, 12, 1), dtype=np.uint8), rng.integers(0, 2, 32)
    teacher = build_model("cnn-tiny", in_channels=1, num_classes=2, image_size=12)
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    result = train_student(
        build_model("cnn-tiny", in_channels=1, num_classes=2, image_size=12),
        make_loader(x, y, None, 16, runtime, 0),
        TrainSettings(epochs=1),
        Normaliser.fit(x, runtime),
        teacher,
        KDSettings(2.0, 0.0, "dkd", 1.0),
    )
    assert len(calls) == 2 and math.isfinite(result.train_loss[0])

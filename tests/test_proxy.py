"""T. stddev (Wang et al., NeurIPS 2022): hand computation, skip rule, space section, objective."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from torch import nn

from augsearch.errors import UserError
from augsearch.loader import Normaliser
from augsearch.proxy import ATTRIBUTE, in_worst_fraction, screen, teacher_stddev
from augsearch.report import spearman
from augsearch.runtime import resolve
from augsearch.space import ProxySettings, load_space, parse_space

WEIGHTS = [[0.5, -0.2], [0.1, 0.3], [-0.4, 0.2]]  # 3 classes from 2 pixels
PIXELS = [[0, 1], [2, 3], [1, 1], [3, 0]]  # 4 images of 1x2 pixels: 2 batches of 2


def _fixed_teacher() -> nn.Module:
    linear = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(WEIGHTS))
    return nn.Sequential(nn.Flatten(), linear)


def _identity_normaliser(teacher_dtype: torch.dtype | None = None) -> Normaliser:
    shape = (1, 1, 1, 1)
    runtime = dataclasses.replace(resolve("cpu"), teacher_dtype=teacher_dtype)
    return Normaliser(torch.zeros(shape), torch.ones(shape), runtime)


def test_teacher_stddev_matches_a_hand_computation():
    images = np.array(PIXELS, dtype=np.uint8).reshape(4, 1, 2, 1)  # (N, H, W, C)

    def softmax(pixels):
        logits = [sum(w * p for w, p in zip(row, pixels, strict=True)) for row in WEIGHTS]
        exps = [math.exp(v) for v in logits]
        return [e / sum(exps) for e in exps]

    means = []
    for batch in (PIXELS[:2], PIXELS[2:]):  # the teacher's mean probability vector of each batch
        probs = [softmax(pixels) for pixels in batch]
        means.append([sum(p[c] for p in probs) / len(probs) for c in range(3)])
    stds = []
    for c in range(3):  # per-class standard deviation across batches, n - 1 in the denominator
        mean = (means[0][c] + means[1][c]) / 2
        stds.append(math.sqrt(((means[0][c] - mean) ** 2 + (means[1][c] - mean) ** 2) / (2 - 1)))
    expected = sum(stds) / 3  # averaged over the classes

    got = teacher_stddev(_fixed_teacher(), images, None, _identity_normaliser(), batch_size=2)
    assert got == pytest.approx(expected, rel=1e-6)  # the teacher computes in float32
    assert expected > 0
    # a teacher in bf16 (CUDA; CPUs with native bf16) rounds its logits to 8 significant bits
    got_bf16 = teacher_stddev(_fixed_teacher(), images, None, _identity_normaliser(torch.bfloat16), 2)
    assert got_bf16 == pytest.approx(expected, rel=0.02)


def test_teacher_stddev_needs_two_batches():
    images = np.zeros((3, 1, 2, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="at least 2 batches"):
        teacher_stddev(_fixed_teacher(), images, None, _identity_normaliser(), batch_size=2)


def test_the_worst_fraction_is_the_highest_values_after_startup():
    seen = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert in_worst_fraction(0.5, seen, 0.2, startup=5)  # highest: lower T. stddev is better
    assert not in_worst_fraction(0.1, seen, 0.2, startup=5)
    assert not in_worst_fraction(0.9, seen, 0.2, startup=6)  # still in start-up
    assert not in_worst_fraction(0.9, seen, 0.0, startup=1)  # skipping off


def test_spearman():
    assert spearman([1, 2, 3, 4], [0.9, 0.8, 0.7, 0.6]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def _screen_in_study(seen: list[float], fraction: float) -> optuna.trial.FrozenTrial:
    study = optuna.create_study(direction="maximize")
    for value in seen:
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.5,
                                                  user_attrs={ATTRIBUTE: value}))  # fmt: skip
    images = np.array(PIXELS * 2, dtype=np.uint8).reshape(8, 1, 2, 1)
    settings = ProxySettings(batches=4, skip_worst_fraction=fraction, startup_trials=3)

    def objective(trial: optuna.Trial) -> float:
        screen(trial, None, _fixed_teacher(), images, _identity_normaliser(), 2, settings)
        return 1.0

    study.optimize(objective, n_trials=1)
    return study.trials[-1]


def test_screen_stores_the_proxy_and_prunes_the_worst_at_step_0():
    kept = _screen_in_study([1.0, 1.0, 1.0], 0.5)  # everything seen was worse
    assert kept.state == optuna.trial.TrialState.COMPLETE and kept.user_attrs[ATTRIBUTE] > 0
    skipped = _screen_in_study([0.0, 0.0, 0.0], 0.5)  # everything seen was better
    assert skipped.state == optuna.trial.TrialState.PRUNED and skipped.intermediate_values == {}
    assert "skipped before training" in skipped.user_attrs["pruned_reason"]


def _raw_space(**extra) -> dict:
    raw = __import__("yaml").safe_load(load_space("smoke").path.read_text())
    return raw | extra


def test_space_proxy_section_defaults_and_checks():
    assert load_space("smoke").proxy == ProxySettings()  # spaces without the section keep working
    space = parse_space(_raw_space(proxy={"batches": 3, "skip_worst_fraction": 0.25}), Path("s.yaml"), "0")
    assert space.proxy == ProxySettings(3, 0.25, 5)
    for bad, match in (
        ({"batches": 1}, "a standard deviation needs two"),
        ({"batches": 0, "skip_worst_fraction": 0.3}, "needs the proxy on"),
        ({"skip_worst_fraction": 0.95}, r"in \[0.0, 0.9\]"),
        ({"batch": 4}, "proxy.batch: unknown key"),
    ):
        with pytest.raises(UserError, match=match):
            parse_space(_raw_space(proxy=bad), Path("s.yaml"), "0")


def test_the_objective_stores_the_proxy_of_each_trial(tmp_path):
    from augsearch.data import load_dataset, validation_split
    from augsearch.models import build_model
    from augsearch.study import TrialContext, make_objective
    from augsearch.workspace import trial_subset

    space = load_space("smoke")
    space = dataclasses.replace(space, trial=dataclasses.replace(space.trial, epochs=1))
    data = load_dataset("synthetic", synthetic=space.dataset.synthetic)
    runtime = dataclasses.replace(resolve("cpu"), loader_workers=0)
    normalise = Normaliser.fit(data.x_train, runtime)
    train, val = validation_split(data.y_train, space.dataset.validation_fraction, 0)
    teacher = build_model(space.teacher.model, in_channels=1, num_classes=data.num_classes, image_size=16)
    context = TrialContext(space, data, trial_subset(train, 200, 0), val, teacher, normalise, 0)
    study = optuna.create_study(direction="maximize")
    study.optimize(make_objective(context), n_trials=1)
    study.enqueue_trial(study.trials[0].params)  # the same policy again
    study.optimize(make_objective(context), n_trials=1)
    first, again = (trial.user_attrs[ATTRIBUTE] for trial in study.trials)
    assert first > 0 and math.isfinite(first)
    assert again == first  # same images, same augmentation seed: a policy always scores the same

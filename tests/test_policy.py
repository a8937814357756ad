import json

import albumentations as A
import numpy as np
import optuna
import pytest

from augsearch.errors import UserError
from augsearch.export import load_policy, write_policy
from augsearch.ops import op_names
from augsearch.policy import Policy, build_transform, sample_policy
from augsearch.space import load_space


def _params(seed: int, channels: int = 1) -> list[dict]:
    space = load_space("default")
    study = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3), direction="maximize"
    )
    out = []
    for _ in range(5):
        trial = study.ask()
        policy = sample_policy(trial, space, channels)
        study.tell(trial, float(sum(op.p for op in policy.ops)))
        out.append(trial.params)
    return out


def test_seeded_sampler_proposes_the_same_parameters_twice():
    assert _params(3) == _params(3)
    assert _params(3) != _params(4)


def test_sampled_policy_uses_only_ops_fit_for_the_channels():
    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        policy = sample_policy(study.ask(), space, 1)
        assert len(policy.ops) == space.policy.slots
        assert all(op.name in op_names(1) for op in policy.ops)
        assert space.kd.temperature.low <= policy.kd.temperature <= space.kd.temperature.high


def test_policy_replays_from_fixed_trial_and_round_trips_dict():
    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    policy = sample_policy(trial, space, 1)
    assert sample_policy(optuna.trial.FixedTrial(trial.params), space, 1) == policy
    assert Policy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy


def _policy() -> Policy:
    space = load_space("default")
    return sample_policy(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2)).ask(), space, 1)


def test_export_reloads_through_load_policy_and_from_dict(tmp_path):
    policy = _policy()
    path = tmp_path / "best.json"
    write_policy(path, policy, {"study": "t"})
    document = json.loads(path.read_text())
    assert document["format"] == "augsearch-policy" and document["schema_version"] == 2
    loaded = load_policy(path)
    assert loaded.policy == policy and loaded.kd == policy.kd
    plain = A.from_dict(document["albumentations"])
    image = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    outputs = []
    for transform in (build_transform(policy), loaded.transform, plain):
        transform.set_random_seed(7)
        outputs.append([transform(image=image)["image"] for _ in range(4)])
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", "not a JSON file"),
        ('{"format": "other"}', "not an augsearch policy file"),
        ('{"format": "augsearch-policy", "schema_version": 99}', "newer than this augsearch reads"),
        ('{"format": "augsearch-policy", "schema_version": 1, "policy": {}}', "albumentations: expected the"),
    ],
)
def test_load_policy_refuses_other_files(tmp_path, content, expected):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(UserError, match=expected):
        load_policy(path)


def test_load_policy_missing_file():
    with pytest.raises(UserError, match="policy file not found"):
        load_policy("/nonexistent/policy.json")


def test_every_shipped_space_exports_without_albumentations_warnings():
    import warnings

    from augsearch.space import space_names

    for name in space_names():
        space = load_space(name)
        channels = space.dataset.synthetic.channels if space.dataset.synthetic else 1
        policy = sample_policy(
            optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask(), space, channels
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            A.from_dict(A.to_dict(build_transform(policy)))

import pytest
from conftest import smoke_variant

from augsearch.cli import main
from augsearch.errors import UserError
from augsearch.space import find_space, load_space, space_names


def test_shipped_spaces_load():
    names = space_names()
    assert {"default", "smoke"} <= set(names)
    for name in names:
        space = load_space(name)
        assert space.name == name
        assert space.study.trials >= 1
        assert len(space.sha256) == 64


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.update(colour="blue"), "colour: unknown key"),
        (lambda r: r["trial"].update(epochs="two"), "trial.epochs: expected int"),
        (lambda r: r["kd"]["alpha"].update(low=0.9, high=0.1), "kd.alpha: low 0.9 is greater than high 0.1"),
        (lambda r: r["kd"]["alpha"].update(high=1.5), "kd.alpha.high: expected a value in [0.0, 1.0]"),
        (lambda r: r["policy"].update(ops=["Rotate", "Spin"]), "policy.ops[1]: unknown op 'Spin'"),
        (lambda r: r.pop("student"), "student: missing required key"),
        (lambda r: r["fixed"].append({"name": "NoSuchTransform"}), "unknown albumentations class"),
        (lambda r: r["study"].update(pruner="never"), "study.pruner: expected one of"),
    ],
)
def test_bad_spaces_give_one_line_naming_file_and_key(tmp_path, mutate, expected):
    path = smoke_variant(tmp_path, mutate)
    with pytest.raises(UserError) as error:
        load_space(str(path))
    message = str(error.value)
    assert expected in message and str(path) in message
    assert "\n" not in message


def test_python_tags_are_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_space(str(path))
    assert not marker.exists()


def test_unknown_space_name_lists_choices():
    with pytest.raises(UserError, match=r"unknown search space 'nope'; choose one of .*default"):
        find_space("nope")


def _policy(**policy):
    return lambda raw: raw.update(policy=policy)


RA = {"structure": "randaugment", "n": {"low": 0, "high": 2}, "m": {"low": 0.1, "high": 0.5}}
MIX = {"kinds": ["none", "mixup"], "p": {"low": 0.0, "high": 1.0}, "alpha": {"low": 0.2, "high": 1.0}}


# Each bad input of the issue, in the new sections: (mutation, key path, what is expected)
BAD = [
    (_policy(slots=2, cutout=True), "policy.cutout", "unknown key"),
    (_policy(structure="autoaugment"), "policy.structure", "expected one of slots, subpolicies, randaugment"),
    (
        _policy(structure="randaugment", slots=2),
        "policy.slots",
        "belongs to structure slots, not randaugment",
    ),
    (_policy(slots=2, ops=["Rotate", "Spin"]), "policy.ops[1]", "unknown op 'Spin'"),
    (_policy(slots=2, exclude=["Twirl"]), "policy.exclude[0]", "unknown op 'Twirl'"),
    (
        _policy(slots=2, ops=["Rotate"], exclude=["Equalize"]),
        "policy.exclude[0]",
        "'Equalize' is not in policy.ops",
    ),
    (
        _policy(slots=2, ops=["Rotate"], exclude=["Rotate"]),
        "policy.exclude",
        "excludes every op of policy.ops",
    ),
    (_policy(**RA | {"n": {"low": 3, "high": 1}}), "policy.n", "low 3 is greater than high 1"),
    (_policy(**RA | {"n": {"low": 0.5, "high": 1}}), "policy.n.low", "expected int, got float 0.5"),
    (
        _policy(**RA | {"m": {"low": 0.2, "high": 1.5}}),
        "policy.m.high",
        "expected a value in [0.0, 1.0], got 1.5",
    ),
    (_policy(**RA | {"m": -0.1}), "policy.m", "expected a value in [0.0, 1.0], got -0.1"),
    (_policy(structure="randaugment", m=0.5), "policy.n", "missing required key"),
    (_policy(structure="subpolicies", subpolicies=3), "policy.length", "missing required key"),
    (
        _policy(structure="subpolicies", subpolicies="five", length=2),
        "policy.subpolicies",
        "expected int, got str",
    ),
    (
        _policy(slots=1, erasing={"p": {"low": 0, "high": 1.2}, "size": 0.3}),
        "policy.erasing.p.high",
        "expected a value in [0.0, 1.0], got 1.2",
    ),
    (
        _policy(slots=1, erasing={"p": 0.5, "size": {"low": 0.5, "high": 0.2}}),
        "policy.erasing.size",
        "low 0.5 is greater than high 0.2",
    ),
    (_policy(slots=1, erasing={"p": 0.5}), "policy.erasing.size", "missing required key"),
    (
        lambda r: r.update(mixing=MIX | {"kinds": ["none", "blend"]}),
        "mixing.kinds[1]",
        "unknown mixing kind 'blend'",
    ),
    (lambda r: r.update(mixing=MIX | {"p": {"low": -0.5, "high": 1}}), "mixing.p.low", "expected a value in"),
    (lambda r: r.update(mixing={"kinds": ["mixup"], "p": 0.5}), "mixing.alpha", "missing required key"),
    (lambda r: r.update(mixing={"kinds": "mixup"}), "mixing.kinds", "expected list, got str 'mixup'"),
    (
        lambda r: r["trial"].update(lr={"low": 0.2, "high": 0.01}),
        "trial.lr",
        "low 0.2 is greater than high 0.01",
    ),
    (lambda r: r["trial"].update(epochs=[1, "two"]), "trial.epochs[1]", "expected an integer in [1, 10000]"),
    (
        lambda r: r["trial"].update(batch_size=[]),
        "trial.batch_size",
        "expected an integer or a non-empty list",
    ),
    (lambda r: r.update(fixed_searched="yes"), "fixed_searched", "expected bool, got str 'yes'"),
    (
        lambda r: r.update(fixed=[], fixed_searched=True),
        "fixed_searched",
        "there are no fixed stages to switch",
    ),
    (lambda r: r["study"].update(sampler="bayes"), "study.sampler", "expected one of tpe, random, cmaes, gp"),
    (
        lambda r: r["study"].update(sampler_args={"n_startup": 3}),
        "study.sampler_args.n_startup",
        "not an argument of TPESampler",
    ),
    (
        lambda r: r["kd"].update(alpha={"low": 0.1, "high": 1.5}),
        "kd.alpha.high",
        "expected a value in [0.0, 1.0]",
    ),
    (lambda r: r["kd"].update(temperature={"low": 4.0, "high": 2.0}), "kd.temperature", "low 4.0 is greater"),
    (lambda r: r.pop("kd"), "kd", "missing required key"),
    (lambda r: r["trial"].update(reports_per_epoch=0), "trial.reports_per_epoch", "expected"),
    (lambda r: r["retrain"].update(reports_per_epoch=2), "retrain.reports_per_epoch", "unknown key"),
    (lambda r: r["trial"].update(epochs_per_report=0), "trial.epochs_per_report", "expected"),
    (
        lambda r: r["trial"].update(epochs_per_report=2, reports_per_epoch=2),
        "trial.epochs_per_report",
        "cannot be combined with reports_per_epoch",
    ),
    (lambda r: r["retrain"].update(epochs_per_report=2), "retrain.epochs_per_report", "unknown key"),
]


@pytest.mark.parametrize(("mutate", "where", "expected"), BAD)
def test_bad_new_sections_give_one_line_naming_file_and_key_path(tmp_path, mutate, where, expected):
    path = smoke_variant(tmp_path, mutate)
    with pytest.raises(UserError) as error:
        load_space(str(path))
    message = str(error.value)
    assert message.startswith(f"{path}: {where}: ") and expected in message and "\n" not in message


@pytest.mark.parametrize(("mutate", "where", "expected"), BAD[::3])
def test_run_with_a_bad_space_exits_2_and_creates_nothing(
    tmp_path, monkeypatch, capsys, mutate, where, expected
):
    path = smoke_variant(tmp_path, mutate)
    monkeypatch.chdir(tmp_path)
    before = {file: file.read_bytes() for file in tmp_path.rglob("*") if file.is_file()}
    assert main(["run", "--space", str(path), "--no-retrain"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: {where}: " in err and expected in err
    after = {file: file.read_bytes() for file in tmp_path.rglob("*") if file.is_file()}
    assert after == before and not (tmp_path / "studies").exists()

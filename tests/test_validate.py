"""`augsearch validate` and the policy file's allow-list: what loads, what is refused, in one line."""

import inspect
import json
from dataclasses import replace
from pathlib import Path

import albumentations as A
import optuna
import pytest
from conftest import smoke_variant

from augsearch import export
from augsearch.baselines import BASELINES, RANDAUGMENT_M, RANDAUGMENT_N, RANDAUGMENT_OPS, baseline
from augsearch.cli import main
from augsearch.errors import UserError
from augsearch.export import load_policy, policy_document, write_policy
from augsearch.ops import OPS, op_names
from augsearch.pipeline import validate_file
from augsearch.policy import KDSettings, Policy, RandAugment, Trivial, build_transform, sample_policy
from augsearch.settings import FIXED_STAGES
from augsearch.space import load_space, space_names
from augsearch.validate import MAX_DEPTH, allowed_classes, check_pipeline

REPO = Path(__file__).resolve().parent.parent


def _channels(space) -> int:
    return space.dataset.synthetic.channels if space.dataset.synthetic else 1


def _document(name: str = "default", seed: int = 0) -> dict:
    """A policy file's content as the space's sampler would write it; fixed stages on."""
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.enqueue_trial({"fixed_on": True} if space.fixed_searched else {})
    return policy_document(sample_policy(study.ask(), space, _channels(space)), {"study": "t"})


def _write(tmp_path: Path, document: dict, name: str = "p.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_allow_listed_classes_exist_and_take_no_catch_all_arguments():
    for name in allowed_classes():
        parameters = inspect.signature(getattr(A, name)).parameters.values()
        assert "p" in {parameter.name for parameter in parameters}, name
        assert all(parameter.kind != parameter.VAR_KEYWORD for parameter in parameters), name
    assert set(OPS) <= allowed_classes() and set(FIXED_STAGES) <= allowed_classes()


@pytest.mark.parametrize("name", space_names())
def test_exports_of_every_shipped_space_load(tmp_path, name):
    for seed in range(3):
        path = _write(tmp_path, _document(name, seed))
        assert validate_file(str(path)).startswith(f"ok: policy file {path}")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_transforms_load(tmp_path, name, channels):
    standard = Policy(load_space("default").fixed, (), KDSettings(4.0, 0.9))
    candidate = baseline(name, standard, KDSettings(4.0, 0.9), channels)
    usable = op_names(channels)
    as_data = {  # the baseline as policy data (a file's policy section must build its pipeline)
        "none": replace(standard, fixed=()),
        "randaugment": replace(
            standard,
            randaugment=RandAugment(
                RANDAUGMENT_N, RANDAUGMENT_M, tuple(op for op in RANDAUGMENT_OPS if op in usable)
            ),
        ),
        "trivialaugment": replace(standard, trivial=Trivial(usable)),
    }.get(name, standard)
    document = policy_document(as_data, {})
    if candidate.transform is not None:
        same = json.loads(json.dumps(document["albumentations"]))
        assert same == json.loads(json.dumps(A.to_dict(candidate.transform)))
    loaded = load_policy(_write(tmp_path, document))
    assert A.to_dict(loaded.transform) == A.to_dict(build_transform(as_data))


def _transforms(document: dict) -> list:
    return document["albumentations"]["transform"]["transforms"]


def _nest(document: dict, levels: int) -> None:
    node = _transforms(document)[-1]
    for _ in range(levels):
        node = {"__class_fullname__": "OneOf", "p": 1.0, "transforms": [node]}
    _transforms(document)[-1] = node


@pytest.mark.parametrize(
    ("mutate", "where", "expected"),
    [
        (
            lambda d: _transforms(d)[0].update(__class_fullname__="Lambda"),
            "albumentations.transform.transforms[0].__class_fullname__",
            "class 'Lambda' is not allowed",
        ),
        (
            lambda d: _transforms(d)[1].update(heigth=28),
            "albumentations.transform.transforms[1]",
            "RandomCrop has no argument 'heigth' (did you mean 'height'?)",
        ),
        (
            lambda d: _transforms(d)[2].pop("p"),
            "albumentations.transform.transforms[2].p",
            "missing; every transform needs its probability p",
        ),
        (
            lambda d: _transforms(d)[2].update(p=1.5),
            "albumentations.transform.transforms[2].p",
            "expected a probability in [0, 1], got 1.5",
        ),
        (
            lambda d: _transforms(d)[1].update(height=100_000),
            "albumentations.transform.transforms[1]",
            "RandomCrop.height: expected sizes in [0, 4096] pixels, got 100000",
        ),
        (
            lambda d: _transforms(d).append(
                {"__class_fullname__": "Resize", "p": 1.0, "height": 9999, "width": 9}
            ),
            "albumentations.transform.transforms[5]",
            "Resize.height: expected sizes in [0, 4096]",
        ),
        (
            lambda d: _nest(d, MAX_DEPTH),
            "albumentations.transform" + ".transforms[4]" + ".transforms[0]" * MAX_DEPTH,
            f"nested {MAX_DEPTH + 1} levels deep; augsearch writes at most {MAX_DEPTH}",
        ),
        (
            lambda d: d["albumentations"].update(transform=_transforms(d)[2]),
            "albumentations.transform",
            "expected one Compose at the top",
        ),
        (
            lambda d: d["albumentations"].update(extra=1),
            "albumentations.extra",
            "unknown key",
        ),
        (
            lambda d: d["policy"]["ops"][0].update(name="Spin"),
            "policy.ops[0].name",
            "expected a catalogue op",
        ),
        (
            lambda d: d["policy"]["fixed"][0].update(name="Normalize"),
            "policy.fixed[0]",
            "'Normalize' is not allowed as a fixed stage",
        ),
        (
            lambda d: d["kd"].update(loss="dkd"),
            "kd.beta",
            "expected a number in [0.0, 100.0], got None",
        ),
        (
            lambda d: d["kd"].update(beta=2.0),
            "kd.beta",
            "only the dkd loss has beta (loss 'hinton')",
        ),
        (
            lambda d: d["kd"].update(temperature=-1),
            "kd.temperature",
            "expected a number in [0.1, 100.0], got -1",
        ),
        (
            lambda d: d["policy"]["ops"][1].update(magnitude=2),
            "policy.ops[1].magnitude",
            "expected a number in [0.0, 1.0], got 2",
        ),
        (
            lambda d: d["kd"].update(alpha=3),
            "kd.alpha",
            "expected a number in [0.0, 1.0], got 3",
        ),
    ],
)
def test_bad_policy_files_are_refused_before_albumentations_builds_anything(
    tmp_path, monkeypatch, mutate, where, expected
):
    document = _document()
    mutate(document)
    path = _write(tmp_path, document)
    built = []
    monkeypatch.setattr(export.A, "from_dict", lambda *args, **kwargs: built.append(1))
    with pytest.raises(UserError) as error:
        load_policy(path)
    assert str(error.value) == f"{path}: {where}: {expected}" or (
        str(error.value).startswith(f"{path}: {where}: ") and expected in str(error.value)
    )
    assert "\n" not in str(error.value) and not built


def test_nesting_up_to_the_limit_loads(tmp_path):
    document = _document()
    _nest(document, MAX_DEPTH - 1)
    check_pipeline(document["albumentations"], tmp_path / "p.json")  # the allow-list alone


def test_validate_tells_a_policy_from_a_space_by_content(tmp_path):
    document = _document()
    document["kd"] = KDSettings(4.0, 1.0, "dkd", 8.0).to_dict()
    policy_path = _write(tmp_path, document, name="policy")
    assert validate_file(str(policy_path)).startswith("ok: policy file")
    assert "KD dkd, T=4, alpha=1, beta=8" in validate_file(str(policy_path))
    space_path = tmp_path / "space"
    space_path.write_text((REPO / "search_spaces" / "smoke.yaml").read_text())
    assert validate_file(str(space_path)).startswith("ok: search space 'smoke'")
    assert validate_file("default").startswith("ok: search space 'default'")


def test_cli_validate_exit_codes_and_one_line(tmp_path, capsys):
    good = tmp_path / "good.json"
    write_policy(good, Policy(load_space("default").fixed, (), KDSettings(2.0, 0.5)), {})
    assert main(["validate", str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: policy file {good}")
    assert main(["validate", str(REPO / "search_spaces" / "kd-only.yaml")]) == 0
    assert capsys.readouterr().out.startswith("ok: search space 'kd-only'")
    bad = smoke_variant(tmp_path, lambda raw: raw["fixed"][0]["args"].update(pp=0.5))
    before = sorted(tmp_path.iterdir())
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}: fixed[0]: HorizontalFlip has no argument 'pp'" in err
    assert sorted(tmp_path.iterdir()) == before  # nothing written
    assert main(["validate", str(tmp_path / "missing.json")]) == 2
    assert "policy file not found" in capsys.readouterr().err


def _space_with_stage(tmp_path: Path, stage: dict) -> Path:
    return smoke_variant(tmp_path, lambda raw: raw["fixed"].append(stage))


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ({"name": "Normalize"}, "fixed[1]: albumentations class 'Normalize' is not allowed as a fixed stage"),
        ({"name": "RandomCrop", "args": {"hieght": 8, "width": 8}}, "did you mean 'height'?"),
        (
            {"name": "Resize", "args": {"height": 50_000, "width": 8}},
            "Resize.height: expected sizes in [0, 4096]",
        ),
        ({"name": "RandomCrop", "args": {"height": "big", "width": 8}}, "RandomCrop.height: expected sizes"),
        ({"name": "Pad", "args": {"padding": 2, "border_mode": "wavy"}}, "Pad refuses these arguments"),
        ({"name": "NoSuchTransform"}, "unknown albumentations class 'NoSuchTransform'"),
    ],
)
def test_bad_fixed_stages_are_refused_in_one_line(tmp_path, stage, expected):
    path = _space_with_stage(tmp_path, stage)
    with pytest.raises(UserError) as error:
        load_space(str(path))
    assert expected in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_catalogue_op_may_be_a_fixed_stage_and_round_trips(tmp_path):
    space = load_space(
        str(_space_with_stage(tmp_path, {"name": "Rotate", "args": {"limit": [-10, 10], "p": 0.5}}))
    )
    policy = Policy(space.fixed, (), KDSettings(2.0, 0.5))
    path = tmp_path / "policy.json"
    write_policy(path, policy, {})
    assert load_policy(path).policy == policy

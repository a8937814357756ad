"""Every per-image structure, batch mixing and searched trial budget: sampled, built, exported, reloaded."""

import json
import types
import warnings

import albumentations as A
import numpy as np
import optuna
import pytest
from conftest import smoke_variant

from augsearch import study as study_module
from augsearch.errors import UserError
from augsearch.export import load_policy, policy_document, write_policy
from augsearch.mixing import NO_MIXING, MixSettings
from augsearch.ops import op_names
from augsearch.policy import (
    Erasing,
    KDSettings,
    OpChoice,
    Policy,
    RandAugment,
    Trivial,
    build_transform,
    sample_policy,
)
from augsearch.space import SAMPLERS, Stage, load_space

GREY = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
RGB = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
# (space, the parameters that make its structure do something, image): one per structure
CASES = {
    "slots": ("default", {"fixed_on": True, "op0_p": 1.0, "op1_p": 1.0}, GREY),
    "subpolicies": ("autoaugment-like", {"fixed_on": True, "sp0_op0_p": 1.0}, GREY),
    "randaugment": ("randaugment", {"fixed_on": True, "ra_n": 2, "ra_m": 0.7}, GREY),
    "trivial": ("trivialaugment", {"fixed_on": False}, GREY),
    "erasing": ("cifar10", {"fixed_on": True, "erasing_p": 1.0, "erasing_size": 0.5, "kd_loss": "dkd"}, RGB),
    "mixing": ("mixing", {"fixed_on": True, "mix_kind": "cutmix", "mix_p": 0.5, "mix_alpha": 1.0}, GREY),
}


def _sample(space_name: str, params: dict, channels: int, seed: int = 0) -> Policy:
    space = load_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.enqueue_trial(params)
    return sample_policy(study.ask(), space, channels)


def _draws(transform: A.Compose, image: np.ndarray, seed: int = 7, n: int = 6) -> list[np.ndarray]:
    transform.set_random_seed(seed)  # the seed is not part of A.to_dict
    return [transform(image=image)["image"] for _ in range(n)]


@pytest.mark.parametrize("structure", list(CASES))
def test_each_structure_round_trips_through_the_policy_file(tmp_path, structure):
    name, params, image = CASES[structure]
    policy = _sample(name, params, image.shape[-1])
    path = tmp_path / "best.json"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # albumentations warns about arguments it drops on reload
        write_policy(path, policy, {"study": structure})
        loaded = load_policy(path)
        plain = A.from_dict(json.loads(path.read_text())["albumentations"])
    assert loaded.policy == policy and loaded.kd == policy.kd and loaded.mix == policy.mix
    assert Policy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    reference = _draws(build_transform(policy), image)
    for transform in (loaded.transform, plain):
        for a, b in zip(reference, _draws(transform, image), strict=True):
            np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(out, image) for out in reference) or structure == "mixing"


def test_structures_are_built_with_the_containers_they_need():
    def classes(policy: Policy) -> list[str]:
        return [
            t["__class_fullname__"] for t in A.to_dict(build_transform(policy))["transform"]["transforms"]
        ]

    kd = KDSettings(4.0, 0.9)
    subs = (
        (OpChoice("Rotate", 0.5, 0.3), OpChoice("Equalize", 1.0, 0.0)),
        (OpChoice("InvertImg", 0.2, 0.0),),
    )
    policy = Policy((), (), kd, subpolicies=subs)
    (block,) = A.to_dict(build_transform(policy))["transform"]["transforms"]
    assert block["__class_fullname__"] == "OneOf"
    assert [t["__class_fullname__"] for t in block["transforms"]] == ["Sequential", "Sequential"]
    assert [t["p"] for t in block["transforms"][0]["transforms"]] == [0.5, 1.0]
    randaugment = build_transform(Policy((), (), kd, randaugment=RandAugment(3, 0.4, ("Rotate", "Equalize"))))
    (some,) = randaugment.transforms
    assert isinstance(some, A.SomeOf) and some.n == 3 and some.replace
    assert [type(t).__name__ for t in some.transforms] == ["NoOp", "Rotate", "Equalize"]
    assert classes(Policy((), (), kd, randaugment=RandAugment(0, 0.4, ("Rotate",)))) == []  # N = 0: nothing
    (one,) = build_transform(Policy((), (), kd, trivial=Trivial(("Rotate", "Posterize")))).transforms
    assert isinstance(one, A.OneOf) and [type(t).__name__ for t in one.transforms] == [
        "NoOp",
        "Rotate",
        "Posterize",
    ]
    (hole,) = build_transform(Policy((), (), kd, erasing=Erasing(0.5, 0.25))).transforms
    assert isinstance(hole, A.CoarseDropout) and hole.p == 0.5
    assert hole.num_holes_range == (1, 1) and hole.hole_height_range == (0.25, 0.25)


def test_one_sub_policy_is_chosen_uniformly_per_image():
    """AutoAugment's rule: each image gets exactly one sub-policy, each with probability 1/K."""
    flip, invert = (OpChoice("HorizontalFlip", 1.0, 0.0),), (OpChoice("InvertImg", 1.0, 0.0),)
    transform = build_transform(Policy((), (), KDSettings(4.0, 0.9), subpolicies=(flip, invert)), seed=0)
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    flipped, inverted = image[:, ::-1], 255 - image
    outcomes = [transform(image=image)["image"] for _ in range(400)]
    n_flip = sum(np.array_equal(out, flipped) for out in outcomes)
    n_invert = sum(np.array_equal(out, inverted) for out in outcomes)
    assert n_flip + n_invert == 400  # never both, never neither
    assert 150 < n_flip < 250


def test_cutout_erases_one_hole_of_the_searched_size():
    image = np.full((32, 32, 1), 200, dtype=np.uint8)
    transform = build_transform(Policy((), (), KDSettings(4.0, 0.9), erasing=Erasing(1.0, 0.5)), seed=0)
    for _ in range(5):
        assert (transform(image=image)["image"] == 0).sum() == 16 * 16


def test_describe_has_a_line_for_each_structure():
    kd = KDSettings(2.0, 0.5)
    policy = Policy(
        (Stage("HorizontalFlip", {"p": 0.5}),),
        (OpChoice("Rotate", 0.5, 0.25),),
        kd,
        MixSettings("mixup", 0.5, 0.2),
        subpolicies=((OpChoice("Equalize", 1.0, 0.0),),),
        randaugment=RandAugment(2, 0.3, ("Rotate",)),
        trivial=Trivial(("Rotate", "Equalize")),
        erasing=Erasing(0.5, 0.4),
    )
    lines = policy.describe().splitlines()
    assert lines[0] == "fixed: HorizontalFlip"
    assert lines[1].startswith("Rotate") and "p=0.50 m=0.25" in lines[1]
    assert lines[2] == "sub-policy 1: Equalize p=1.00 m=0.00"
    assert lines[3] == "RandAugment: N=2, M=0.30 over 1 ops + identity"
    assert lines[4].startswith("TrivialAugment: one of 2 ops")
    assert lines[5] == "erasing (Cutout): p=0.50, size=0.40"
    assert lines[6].startswith("KD: hinton") and lines[7] == "mixing: mixup, p=0.50, alpha=0.20"
    assert Policy((), (), kd).describe().splitlines()[:2] == ["fixed: none", "(no searched ops)"]


def test_older_policy_data_and_version_1_files_still_load(tmp_path):
    old = {
        "fixed": [],
        "ops": [{"name": "Rotate", "p": 0.5, "magnitude": 0.5}],
        "kd": {"temperature": 2, "alpha": 1},
    }
    policy = Policy.from_dict(old)
    assert policy.mix == NO_MIXING and policy.subpolicies == () and policy.kd.loss == "hinton"
    document = policy_document(policy, {})
    document["schema_version"] = 1
    mixing = document.pop("mixing")
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(document))
    assert load_policy(path).mix == NO_MIXING and load_policy(path).policy == policy
    document["policy"]["mix"] = {"kind": "mixup", "p": 0.5, "alpha": 0.4}  # a v1 file that carried it
    path.write_text(json.dumps(document))
    assert load_policy(path).mix == MixSettings("mixup", 0.5, 0.4)
    document["schema_version"] = 2
    del document["policy"]["mix"]
    path.write_text(json.dumps(document))
    with pytest.raises(UserError, match=r"v1.json: mixing: missing; schema_version 2 files hold"):
        load_policy(path)
    document |= {"mixing": mixing, "schema_version": 4}  # 3: a strength schedule and/or synthesis
    path.write_text(json.dumps(document))
    with pytest.raises(UserError, match="schema_version 4 is newer than this augsearch reads"):
        load_policy(path)


def _document_with(structure: str) -> dict:
    name, params, image = CASES[structure]
    return policy_document(_sample(name, params, image.shape[-1]), {})


@pytest.mark.parametrize(
    ("structure", "mutate", "where", "expected"),
    [
        ("randaugment", lambda d: d["policy"]["randaugment"].update(n=-1), "policy.randaugment.n", "[0, 16]"),
        (
            "randaugment",
            lambda d: d["policy"]["randaugment"].update(magnitude=1.5),
            "policy.randaugment.magnitude",
            "expected a number in [0.0, 1.0], got 1.5",
        ),
        (
            "randaugment",
            lambda d: d["policy"]["randaugment"]["ops"].append("Spin"),
            "policy.randaugment.ops[",
            "expected a catalogue op",
        ),
        ("trivial", lambda d: d["policy"]["trivial"].update(extra=1), "policy.trivial.extra", "unknown key"),
        (
            "subpolicies",
            lambda d: d["policy"]["subpolicies"][1][0].update(magnitude=2),
            "policy.subpolicies[1][0].magnitude",
            "expected a number in [0.0, 1.0], got 2",
        ),
        (
            "subpolicies",
            lambda d: d["policy"]["subpolicies"][0][1].update(p=-0.1),
            "policy.subpolicies[0][1].p",
            "expected a number in [0.0, 1.0], got -0.1",
        ),
        ("erasing", lambda d: d["policy"]["erasing"].update(size=2), "policy.erasing.size", "got 2"),
        ("erasing", lambda d: d["policy"]["erasing"].pop("p"), "policy.erasing.p", "missing"),
        (
            "mixing",
            lambda d: d["mixing"].update(kind="blend"),
            "mixing.kind",
            "expected one of none, mixup, cutmix",
        ),
        (
            "mixing",
            lambda d: d["mixing"].update(p=1.5),
            "mixing.p",
            "expected a number in [0.0, 1.0], got 1.5",
        ),
        ("mixing", lambda d: d["mixing"].update(alpha="big"), "mixing.alpha", "got 'big'"),
        ("slots", lambda d: d["policy"].update(cutout=True), "policy.cutout", "unknown key"),
        ("slots", lambda d: d.update(notes="hi"), "notes", "unknown key for schema_version 2"),
    ],
)
def test_bad_structure_data_is_refused_in_one_line(tmp_path, structure, mutate, where, expected):
    document = _document_with(structure)
    mutate(document)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(document))
    with pytest.raises(UserError) as error:
        load_policy(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {where}") and expected in message and "\n" not in message


def test_a_trial_trains_with_its_searched_budget(tmp_path, monkeypatch):
    """``trial: {lr: range, epochs: [..], batch_size: [..]}``: the objective trains with sampled values."""

    def searched(raw):
        raw["trial"] = {
            "lr": {"low": 0.01, "high": 0.2, "log": True},
            "epochs": [1, 2],
            "batch_size": [16, 32],
        }

    space = load_space(str(smoke_variant(tmp_path, searched)))
    assert space.trial.epochs == 2 and space.trial.batch_size == 32  # the largest choice, e.g. for the pruner
    seen = []

    def fake_train(student, batches, settings, *args, **kwargs):
        seen.append((settings, batches.sampler.batch_size))
        return types.SimpleNamespace(
            val_accuracy=[0.5], images_per_second=1.0, teacher_images=0, teacher_saved=0
        )

    monkeypatch.setattr(study_module, "train_student", fake_train)
    context = _context(space)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"lr": 0.02, "epochs": 1, "batch_size": 16})
    study.optimize(study_module.make_objective(context), n_trials=1)
    ((settings, batch_size),) = seen
    assert (settings.lr, settings.epochs, settings.batch_size, batch_size) == (0.02, 1, 16, 16)
    assert {"lr", "epochs", "batch_size"} <= set(study.trials[0].params)


def _context(space):
    from augsearch.data import load_dataset
    from augsearch.loader import Normaliser
    from augsearch.models import build_model
    from augsearch.runtime import resolve

    data = load_dataset("synthetic", synthetic=space.dataset.synthetic)
    runtime = resolve("cpu", 0)
    shape = {"in_channels": data.channels, "num_classes": data.num_classes, "image_size": data.image_size}
    return study_module.TrialContext(
        space=space,
        data=data,
        train_index=np.arange(64),
        val_index=np.arange(64, 96),
        teacher=build_model(space.teacher.model, **shape),
        normalise=Normaliser.fit(data.x_train, runtime),
        seed=0,
    )


def _proposals(space, seed: int, trials: int = 6) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. CMA-ES's note on its first trial
        study = optuna.create_study(direction="maximize", sampler=study_module.make_sampler(space, seed))
        out = []
        for _ in range(trials):
            trial = study.ask()
            policy = sample_policy(trial, space, 1)
            score = policy.kd.temperature / 10 + policy.kd.alpha + policy.randaugment.magnitude
            study.tell(trial, score + (policy.mix.p if policy.mix.active else 0.0))
            out.append(trial.params)
    return out


def _sampler_space(tmp_path, sampler: str):
    """RandAugment (an integer and a float), fixed stages on/off, mixing and DKD (categoricals and
    conditional parameters): what each sampler has to cope with."""

    def mutate(raw):
        raw["policy"] = {
            "structure": "randaugment",
            "n": {"low": 0, "high": 3},
            "m": {"low": 0.0, "high": 1.0},
        }
        raw["fixed_searched"] = True
        raw["mixing"] = {
            "kinds": ["none", "mixup"],
            "p": {"low": 0.0, "high": 1.0},
            "alpha": {"low": 0.1, "high": 1},
        }
        raw["kd"] |= {"loss": ["hinton", "dkd"], "beta": {"low": 1.0, "high": 8.0}}
        raw["study"] |= {"sampler": sampler, "trials": 6}

    return load_space(str(smoke_variant(tmp_path, mutate)))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_seeded_sampler_proposes_the_same_parameters_twice(tmp_path, sampler):
    if sampler == "cmaes":
        pytest.importorskip("cmaes", reason="CMA-ES needs the optional cmaes package")
    space = _sampler_space(tmp_path, sampler)
    first = _proposals(space, 3)
    assert first == _proposals(space, 3)
    assert first != _proposals(space, 4)
    names = set().union(*first)
    assert {"ra_n", "ra_m", "fixed_on", "kd_loss", "temperature", "alpha"} <= names
    assert all(("beta" in params) == (params["kd_loss"] == "dkd") for params in first)  # conditional


def test_cmaes_samples_categoricals_with_tpe(tmp_path):
    pytest.importorskip("cmaes", reason="CMA-ES needs the optional cmaes package")
    sampler = study_module.make_sampler(_sampler_space(tmp_path, "cmaes"), 0)
    assert isinstance(sampler, optuna.samplers.CmaEsSampler)
    assert isinstance(sampler._independent_sampler, optuna.samplers.TPESampler)


def test_cmaes_without_its_package_is_refused_in_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cmaes" else real(name, *a)
    )
    with pytest.raises(UserError, match=r"study.sampler: cmaes needs the cmaes package"):
        _sampler_space(tmp_path, "cmaes")


def test_sampler_args_reach_the_sampler_and_bad_names_are_refused(tmp_path):
    space = load_space(
        str(smoke_variant(tmp_path, lambda raw: raw["study"].update(sampler_args={"n_startup_trials": 7})))
    )
    assert study_module.make_sampler(space, 0)._n_startup_trials == 7
    path = smoke_variant(tmp_path, lambda raw: raw["study"].update(sampler="gp", sampler_args={"prior": 1}))
    with pytest.raises(UserError, match=r"study.sampler_args.prior: not an argument of GPSampler"):
        load_space(str(path))


def test_colour_ops_are_left_out_on_grey_data_in_every_structure():
    for name in ("randaugment", "trivialaugment", "autoaugment-like"):
        policy = _sample(name, {}, 1)
        names = {op.name for sub in policy.subpolicies for op in sub}
        names |= set(policy.randaugment.ops if policy.randaugment else ())
        names |= set(policy.trivial.ops if policy.trivial else ())
        assert names and names <= set(op_names(1))

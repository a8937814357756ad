"""Synthetic images in training: reproducible batches, the loss without hard labels, ratio 0 as no
synthesis, the space section and the policy file (augsearch/synthesis.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import albumentations as A
import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F

from augsearch.data import SyntheticSpec, load_dataset
from augsearch.distill import distillation_loss, freeze, real_only_cross_entropy, train_student
from augsearch.errors import UserError
from augsearch.export import load_policy, write_policy
from augsearch.gan import build_generator
from augsearch.loader import Normaliser, Strength, make_loader
from augsearch.models import build_model
from augsearch.policy import KDSettings, Policy, build_transform, sample_policy
from augsearch.runtime import resolve, seed_everything
from augsearch.settings import GanRecipe, Stage, TrainSettings
from augsearch.space import load_space
from augsearch.study import TrialContext, make_objective
from augsearch.synthesis import Source, SynthesisSettings, Synthesizer, synthesizer_for, synthetic_count
from augsearch.warmstart import warm_start_params, warm_start_problem
from tests.conftest import run_cli, smoke_variant

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setup():
    data = load_dataset(
        "synthetic", synthetic=SyntheticSpec(num_classes=3, image_size=12, train_size=120, test_size=30)
    )
    normalise = Normaliser.fit(data.x_train, resolve("cpu", 0))
    torch.manual_seed(0)
    teacher = freeze(build_model("cnn-tiny", **data.model_shape))
    generator = build_generator(GanRecipe(width=4, z_dim=8), 3, 1, 12).eval()
    return data, normalise, teacher, Source(3, generator=generator, provenance={"sha256": "abc"})


def _draws(source, settings, seed, transform=None, batches=3):
    synth = Synthesizer(source, settings, transform, seed, CPU)
    return [synth.draw(32) for _ in range(batches)]


def test_the_same_seed_gives_the_same_synthetic_batches(setup):
    source = setup[3]
    settings = SynthesisSettings(0.25, augment=True)
    transform = lambda: build_transform(Policy((Stage("HorizontalFlip", {"p": 0.5}),), (), KDSettings(1, 0)))  # noqa: E731
    first, again = _draws(source, settings, 7, transform()), _draws(source, settings, 7, transform())
    other = _draws(source, settings, 8, transform())
    for (images, labels), (images2, labels2) in zip(first, again, strict=True):
        assert images.dtype == torch.uint8 and images.shape == (11, 12, 12, 1)  # 32·0.25/0.75 ≈ 11
        assert torch.equal(images, images2) and torch.equal(labels, labels2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    assert synthetic_count(128, 0.5) == 128 and synthetic_count(128, 0.0) == 0


def test_a_user_source_is_drawn_with_its_labels(setup):
    data = setup[0]
    source = Source(3, images=data.x_train[:5], labels=data.y_train[:5])
    images, labels = _draws(source, SynthesisSettings(0.5), 0, batches=1)[0]
    rows = [next(i for i in range(5) if np.array_equal(data.x_train[i], image)) for image in images.numpy()]
    assert labels.tolist() == data.y_train[rows].tolist()


def test_augmented_synthetic_images_follow_the_runs_strength(setup):
    """Under a strength schedule the synthetic images get the pipeline at the loader's strength, not
    the policy's strength-1 pipeline: strength 0 leaves them as drawn, 1 inverts them here."""
    data = setup[0]
    source = Source(3, images=data.x_train[:5], labels=data.y_train[:5])
    built = []

    def build(strength: float) -> A.Compose:
        built.append(strength)
        return A.Compose([A.InvertImg(p=1.0)] if strength >= 0.5 else [])

    knob = Strength(build, 0.0)
    synth = synthesizer_for(SynthesisSettings(0.5, augment=True), source, lambda: build(0.0), 3, CPU, knob)
    assert all(any(np.array_equal(image, x) for x in data.x_train[:5]) for image in synth.draw(8)[0].numpy())
    knob.set(1.0)
    inverted = 255 - data.x_train[:5]
    assert all(any(np.array_equal(image, x) for x in inverted) for image in synth.draw(8)[0].numpy())
    synth.draw(8)
    assert built == [0.0, 1.0]  # rebuilt once, when the strength changed


def test_ratio_zero_and_no_section_build_no_synthesizer(setup):
    source = setup[3]
    assert synthesizer_for(None, source, lambda: None, 0, CPU) is None
    assert synthesizer_for(SynthesisSettings(0.0), source, lambda: None, 0, CPU) is None
    with pytest.raises(ValueError, match="needs a synthesis source"):
        synthesizer_for(SynthesisSettings(0.2), None, lambda: None, 0, CPU)


def test_without_hard_labels_cross_entropy_reads_only_the_real_images():
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(6, 3), torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    kd = KDSettings(2.0, 0.7)
    full = distillation_loss(student, teacher, labels, kd)
    loss = real_only_cross_entropy(full, student, teacher, labels, kd, None, 1.0, real=4)
    kl = F.kl_div(
        F.log_softmax(student / 2, 1), F.log_softmax(teacher / 2, 1), reduction="batchmean", log_target=True
    )
    expected = 0.7 * kl * 4 + 0.3 * F.cross_entropy(student[:4], labels[:4])
    torch.testing.assert_close(loss["total"], expected)
    dkd = KDSettings(2.0, 1.0, "dkd", 8.0)
    full = distillation_loss(student, teacher, labels, dkd)
    loss = real_only_cross_entropy(full, student, teacher, labels, dkd, None, 1.0, real=4)
    torch.testing.assert_close(loss["total"], full["kd"] + F.cross_entropy(student[:4], labels[:4]))


def _train(setup, settings, seed=0):
    data, normalise, teacher, source = setup
    seed_everything(0)
    student = build_model("cnn-tiny", **data.model_shape)
    batches = make_loader(data.x_train, data.y_train, None, 32, normalise.runtime, 0)
    synth = synthesizer_for(settings, source, lambda: None, seed, CPU)
    extra = {} if synth is None else {"synthesis": synth}
    result = train_student(
        student, batches, TrainSettings(1, 32, 0.05), normalise, teacher, KDSettings(4, 0.9), **extra
    )
    return student, result


def test_training_with_synthesis_appends_the_share_and_is_reproducible(setup):
    plain, plain_result = _train(setup, None)
    off, _ = _train(setup, SynthesisSettings(0.0))
    for a, b in zip(plain.state_dict().values(), off.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    first, result = _train(setup, SynthesisSettings(0.2, hard_labels=False))
    again, _ = _train(setup, SynthesisSettings(0.2, hard_labels=False))
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert result.synthetic_images == 3 * 8 and result.images == plain_result.images + 24  # 3 batches of 32
    assert result.teacher_images == result.images  # the teacher ran on the synthetic images too


def _context(space, setup):
    data, normalise, teacher, source = setup
    space = replace(space, proxy=replace(space.proxy, batches=0))
    index = np.arange(len(data.x_train))
    return TrialContext(space, data, index[:90], index[90:], teacher, normalise, 0, synthesis=source)


def test_a_trial_at_ratio_zero_equals_the_same_trial_without_synthesis(tmp_path, setup):
    plain = load_space("smoke")
    synthetic = load_space(
        str(smoke_variant(tmp_path, lambda raw: raw.update(synthesis={"ratio": {"low": 0.0, "high": 0.5}})))
    )
    params = {"op0": "Rotate", "op0_p": 0.5, "op0_m": 0.3, "op1": "Affine", "op1_p": 0.2, "op1_m": 0.5}
    params |= {"temperature": 2.0, "alpha": 0.5}
    value = make_objective(_context(plain, setup))(optuna.trial.FixedTrial(params))
    off = make_objective(_context(synthetic, setup))(optuna.trial.FixedTrial(params | {"synth_ratio": 0.0}))
    on = make_objective(_context(synthetic, setup))(
        optuna.trial.FixedTrial(
            params | {"synth_ratio": 0.4, "synth_hard_labels": True, "synth_augment": False}
        )
    )
    assert off == value
    assert 0 <= on <= 1


def _space_with(tmp_path, **section):
    return load_space(str(smoke_variant(tmp_path, lambda raw: raw.update(synthesis=section))))


def test_the_space_section_is_sampled_and_warm_starts_turn_it_off(tmp_path):
    flags = {"hard_labels": [True, False], "augment": [True, False]}
    searched = _space_with(tmp_path, ratio={"low": 0.3, "high": 0.5}, **flags)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    policy = sample_policy(trial, searched, 1)
    assert 0.3 <= policy.synthesis.ratio <= 0.5
    assert {"synth_ratio", "synth_hard_labels", "synth_augment"} <= set(trial.params)
    assert "synthesis.ratio to allow 0" in warm_start_problem("standard", searched)
    space = _space_with(tmp_path, ratio={"low": 0.0, "high": 0.5}, **flags)
    params = warm_start_params("standard", space, 1)
    assert params["synth_ratio"] == 0.0 and "synth_augment" not in params  # asked only when ratio > 0
    assert sample_policy(optuna.trial.FixedTrial(params), space, 1).synthesis == SynthesisSettings(0.0)


@pytest.mark.parametrize(
    ("section", "where"),
    [
        ({"ratio": {"low": 0.0, "high": 0.95}}, "synthesis.ratio.high"),
        ({"ratio": 0.2, "hard_labels": ["yes"]}, r"synthesis.hard_labels\[0\]"),
        ({"ratio": 0.2, "colour": True}, "synthesis.colour: unknown key"),
        ({"ratio": 0.2, "generator": "vae"}, "synthesis.generator"),
        ({"ratio": 0.2, "source": "folder:x"}, "synthesis.source"),
        ({"ratio": 0.2, "source": "npz:x.npz", "generator": "dcgan"}, "synthesis.source"),
        ({"ratio": 0.2, "source": "npz:x.npz", "recipe": {"epochs": 1}}, "synthesis.recipe"),
        ({"ratio": 0.2, "recipe": {"epochs": 0}}, "synthesis.recipe.epochs"),
        ({"hard_labels": True}, "synthesis.ratio: missing"),
    ],
)
def test_bad_synthesis_sections_name_their_key(tmp_path, section, where):
    path = smoke_variant(tmp_path, lambda raw: raw.update(synthesis=section))
    with pytest.raises(UserError, match=where):
        load_space(str(path))


def test_a_bad_space_exits_2_with_the_key_path(tmp_path):
    path = smoke_variant(tmp_path, lambda raw: raw.update(synthesis={"ratio": {"low": 0.6, "high": 0.2}}))
    result = run_cli("validate", str(path), cwd=tmp_path)
    assert result.returncode == 2 and "synthesis.ratio: low 0.6 is greater than high 0.2" in result.stderr


def test_the_policy_file_carries_synthesis_and_its_source(tmp_path):
    source = {
        "file": "g.pt",
        "sha256": "ab" * 32,
        "recipe": {"epochs": 4},
        "quality": {"teacher_agreement": 0.8},
    }
    policy = Policy(
        (Stage("HorizontalFlip", {"p": 0.5}),),
        (),
        KDSettings(2.0, 0.5),
        synthesis=SynthesisSettings(0.3, False, True),
    )
    document = write_policy(tmp_path / "p.json", policy, {"seed": 0}, source)
    assert document["schema_version"] == 3 and document["synthesis"]["source"] == source
    loaded = load_policy(tmp_path / "p.json")
    assert loaded.synthesis == SynthesisSettings(0.3, False, True) and loaded.synthesis_source == source
    assert loaded.policy == policy
    rebuilt = A.from_dict(
        json.loads((tmp_path / "p.json").read_text())["albumentations"]
    )  # without augsearch
    image = np.arange(144, dtype=np.uint8).reshape(12, 12, 1)
    loaded.transform.set_random_seed(3)
    rebuilt.set_random_seed(3)
    assert np.array_equal(loaded.transform(image=image)["image"], rebuilt(image=image)["image"])
    plain = write_policy(tmp_path / "q.json", replace(policy, synthesis=None), {"seed": 0})
    assert (
        plain["schema_version"] == 2
        and "synthesis" not in plain
        and load_policy(tmp_path / "q.json").synthesis is None
    )


def test_a_bad_synthesis_in_a_policy_file_exits_2(tmp_path):
    policy = Policy((), (), KDSettings(2.0, 0.5), synthesis=SynthesisSettings(0.3))
    document = write_policy(tmp_path / "p.json", policy, {}, None)
    document["synthesis"]["ratio"] = 2.0
    (tmp_path / "p.json").write_text(json.dumps(document))
    result = run_cli("validate", str(tmp_path / "p.json"), cwd=tmp_path)
    assert result.returncode == 2 and "synthesis.ratio" in result.stderr

"""The class-conditional generator: trained on the training split, cached with its quality figures,
resumed after a kill, refused when corrupt, mismatched, diverged or collapsed (augsearch/generator.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from augsearch import generator as generator_module
from augsearch.data import SyntheticSpec, load_dataset, validation_split
from augsearch.distill import freeze
from augsearch.errors import UserError
from augsearch.fidelity import frechet_distance
from augsearch.gan import ARCHITECTURE, build_generator, train_gan
from augsearch.generator import get_generator, load_generator, load_source
from augsearch.loader import Normaliser
from augsearch.models import build_model
from augsearch.pipeline import GeneratorOptions, generator
from augsearch.runtime import resolve
from augsearch.settings import GanRecipe, Range, SynthesisSpace
from tests.conftest import run_cli, smoke_variant

TINY = GanRecipe(epochs=1, batch_size=32, width=4, z_dim=8, epoch_images=96)
SYNTHESIS = SynthesisSpace(Range(0.0, 0.5), recipe=TINY, min_agreement=0.0, samples=40)


@pytest.fixture(scope="module")
def setup():
    data = load_dataset(
        "synthetic", synthetic=SyntheticSpec(num_classes=3, image_size=12, train_size=150, test_size=30)
    )
    normalise = Normaliser.fit(data.x_train, resolve("cpu", 0))
    torch.manual_seed(0)
    teacher = freeze(build_model("cnn-tiny", **data.model_shape))  # untrained: the floor is 0 here
    train_index, val_index = validation_split(data.y_train, 0.2, 0)
    return data, normalise, teacher, train_index, val_index


def _get(setup, folder, synthesis=SYNTHESIS, seed=0):
    data, normalise, teacher, train_index, val_index = setup
    return get_generator(synthesis, data, train_index, val_index, teacher, normalise, folder, seed)


def _save_generator(path, data, recipe=TINY, **overrides):
    model = build_generator(recipe, data.num_classes, data.channels, data.image_size)
    document = {
        "state_dict": model.state_dict(),
        "architecture": ARCHITECTURE,
        "recipe": {k: getattr(recipe, k) for k in recipe.__dataclass_fields__},
        "dataset": data.name,
        "num_classes": data.num_classes,
        "image_shape": list(data.x_train.shape[1:]),
    }
    torch.save(document | overrides, path)
    return model


def test_trained_once_then_loaded_from_the_cache_with_its_record(tmp_path, setup, monkeypatch):
    first = _get(setup, tmp_path)
    names = sorted(path.suffix for path in tmp_path.iterdir())
    assert names == [".json", ".png", ".pt"]  # no checkpoint or temporary file left behind
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    weights = next(tmp_path.glob("*.pt"))
    assert record["sha256"] == generator_module.sha256_of(weights) == first.provenance["sha256"]
    assert record["recipe"]["epochs"] == 1 and record["seed"] == 0 and record["num_classes"] == 3
    assert record["image_shape"] == [12, 12, 1] and record["train_images"] == len(setup[3])
    assert set(record["quality"]) >= {"teacher_agreement", "frechet_distance", "real_frechet_distance"}
    assert next(tmp_path.glob("*.png")).read_bytes().startswith(b"\x89PNG")

    monkeypatch.setattr(generator_module, "train_gan", lambda *a, **k: pytest.fail("trained again"))
    second = _get(setup, tmp_path)
    assert second.provenance["sha256"] == record["sha256"]
    for a, b in zip(
        first.generator.state_dict().values(), second.generator.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_the_generator_sees_only_the_training_split(tmp_path, setup, monkeypatch):
    data, _, _, train_index, _ = setup
    seen = {}

    def spy(x, y, *args, **kwargs):
        seen["x"] = x
        return train_gan(x, y, *args, **kwargs)

    monkeypatch.setattr(generator_module, "train_gan", spy)
    _get(setup, tmp_path)
    assert np.array_equal(seen["x"], data.x_train[train_index])


def test_a_killed_training_resumes_to_the_same_weights(tmp_path, setup):
    data, _, _, train_index, _ = setup
    x, y, device = data.x_train[train_index], data.y_train[train_index], torch.device("cpu")
    two = replace(TINY, epochs=2)
    whole, _ = train_gan(x, y, 3, two, 0, device, tmp_path / "whole.ckpt")
    train_gan(x, y, 3, TINY, 0, device, tmp_path / "killed.ckpt")  # "killed" after its first epoch
    resumed, _ = train_gan(x, y, 3, two, 0, device, tmp_path / "killed.ckpt")
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_an_unusable_training_checkpoint_is_moved_aside(tmp_path, setup, capsys):
    data, _, _, train_index, _ = setup
    (tmp_path / "g.ckpt").write_bytes(b"torn")
    train_gan(
        data.x_train[train_index],
        data.y_train[train_index],
        3,
        TINY,
        0,
        torch.device("cpu"),
        tmp_path / "g.ckpt",
    )
    assert (tmp_path / "g.ckpt.corrupt").read_bytes() == b"torn" and "unusable" in capsys.readouterr().err


def test_a_corrupt_cached_file_is_refused(tmp_path, setup):
    _get(setup, tmp_path)
    weights = next(tmp_path.glob("*.pt"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match="does not match its record"):
        _get(setup, tmp_path)


def test_corrupt_and_mismatched_checkpoints_are_refused(tmp_path, setup):
    data = setup[0]
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read generator checkpoint"):
        load_generator(garbage, data, torch.device("cpu"))
    for key, value in (("num_classes", 5), ("image_shape", [16, 16, 1]), ("dataset", "fashion-mnist")):
        path = tmp_path / f"{key}.pt"
        _save_generator(path, data, **{key: value})
        with pytest.raises(UserError, match=f"was made for {key}"):
            load_generator(path, data, torch.device("cpu"))
    wrong = tmp_path / "wrong.pt"
    _save_generator(wrong, data, recipe=replace(TINY, width=8))
    state = torch.load(wrong, weights_only=True)
    state["recipe"]["width"] = 4  # weights of width 8, a recipe of width 4
    torch.save(state, wrong)
    with pytest.raises(UserError, match="does not fit its recipe"):
        load_generator(wrong, data, torch.device("cpu"))
    ok = tmp_path / "ok.pt"
    _save_generator(ok, data)
    model, recipe = load_generator(ok, data, torch.device("cpu"))
    assert recipe["width"] == 4 and not model.training


def test_nan_and_collapsed_generators_are_refused(tmp_path, setup):
    data = setup[0]
    nan = tmp_path / "nan.pt"
    model = _save_generator(nan, data)
    state = model.state_dict()
    state["body.3.weight"] = torch.full_like(state["body.3.weight"], float("nan"))
    torch.save(torch.load(nan, weights_only=True) | {"state_dict": state}, nan)
    with pytest.raises(UserError, match="not finite"):
        _get(setup, tmp_path, replace(SYNTHESIS, checkpoint=str(nan)))
    flat = tmp_path / "flat.pt"
    state = {key: torch.zeros_like(value) for key, value in model.state_dict().items()}
    torch.save(torch.load(nan, weights_only=True) | {"state_dict": state}, flat)  # every image the same
    with pytest.raises(UserError, match="collapsed"):
        _get(setup, tmp_path, replace(SYNTHESIS, checkpoint=str(flat)))


def test_agreement_below_the_floor_is_refused_and_nothing_cached(tmp_path, setup):
    with pytest.raises(UserError, match=r"below the floor 1\.0"):
        _get(setup, tmp_path, replace(SYNTHESIS, min_agreement=1.0))
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.ckpt"))


def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    b = rng.normal(size=(4000, 3)) * 2 + 1  # N(1, 4I): d² = 3·1 + 3·(1 + 4 − 2·2) = 6
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_user_source_images_are_checked_and_labelled(tmp_path, setup):
    data, normalise, teacher, _, _ = setup
    good = tmp_path / "good.npz"
    np.savez(good, x=data.x_train[:10, ..., 0])  # (N, H, W): a grey channel added
    source = load_source(f"npz:{good}", data, teacher, normalise)
    assert source.images.shape == (10, 12, 12, 1) and source.provenance["labels"] == "teacher"
    assert source.labels.dtype == np.int64 and set(source.labels) <= {0, 1, 2}
    np.savez(tmp_path / "shape.npz", x=np.zeros((4, 16, 16, 1), np.uint8))
    with pytest.raises(UserError, match="shape"):
        load_source(f"npz:{tmp_path / 'shape.npz'}", data, teacher, normalise)
    np.savez(tmp_path / "classes.npz", x=data.x_train[:4], y=np.array([0, 1, 2, 3]))
    with pytest.raises(UserError, match=r"classes in \[0, 3\)"):
        load_source(f"npz:{tmp_path / 'classes.npz'}", data, teacher, normalise)
    np.savez(tmp_path / "float.npz", x=data.x_train[:4].astype(np.float32))
    with pytest.raises(UserError, match="uint8"):
        load_source(f"npz:{tmp_path / 'float.npz'}", data, teacher, normalise)


def _tiny_space(tmp_path, **synthesis):
    def mutate(raw):
        raw["synthesis"] = {
            "ratio": {"low": 0.0, "high": 0.5},
            "recipe": {"epochs": 1, "width": 4, "z_dim": 8, "epoch_images": 96, "batch_size": 32},
            "min_agreement": 0.0,
            "samples": 40,
            **synthesis,
        }

    return smoke_variant(tmp_path, mutate)


def test_generator_command_trains_once_and_refuses_a_space_without_synthesis(tmp_path, smoke_space):
    space = _tiny_space(tmp_path)
    fp32 = {"AUGSEARCH_TEACHER_BF16": "0"}
    first = run_cli("generator", "--space", str(space), "--studies-dir", "out", cwd=tmp_path, env=fp32)
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads(first.stdout[first.stdout.index("{") :])  # after the line saying what it did
    assert "(trained now)" in first.stdout and record["quality"]["samples"] == 40
    assert (
        record["sha256"]
        == json.loads(next((tmp_path / "out/generators").glob("*.json")).read_text())["sha256"]
    )
    options = GeneratorOptions(space=str(space), studies_dir=tmp_path / "out", device="cpu")
    assert json.loads(generator(options))["sha256"] == record["sha256"]  # the same run's seed: cached
    with pytest.raises(UserError, match="no synthesis section"):
        generator(GeneratorOptions(space=str(smoke_space), studies_dir=tmp_path / "out"))

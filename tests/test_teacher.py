import json

import pytest
import torch

from augsearch.data import SyntheticSpec, load_dataset
from augsearch.errors import UserError
from augsearch.loader import Normaliser
from augsearch.runtime import resolve
from augsearch.space import load_space
from augsearch.teacher import get_teacher


@pytest.fixture
def setup():
    space = load_space("smoke")
    data = load_dataset(
        "synthetic", synthetic=SyntheticSpec(num_classes=3, image_size=12, train_size=120, test_size=60)
    )
    return space, data, Normaliser.fit(data.x_train, resolve("cpu", 0))


def test_teacher_is_trained_once_then_loaded_from_cache(tmp_path, setup):
    space, data, normalise = setup
    first, info = get_teacher(space, data, normalise, tmp_path, seed=0)
    assert info["cached"] is False and 0 <= info["test_accuracy"] <= 1
    meta = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert meta["model"] == space.teacher.model and meta["trained"]["epochs"] == space.teacher.epochs
    second, info2 = get_teacher(space, data, normalise, tmp_path, seed=0)
    assert info2["cached"] is True and info2["test_accuracy"] == info["test_accuracy"]
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert not second.training and not any(p.requires_grad for p in second.parameters())
    _, other_seed = get_teacher(space, data, normalise, tmp_path, seed=1)
    assert other_seed["cached"] is False and len(list(tmp_path.glob("*.pt"))) == 2


def test_user_checkpoint_is_loaded_weights_only(tmp_path, setup):
    space, data, normalise = setup
    _, info = get_teacher(space, data, normalise, tmp_path / "cache", seed=0)
    checkpoint = next((tmp_path / "cache").glob("*.pt"))
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(checkpoint, weights_only=True)["state_dict"], bare)
    _, loaded = get_teacher(space, data, normalise, tmp_path / "unused", seed=0, checkpoint=bare)
    assert loaded["test_accuracy"] == pytest.approx(info["test_accuracy"])
    assert not (tmp_path / "unused").exists()


def test_bad_checkpoints_are_user_errors(tmp_path, setup):
    space, data, normalise = setup
    with pytest.raises(UserError, match="not found"):
        get_teacher(space, data, normalise, tmp_path, seed=0, checkpoint=tmp_path / "missing.pt")
    pickled = tmp_path / "code.pt"
    torch.save({"state_dict": object()}, pickled)  # arbitrary objects are refused by weights_only
    with pytest.raises(UserError, match="cannot read teacher checkpoint"):
        get_teacher(space, data, normalise, tmp_path, seed=0, checkpoint=pickled)
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, wrong)
    with pytest.raises(UserError, match="does not fit"):
        get_teacher(space, data, normalise, tmp_path, seed=0, checkpoint=wrong)

"""`dataset.labelled: N`: the student learns from N labelled images, in trials and retrains alike."""

import numpy as np
import pytest
from conftest import smoke_variant

from augsearch import retrain as retrain_module
from augsearch.baselines import Candidate
from augsearch.data import stratified_draw, validation_split
from augsearch.errors import UserError
from augsearch.retrain import retrain_run, run_key
from augsearch.settings import TrainSettings
from augsearch.space import load_space
from augsearch.workspace import labelled_pool, open_workspace, trial_context


def test_the_draw_is_stratified_by_largest_remainder_and_seeded():
    y = np.array([0] * 6 + [1] * 3 + [2] * 1 + [3] * 5)
    pool = np.arange(10)  # classes 0, 1, 2 in shares 6:3:1; the class-3 images are not in the pool
    drawn = stratified_draw(y, pool, 5, seed=0)
    # exact shares 3, 1.5, 0.5: floors 3, 1, 0; the one left over goes to the first largest remainder
    assert np.bincount(y[drawn], minlength=4).tolist() == [3, 2, 0, 0]
    assert drawn.tolist() == sorted(drawn.tolist()) and set(drawn) <= set(pool)
    assert np.array_equal(drawn, stratified_draw(y, pool, 5, seed=0))
    assert any(not np.array_equal(drawn, stratified_draw(y, pool, 5, seed=s)) for s in range(1, 5))
    assert np.array_equal(stratified_draw(y, pool, 10, seed=0), pool)  # all of it: the pool itself


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    path = smoke_variant(tmp_path_factory.mktemp("labelled"), lambda raw: raw["dataset"].update(labelled=40))
    return open_workspace(load_space(str(path)), "synthetic", None, "cpu", 0)


def test_trials_and_retrains_learn_from_the_same_labelled_images(workspace):
    space, data = workspace.space, workspace.data
    pool = labelled_pool(space, data, 0)
    train_index, val_index = validation_split(data.y_train, space.dataset.validation_fraction, 0)
    assert len(pool) == 40 and set(pool) <= set(train_index)
    assert np.bincount(data.y_train[pool]).tolist() == [10, 10, 10, 10]  # 4 balanced classes
    context = trial_context(workspace, None, None)
    assert np.array_equal(context.train_index, pool) and np.array_equal(context.val_index, val_index)
    x, y = workspace.retrain_images()
    assert np.array_equal(x, data.x_train[pool]) and np.array_equal(y, data.y_train[pool])


def test_a_retrain_trains_on_the_pool_and_says_so(workspace, tmp_path, monkeypatch):
    seen = []
    real = retrain_module.make_loader

    def spy(x, y, *args, **kwargs):
        seen.append(len(x))
        return real(x, y, *args, **kwargs)

    monkeypatch.setattr(retrain_module, "make_loader", spy)
    record = retrain_run(Candidate("none", None, None), workspace, None, 0, 1, tmp_path)
    assert seen == [40] and record["labelled"] == 40
    settings = TrainSettings(epochs=1, batch_size=32, lr=0.1)
    plain = run_key(Candidate("none", None, None), settings, "cnn-tiny", 0)
    assert run_key(Candidate("none", None, None), settings, "cnn-tiny", 0, labelled=40) != plain


@pytest.mark.parametrize("count", [3, 481])
def test_a_count_the_data_cannot_give_is_one_line(tmp_path, count):
    path = smoke_variant(tmp_path, lambda raw: raw["dataset"].update(labelled=count))
    # 4 classes; 600 images, a fifth of them the validation split: 480 to draw from
    with pytest.raises(UserError, match=f"dataset.labelled: {count} images; .* expected 4 to 480"):
        open_workspace(load_space(str(path)), "synthetic", None, "cpu", 0)


def test_a_bad_value_names_its_key(tmp_path):
    path = smoke_variant(tmp_path, lambda raw: raw["dataset"].update(labelled=0))
    with pytest.raises(UserError, match=r"dataset\.labelled"):
        load_space(str(path))

"""Every shipped space validates and runs one tiny trial on synthetic data, in this process.

The trial is the real one (``study.make_objective``: policy sampling, preview-free proxy, loader,
KD training, evaluation, pruning hooks); only the data (synthetic, of the shape the space's dataset
has), the teacher (randomly initialised, not trained) and the budgets are shrunk.
"""

import dataclasses

import optuna
import pytest
from optuna.trial import TrialState

from augsearch.data import SyntheticSpec, load_dataset
from augsearch.gan import build_generator
from augsearch.loader import Normaliser
from augsearch.models import build_model
from augsearch.pipeline import validate_file
from augsearch.policy import trial_policy
from augsearch.runtime import resolve
from augsearch.settings import GanRecipe
from augsearch.space import load_space, space_names
from augsearch.study import make_objective, make_sampler
from augsearch.synthesis import Source
from augsearch.workspace import Workspace, trial_context

# (channels, image side) of each named dataset, so that the space's fixed stages (e.g. a 28x28 crop)
# meet images of the size they were written for.
SHAPES = {"fashion-mnist": (1, 28), "cifar10": (3, 32), "cifar100": (3, 32)}


def _tiny(space):
    """The space with synthetic data of its dataset's shape and budgets of a few batches."""
    channels, side = SHAPES.get(space.dataset.name, (3, 32))
    spec = space.dataset.synthetic or SyntheticSpec(channels=channels, image_size=side)
    spec = dataclasses.replace(spec, num_classes=min(spec.num_classes, 4), train_size=64, test_size=16)
    labelled = None if space.dataset.labelled is None else 24  # few labels: half the 48 training images
    dataset = dataclasses.replace(
        space.dataset, name="synthetic", synthetic=spec, validation_fraction=0.25, labelled=labelled
    )
    trial = dataclasses.replace(space.trial, epochs=1, batch_size=16, subset=16)
    proxy = dataclasses.replace(space.proxy, batches=min(space.proxy.batches, 2))
    return dataclasses.replace(space, dataset=dataset, trial=trial, proxy=proxy)


@pytest.mark.parametrize("name", space_names())
def test_every_shipped_space_validates_and_runs_one_tiny_trial(name):
    assert validate_file(name).startswith(f"ok: search space '{name}'")
    space = _tiny(load_space(name))
    data = load_dataset("synthetic", synthetic=space.dataset.synthetic)
    runtime = resolve("cpu", 0)
    workspace = Workspace(space, data, runtime, Normaliser.fit(data.x_train, runtime), seed=0)
    shape = {"in_channels": data.channels, "num_classes": data.num_classes, "image_size": data.image_size}
    source = None  # a space with synthesis: an untrained tiny generator stands in for the trained one
    if space.synthesis is not None:
        generator = build_generator(
            GanRecipe(width=4, z_dim=8), data.num_classes, data.channels, data.image_size
        )
        source = Source(data.num_classes, generator=generator.eval())
    context = trial_context(workspace, build_model(space.teacher.model, **shape), None, source)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(space, 0))
    # The choices a random first trial might miss: the last listed loss (dkd) and mixing (cutmix), and
    # the fixed stages on.
    params = {"kd_loss": space.kd.losses[-1], "mix_kind": space.mixing.kinds[-1], "fixed_on": True}
    if space.synthesis is not None:  # and synthetic images in the batch
        params["synth_ratio"] = space.synthesis.ratio.high
    study.enqueue_trial(params)
    study.optimize(make_objective(context), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    assert 0.0 <= trial.value <= 1.0
    policy = trial_policy(trial)
    assert policy.kd.loss == space.kd.losses[-1]
    assert policy.mix.kind == space.mixing.kinds[-1] and policy.fixed == space.fixed
    if space.synthesis is not None:
        assert (
            policy.synthesis.ratio == space.synthesis.ratio.high and trial.user_attrs["synthetic_images"] > 0
        )

"""Preview grids: layout, determinism, one artifact per trial, and `augsearch preview`."""

import io

import albumentations as A
import numpy as np
import optuna
import pytest
from conftest import run_cli
from optuna_dashboard._note import get_note_from_system_attrs
from PIL import Image

from augsearch.data import load_dataset, validation_split
from augsearch.errors import UserError
from augsearch.export import ExportOptions, export_study
from augsearch.loader import Normaliser
from augsearch.models import build_model
from augsearch.pipeline import PreviewOptions, write_preview
from augsearch.policy import KDSettings, OpChoice, Policy, build_transform
from augsearch.preview import (
    FILENAME,
    GridSpec,
    artifact_store,
    attach,
    cell_side,
    grid_size,
    pick_images,
    render_grid,
)
from augsearch.runtime import resolve
from augsearch.space import load_space
from augsearch.storage import default_storage
from augsearch.study import TrialContext, make_objective, open_study
from augsearch.workspace import trial_subset

POLICY = Policy(
    fixed=(),
    ops=(OpChoice("Rotate", 0.9, 0.8), OpChoice("CoarseDropout", 0.7, 0.6)),
    kd=KDSettings(2.0, 0.5),
)


def _images(rows: int = 8, side: int = 28, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (rows, side, side, channels), dtype=np.uint8)


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_grid_layout_originals_first_then_draws():
    images = _images()
    png = render_grid(A.Compose([]), images, seed=0)  # identity: every cell shows its original
    grid = _decode(png)
    assert Image.open(io.BytesIO(png)).mode == "L"
    assert grid_size(28, 8) == (410, 466) and grid.shape == (466, 410)  # width = 2 + 7 * 58 + 2
    cell, gap = 56, 2
    for row in range(8):
        top = gap + row * (cell + gap)
        for column in range(7):
            left = gap + column * (cell + gap) + (gap if column else 0)
            upscaled = images[row, :, :, 0].repeat(2, axis=0).repeat(2, axis=1)
            assert (grid[top : top + cell, left : left + cell] == upscaled).all(), (row, column)
    assert (grid[:gap] == 128).all() and (grid[:, :gap] == 128).all()  # grey frame and gaps
    assert (grid[:, gap + cell : gap + cell + 2 * gap] == 128).all()  # wider gap after the originals


def test_grid_sizes_for_colour_small_and_large_images():
    assert [cell_side(side) for side in (16, 28, 32, 56, 100, 224)] == [64, 56, 64, 56, 100, 128]
    png = render_grid(A.Compose([A.ToGray(p=1.0)]), _images(3, 32, 3), seed=0, spec=GridSpec(samples=2))
    picture = Image.open(io.BytesIO(png))
    assert picture.mode == "RGB" and picture.size == grid_size(32, 3, GridSpec(samples=2)) == (202, 200)
    big = render_grid(A.Compose([]), _images(2, 224, 3), seed=0, spec=GridSpec(samples=1))
    assert Image.open(io.BytesIO(big)).size == (2 + 2 * 130 + 2, 2 + 2 * 130)


def test_same_policy_renders_byte_identical_pngs():
    images = _images()
    first = render_grid(build_transform(POLICY), images, seed=3)
    transform = build_transform(POLICY)
    transform(image=images[0])  # a used pipeline is reseeded before drawing
    assert render_grid(transform, images, seed=3) == first
    assert render_grid(build_transform(POLICY), images, seed=4) != first  # the seed matters
    assert b"tIME" not in first and b"tEXt" not in first  # no timestamp or text metadata
    grid = _decode(first)
    assert not (grid[2:58, 60:116] == grid[2:58, 118:174]).all()  # draws differ from each other


def test_images_are_one_per_class_in_turn_and_fixed():
    y = np.repeat(np.arange(4), 10)
    x = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
    index = np.arange(0, 40, 2)
    picked = pick_images(x, y, index, 6, seed=0)
    assert [int(v) // 10 for v in picked.ravel()] == [0, 1, 2, 3, 0, 1]
    assert set(picked.ravel()) <= set(index)
    assert (pick_images(x, y, index, 6, seed=0) == picked).all()
    assert len(pick_images(x, y, np.array([0, 11]), 8, seed=0)) == 2  # fewer images than rows


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """Two real trials of the smoke space (on 100 images), storing previews as the pipeline does."""
    studies = tmp_path_factory.mktemp("studies")
    space = load_space("smoke")
    data = load_dataset("synthetic", synthetic=space.dataset.synthetic)  # what `preview --study` reloads
    train, val = validation_split(data.y_train, space.dataset.validation_fraction, 0)
    runtime = resolve("cpu", loader_workers=0)
    teacher = build_model("cnn-tiny", in_channels=1, num_classes=4, image_size=16).eval()
    normalise, subset = Normaliser.fit(data.x_train, runtime), trial_subset(train, 100, 0)
    artifacts = studies / "tiny" / "artifacts"
    context = TrialContext(space, data, subset, val, teacher, normalise, 0, artifacts_dir=artifacts)
    (studies / "tiny").mkdir()
    study = open_study("tiny", default_storage(studies / "tiny"), space, "synthetic", 0)
    study.optimize(make_objective(context), n_trials=2)
    return studies, study, data, val


def test_every_trial_stores_its_preview_artifact_and_note(tiny_study):
    studies, study, data, val = tiny_study
    store = optuna.artifacts.FileSystemArtifactStore(studies / "tiny" / "artifacts")
    system_attrs = study._storage.get_study_system_attrs(study._study_id)  # where notes live
    for trial in study.get_trials():
        metas = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
        assert [(m.filename, m.mimetype) for m in metas] == [(FILENAME, "image/png")]
        with store.open_reader(metas[0].artifact_id) as reader:
            stored = reader.read()
        policy = Policy.from_dict(trial.user_attrs["policy_json"])
        images = pick_images(data.x_train, data.y_train, val, 8, 0)
        assert stored == render_grid(build_transform(policy), images, 0)
        assert Image.open(io.BytesIO(stored)).size == grid_size(16, 8)
        note = get_note_from_system_attrs(system_attrs, trial._trial_id)["body"]
        assert metas[0].artifact_id in note and f"| {policy.ops[0].name} |" in note
        assert trial.user_attrs["policy"].splitlines()[-1].startswith("KD: hinton, T=")


def test_preview_of_a_trial_and_of_a_file_matches_the_artifact(tiny_study, tmp_path):
    studies, study, *_ = tiny_study
    trial = study.trials[1]
    meta = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)[0]
    stored = (studies / "tiny" / "artifacts" / meta.artifact_id).read_bytes()
    line = write_preview(PreviewOptions(tmp_path / "t.png", study="tiny", trial=1, studies_dir=studies))
    assert (tmp_path / "t.png").read_bytes() == stored
    assert line.startswith(f"wrote {tmp_path / 't.png'} (trial 1 of study 'tiny'")
    with pytest.raises(UserError, match="no trial 7"):
        write_preview(PreviewOptions(tmp_path / "x.png", study="tiny", trial=7, studies_dir=studies))
    with pytest.raises(UserError, match="either a policy file or --study"):
        write_preview(PreviewOptions(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_preview_command_writes_the_grid_and_refuses_bad_input(tiny_study, tmp_path):
    studies, study, *_ = tiny_study
    export_study(ExportOptions("tiny", tmp_path / "best.json", studies))
    shown = run_cli("preview", "best.json", "-o", "grid.png", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    best = optuna.artifacts.get_all_artifact_meta(study.best_trial, storage=study._storage)[0]
    assert (tmp_path / "grid.png").read_bytes() == (
        studies / "tiny" / "artifacts" / best.artifact_id
    ).read_bytes()
    missing = run_cli("preview", "--study", "nope", "--studies-dir", str(studies), cwd=tmp_path)
    assert (
        missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no study database" in missing.stderr
    )


def test_attach_stores_one_png_artifact_per_trial(tiny_study):
    """A preview is one PNG artifact of the trial (what the dashboard shows), written into the store."""
    studies, study, data, val = tiny_study
    store = artifact_store(studies / "tiny" / "artifacts")
    images = pick_images(data.x_train, data.y_train, val, 8, 0)
    trial = study.ask()
    artifact_id = attach(trial, store, render_grid(build_transform(POLICY), images, 0), POLICY)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    (meta,) = optuna.artifacts.get_all_artifact_meta(study.trials[-1], storage=study._storage)
    assert meta.artifact_id == artifact_id and meta.mimetype == "image/png"
    assert (studies / "tiny" / "artifacts" / artifact_id).read_bytes()[:4] == b"\x89PNG"

"""Transfer (augsearch/transfer.py): the searched policy and the same baselines retrained on another
student, or distilled from another teacher checkpoint, kept apart from the study's own runs."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import copy_of_run

from augsearch.cli import main
from augsearch.models import build_model
from augsearch.pipeline import RetrainOptions, retrain


@pytest.fixture(scope="module")
def studies(smoke_run_once, tmp_path_factory):
    return copy_of_run(smoke_run_once[0], tmp_path_factory.mktemp("transfer")) / "out"


def _stamps(folder):
    return {path.name: path.stat().st_mtime_ns for path in folder.glob("*")}


def test_transfer_to_another_student_is_reported_apart(studies):
    study_dir = studies / "smoke"
    before = _stamps(study_dir / "retrain")
    report_before = (study_dir / "results.json").read_text()
    text = retrain(
        RetrainOptions(
            "smoke", studies, epochs=1, seeds=1, baselines=("standard",), student="cnn-small", device="cpu"
        )
    )
    folder = study_dir / "transfer" / "cnn-small"
    runs = [json.loads(path.read_text()) for path in (folder / "retrain").glob("*.json")]
    assert sorted(run["name"].split(" ")[0] for run in runs) == ["searched", "standard"]
    assert {run["student"] for run in runs} == {"cnn-small"}
    # the study's own runs and report are untouched: nothing overwritten, nothing reused
    assert _stamps(study_dir / "retrain") == before
    assert (study_dir / "results.json").read_text() == report_before
    results = json.loads((folder / "results.json").read_text())
    assert results["transfer_student"] == "cnn-small"
    assert [row["name"].split(" ")[0] for row in results["rows"]] == ["searched", "standard"]
    assert "retrained on student `cnn-small`" in (folder / "report.md").read_text()
    assert "searched policy vs best baseline (standard)" in text


def test_transfer_to_another_teacher_checkpoint_gets_its_own_folder(studies):
    teacher = next((studies / "teachers").glob("*.pt"))  # the study's own teacher, as a file
    retrain(
        RetrainOptions(
            "smoke", studies, epochs=1, seeds=1, baselines=(), teacher_checkpoint=teacher, device="cpu"
        )
    )
    (folder,) = [path for path in (studies / "smoke" / "transfer").iterdir() if "-teacher-" in path.name]
    assert folder.name.startswith("cnn-tiny-teacher-")
    runs = [json.loads(path.read_text()) for path in (folder / "retrain").glob("*.json")]
    assert [run["student"] for run in runs] == ["cnn-tiny"] and runs[0]["kind"] == "searched"
    # the run keys carry the checkpoint's sha256: no file name is shared with the study's own runs
    assert not {path.name for path in (folder / "retrain").glob("*.json")} & {
        path.name for path in (studies / "smoke" / "retrain").glob("*.json")
    }


def test_bad_transfer_input_is_one_line_and_exit_2(studies, tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    foreign = tmp_path / "foreign.pt"  # a cnn-tiny state dict, while the smoke teacher is a cnn-small
    torch.save(build_model("cnn-tiny", in_channels=1, num_classes=4, image_size=16).state_dict(), foreign)
    base = ["retrain", "--study", "smoke", "--studies-dir", str(studies), "--seeds", "1", "--device", "cpu"]
    cases = {
        "unknown model 'cnn-huge'": ["--student", "cnn-huge"],
        "cannot read teacher checkpoint": ["--teacher-checkpoint", str(garbage)],
        "does not fit model": ["--teacher-checkpoint", str(foreign)],
        "no such file": ["--teacher-checkpoint", str(tmp_path / "missing.pt")],
        "unknown baseline 'fancy'": ["--baselines", "fancy"],
        "--baselines-kd": ["--baselines-kd", "tuned"],
    }
    for expected, extra in cases.items():
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    assert not (studies / "smoke" / "transfer" / "cnn-huge").exists()

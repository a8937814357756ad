"""End to end through the real CLI, in subprocesses, on the smoke space (synthetic data)."""

import json
import subprocess
import sys

import numpy as np
import optuna
import pytest
from conftest import REPO, copy_of_run, run_cli

from augsearch import load_policy
from augsearch.storage import default_storage


@pytest.fixture(scope="module")
def smoke_run(smoke_run_once, tmp_path_factory):
    """A copy of the suite's smoke run, shared by the tests below (which resume it)."""
    folder, result = smoke_run_once
    return copy_of_run(folder, tmp_path_factory.mktemp("smoke")), result


def _trials(cwd):
    study = optuna.load_study(study_name="smoke", storage=default_storage(cwd / "out" / "smoke"))
    return study.get_trials(deepcopy=False)


def test_run_writes_every_promised_file(smoke_run):
    cwd, result = smoke_run
    study_dir = cwd / "out" / "smoke"
    promised = ("study.db", "best_policy.json", "report.md", "results.json", "results.csv", "trials.csv")
    for name in (*promised, "history.png", "accuracy.png", "samples.png"):
        assert (study_dir / name).is_file(), name
    teachers = list((cwd / "out" / "teachers").glob("*.json"))
    assert len(teachers) == 1 and "test_accuracy" in json.loads(teachers[0].read_text())
    results = json.loads((study_dir / "results.json").read_text())
    names = [row["name"] for row in results["rows"]]
    assert names[0].startswith("searched (trial ") and names[1:] == ["standard", "student-alone"]
    assert all(0.0 <= row["mean"] <= 1.0 and row["n"] == 1 for row in results["rows"])
    assert all(word in result.stdout for word in ("searched (trial", "student-alone", "no KD"))
    # Not a terminal: one plain line per finished epoch where the bars would be, no carriage returns.
    assert "\r" not in result.stderr and "trial 0 epoch 1/1: train loss " in result.stderr
    assert len(_trials(cwd)) == 3 and all(t.state.name in ("COMPLETE", "PRUNED") for t in _trials(cwd))
    assert len(list((study_dir / "retrain").glob("*.json"))) == 3
    assert not list(study_dir.rglob("*.tmp")) and not list(study_dir.rglob("*.ckpt")), "partial file left"


def test_rerun_resumes_and_runs_only_missing_trials(smoke_run):
    cwd, _ = smoke_run
    before = {t.number: t.value for t in _trials(cwd)}
    again = run_cli("run", "--space", "smoke", "--studies-dir", "out", "--trials", "4", cwd=cwd)
    assert again.returncode == 0, again.stderr[-2000:]
    after = {t.number: t.value for t in _trials(cwd)}
    assert len(after) == 4
    assert {k: after[k] for k in before} == before  # finished trials kept untouched
    assert "trial   3 complete" in again.stdout and "trial   0 " not in again.stdout
    same = run_cli(
        "run", "--space", "smoke", "--studies-dir", "out", "--trials", "4", "--no-retrain", cwd=cwd
    )
    assert same.returncode == 0 and len(_trials(cwd)) == 4


def test_export_reloads_in_augsearch_and_in_plain_albumentations(smoke_run, tmp_path):
    cwd, _ = smoke_run
    out = tmp_path / "best_policy.json"
    result = run_cli("export", "--study", "smoke", "--studies-dir", str(cwd / "out"), "-o", str(out), cwd=cwd)
    assert result.returncode == 0, result.stderr
    loaded = load_policy(out)
    assert loaded.provenance["study"] == "smoke" and "versions" in loaded.provenance
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 1), dtype=np.uint8)
    loaded.transform.set_random_seed(11)
    ours = np.stack([loaded.transform(image=image)["image"] for _ in range(5)])
    np.save(tmp_path / "image.npy", image)
    # A fresh interpreter in which importing augsearch is impossible rebuilds the same pipeline.
    script = (
        "import sys, json, os\nsys.modules['augsearch'] = None\n"
        "os.environ['NO_ALBUMENTATIONS_UPDATE'] = '1'\n"
        "import numpy as np, albumentations as A\n"
        f"t = A.from_dict(json.load(open({str(out)!r}))['albumentations'])\n"
        f"image = np.load({str(tmp_path / 'image.npy')!r}); t.set_random_seed(11)\n"
        f"np.save({str(tmp_path / 'plain.npy')!r}, np.stack([t(image=image)['image'] for _ in range(5)]))\n"
    )
    plain = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    np.testing.assert_array_equal(ours, np.load(tmp_path / "plain.npy"))


def _assert_one_line_exit_2(result, fragment):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--space", "no-such-space"], "unknown search space 'no-such-space'"),
        (["run", "--space", "smoke", "--dataset", "mnist-ish"], "unknown dataset 'mnist-ish'"),
        (["run", "--space", "smoke", "--dataset", "npz:/nonexistent"], "/nonexistent"),
        (["run", "--space", "smoke", "--device", "tpu"], "invalid choice"),
        (["run", "--space", "smoke", "--trials", "0"], "--trials must be at least 1"),
        (["export", "--study", "nothing-here"], "no study database"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, fragment):
    result = run_cli(*args, "--studies-dir", str(tmp_path / "studies"), cwd=tmp_path)
    _assert_one_line_exit_2(result, fragment)
    assert not (tmp_path / "studies").exists()
    assert not (tmp_path / "best_policy.json").exists()


def test_help_and_module_entry_point(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0 and "run" in result.stdout and "export" in result.stdout
    spaces = run_cli("spaces", cwd=tmp_path)
    assert spaces.returncode == 0 and "default" in spaces.stdout and "smoke" in spaces.stdout


def test_repo_search_spaces_are_found_from_any_directory(tmp_path):
    assert (REPO / "search_spaces" / "smoke.yaml").is_file()
    result = run_cli("spaces", cwd=tmp_path)
    assert "smoke" in result.stdout

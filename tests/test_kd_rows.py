"""What `augsearch run` and an existing KD-only study do with the KD-fair rows: the rows a space asks
for are retrained by `run`, and a user's own compatible KD-only study stands for the kd-tuned baseline."""

from __future__ import annotations

import json

from conftest import copy_of_run, smoke_variant

from augsearch.pipeline import RetrainOptions, RunOptions, retrain, run


def _runs(folder):
    return [json.loads(path.read_text()) for path in sorted((folder / "retrain").glob("*.json"))]


def test_an_existing_compatible_kd_only_study_is_reused(smoke_run_once, tmp_path):
    """A user's own KD-only study (the smoke space with no op slots, run by `augsearch run`) is found and
    used; none is run for the kd-tuned row."""
    out = copy_of_run(smoke_run_once[0], tmp_path) / "out"

    def kd_only(raw):
        raw["name"], raw["policy"] = "my-kd", {"slots": 0}

    space = smoke_variant(tmp_path, kd_only)
    run(RunOptions(space=str(space), studies_dir=out, device="cpu", retrain=False))  # as `augsearch run` does
    retrain(RetrainOptions("smoke", out, epochs=1, seeds=1, baselines=("kd-tuned",), device="cpu"))
    info = json.loads((out / "smoke" / "kd-tuned.json").read_text())
    assert info["study"] == "my-kd" and info["reused"] and info["ran"] == 0
    assert not (out / "smoke-kd-tuned").exists()


def test_run_retrains_the_kd_fair_rows_the_space_asks_for(smoke_run_once, tmp_path):
    """``baselines: {kd: [searched]}``: `augsearch run` retrains standard+searched-kd instead of standard."""
    out = copy_of_run(smoke_run_once[0], tmp_path) / "out"  # its cached teacher: none is trained

    def fair(raw):
        raw["name"], raw["study"]["trials"], raw["retrain"]["epochs"] = "fair-run", 1, 1
        raw["baselines"] = {"names": ["standard"], "kd": ["searched"]}

    run(RunOptions(space=str(smoke_variant(tmp_path, fair)), studies_dir=out, device="cpu"))
    runs = _runs(out / "fair-run")
    assert sorted(run["name"].split(" ")[0] for run in runs) == ["searched", "standard+searched-kd"]
    searched, fair_row = sorted(runs, key=lambda run: run["kind"] != "searched")
    assert fair_row["kd"] == searched["kd"] and fair_row["kd_source"] == "searched"

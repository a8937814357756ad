"""``augsearch run`` on a tiny space with synthesis, end to end: the generator is trained and cached, the
trials and the retrain draw synthetic images, the policy file carries the generator's provenance and
the report says how much of each batch was synthetic."""

from __future__ import annotations

import json

from PIL import Image

from augsearch.export import load_policy
from tests.conftest import run_cli, smoke_variant


def test_a_tiny_generative_run_end_to_end(tmp_path):
    def mutate(raw):
        raw["synthesis"] = {
            "ratio": 0.3,  # fixed: every trial and the searched retrain draw synthetic images
            "hard_labels": False,
            "recipe": {"epochs": 1, "width": 4, "z_dim": 8, "epoch_images": 96, "batch_size": 32},
            "min_agreement": 0.0,
            "samples": 40,
        }
        raw["study"]["trials"] = 2
        raw["baselines"]["names"] = ["standard"]

    space = smoke_variant(tmp_path, mutate)
    fp32 = {"AUGSEARCH_TEACHER_BF16": "0"}
    result = run_cli("run", "--space", str(space), "--studies-dir", "out", cwd=tmp_path, env=fp32)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(next((tmp_path / "out/generators").glob("*.json")).read_text())
    loaded = load_policy(tmp_path / "out/smoke/best_policy.json")
    assert loaded.synthesis.ratio == 0.3 and loaded.synthesis.hard_labels is False
    assert loaded.synthesis_source["sha256"] == record["sha256"]
    assert loaded.synthesis_source["quality"] == record["quality"]
    runs = [json.loads(path.read_text()) for path in (tmp_path / "out/smoke/retrain").glob("*.json")]
    searched = next(run for run in runs if run["kind"] == "searched")
    standard = next(run for run in runs if run["name"] == "standard")
    assert 0.25 <= searched["synthetic_share"] <= 0.35 and "synthesis" not in standard
    report = (tmp_path / "out/smoke/report.md").read_text()
    assert "synthesis in the trials: 2 of 2 trials drew synthetic images" in report
    assert "of each batch synthetic" in report and "teacher agreement" in report
    grids = [Image.open(path) for path in (tmp_path / "out/smoke/artifacts").rglob("*") if path.is_file()]
    assert grids and all(grid.height == 2 + 16 * (64 + 2) for grid in grids)  # 8 real + 8 synthetic rows

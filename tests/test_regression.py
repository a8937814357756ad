"""Regression guard: the smoke space with a fixed seed gives the same search, export and report as the
recorded run in ``tests/data/smoke_golden.json``.

Written before the package was restructured (issue 12), so that moving code between modules cannot change
what a run does unnoticed. What is compared: the exported policy file (less its timestamp, versions and
paths), every trial's state, value, parameters, intermediate values and policy, and the report's table
(less its timing columns). Timings, host names and absolute paths differ between runs and are left out.

To re-record after an intended change of behaviour: ``AUGSEARCH_RECORD_GOLDEN=1 pytest
tests/test_regression.py``, then review the diff of the golden file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import REPO

GOLDEN = REPO / "tests" / "data" / "smoke_golden.json"
# Trial attributes that measure the machine, not the search.
TIMING_ATTRS = ("images_per_second", "wall_seconds", "proxy_seconds", "worker")


def _rounded(value: Any) -> Any:
    """Floats to 6 significant digits: float32 sums in another order (other thread counts) still agree."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


def _policy_file(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text())
    provenance = document["provenance"]
    for key in ("created", "versions", "storage"):  # time, installed versions, the tmp folder's path
        provenance.pop(key)
    provenance["space"] = Path(provenance["space"]).name  # the checkout's path differs
    return document


def _trials(study_dir: Path) -> list[dict[str, Any]]:
    storage = f"sqlite:///{study_dir / 'study.db'}"
    study = optuna.load_study(study_name=study_dir.name, storage=storage)
    return [
        {
            "number": trial.number,
            "state": trial.state.name,
            "value": trial.value,
            "params": trial.params,
            "intermediate_values": {str(step): value for step, value in trial.intermediate_values.items()},
            "user_attrs": {key: value for key, value in trial.user_attrs.items() if key not in TIMING_ATTRS},
        }
        for trial in study.get_trials(deepcopy=False)
    ]


def _report_table(study_dir: Path) -> dict[str, Any]:
    """The table of report.md up to its timing columns, and results.json's rows without timings."""
    lines = (study_dir / "report.md").read_text().split("```")[1].strip("\n").splitlines()
    cut = lines[0].index("train s")
    table = [line[:cut].rstrip() for line in lines if not line.startswith(("search:",))]
    results = json.loads((study_dir / "results.json").read_text())
    rows = [
        {key: value for key, value in row.items() if key not in ("seconds", "images_per_second")}
        for row in results["rows"]
    ]
    return {"table": table, "rows": rows, "verdict": results["verdict"], "trials": results["trials"]}


def observe(cwd: Path) -> dict[str, Any]:
    """What a finished smoke run in ``cwd`` produced, without what depends on the machine or the clock."""
    study_dir = cwd / "out" / "smoke"
    return _rounded(
        {
            "policy_file": _policy_file(study_dir / "best_policy.json"),
            "trials": _trials(study_dir),
            "report": _report_table(study_dir),
        }
    )


@pytest.fixture(scope="module")
def observed(smoke_run_once) -> dict[str, Any]:
    """The suite's smoke run (``augsearch run --space smoke --seed 0``, tests/conftest.py)."""
    return observe(smoke_run_once[0])


def test_smoke_run_matches_the_recorded_one(observed):
    if os.environ.get("AUGSEARCH_RECORD_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(observed, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for part in ("policy_file", "trials", "report"):
        assert observed[part] == golden[part], part

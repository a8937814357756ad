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
import math
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import REPO

GOLDEN = REPO / "tests" / "data" / "smoke_golden.json"
# Trial attributes that measure the machine, not the search.
TIMING_ATTRS = ("images_per_second", "wall_seconds", "proxy_seconds", "worker")
# Continuous measurements of a trained network, compared to 1%: fp32 kernels for another instruction set
# (AVX2 against AVX-512) sum in another order, and two epochs of training carry that into the 4th digit of
# a calibration error or an NLL (seen: NLL 1.47188 against 1.47237) while accuracies, the values the search
# acts on, stay equal. Everything else must match to 6 significant digits.
LOOSE = ("ece", "nll", "proxy_t_stddev")


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
    cut = lines[0].index("test acc") + len("test acc")  # ECE and NLL: in rows, loosely; timings: not
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
        found = differences(observed[part], golden[part], part)
        assert not found, found[:10]


def differences(observed: Any, golden: Any, where: str) -> list[str]:
    """Where ``observed`` and ``golden`` differ: exactly, except the :data:`LOOSE` keys' floats (to 1%)."""
    if isinstance(observed, dict) and isinstance(golden, dict):
        found = [f"{where}.{key}: only one side has it" for key in set(observed) ^ set(golden)]
        for key in set(observed) & set(golden):
            a, b = observed[key], golden[key]
            if key in LOOSE and isinstance(a, float) and isinstance(b, float):
                found += [] if math.isclose(a, b, rel_tol=0.01) else [f"{where}.{key}: {a} != {b}"]
            else:
                found += differences(a, b, f"{where}.{key}")
        return found
    if isinstance(observed, list) and isinstance(golden, list) and len(observed) == len(golden):
        pairs = enumerate(zip(observed, golden, strict=True))
        return [d for i, (a, b) in pairs for d in differences(a, b, f"{where}[{i}]")]
    return [] if observed == golden else [f"{where}: {observed!r} != {golden!r}"[:500]]


def test_differences_are_loose_only_for_measurements():
    golden = {"rows": [{"ece": 0.1000, "mean": 0.8}], "trials": [{"value": 0.5}]}
    assert not differences({"rows": [{"ece": 0.1005, "mean": 0.8}], "trials": [{"value": 0.5}]}, golden, "r")
    assert differences({"rows": [{"ece": 0.1200, "mean": 0.8}], "trials": [{"value": 0.5}]}, golden, "r")
    assert differences({"rows": [{"ece": 0.1000, "mean": 0.8001}], "trials": [{"value": 0.5}]}, golden, "r")
    assert differences({"rows": [{"ece": 0.1000, "mean": 0.8}], "trials": []}, golden, "r")
    assert differences({"rows": [{"ece": 0.1000}], "trials": [{"value": 0.5}]}, golden, "r")

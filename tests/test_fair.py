"""KD-fair baselines, the kd-tuned baseline and the ablation split (augsearch/fair.py, kdtuned.py,
ablation.py), on hand-made numbers and on a copy of the suite's smoke study."""

from __future__ import annotations

import json
from dataclasses import replace

import optuna
import pytest
from conftest import copy_of_run, smoke_variant

from augsearch.ablation import split
from augsearch.baselines import Candidate
from augsearch.errors import UserError
from augsearch.fair import ROWS, expand, fair_candidates, parse_kinds, parse_rows, twin_candidate
from augsearch.pipeline import RetrainOptions, retrain
from augsearch.policy import KDSettings, OpChoice, Policy, build_transform
from augsearch.report import Row, _versus_kd_tuned, _versus_twins, verdict
from augsearch.schedule import Schedule
from augsearch.space import load_space
from augsearch.synthesis import SynthesisSettings
from augsearch.trials import finished


def _row(name, kind, accuracies, seeds=(0, 1, 2)):
    mean = sum(accuracies) / len(accuracies)
    trial = 5 if kind in ("searched", "ablation") else None
    return Row(
        name, kind, trial, "", len(accuracies), mean, 0.0, 1, 1.0, 1.0, tuple(seeds), tuple(accuracies)
    )


def test_the_split_adds_up_by_hand():
    rows = [
        _row("searched (trial 5)", "searched", [0.905, 0.907, 0.906]),
        _row("none", "baseline", [0.900, 0.903, 0.904]),
        _row("standard", "baseline", [0.887, 0.886, 0.888]),
        _row(
            "none+searched-kd", "baseline", [0.899, 0.901, 0.900]
        ),  # weaker with searched KD than standard's
        _row("standard+searched-kd", "baseline", [0.902, 0.903, 0.901]),
        _row("searched+fixed-kd (trial 5)", "ablation", [0.890, 0.891, 0.889]),
    ]
    found = split(rows)
    assert found.baseline == "standard"  # its +searched-kd row is the strongest (0.902 > 0.900)
    # from KD: 0.902-0.887, 0.903-0.886, 0.901-0.888 = 0.015, 0.017, 0.013 -> mean 0.015, sd 0.002,
    # half-width 4.3027 * 0.002 / sqrt(3) = 0.0049683
    assert found.kd.mean == pytest.approx(0.015)
    assert found.kd.low == pytest.approx(0.015 - 0.0049683, abs=1e-6)
    # from augmentation: 0.905-0.902, 0.907-0.903, 0.906-0.901 = 0.003, 0.004, 0.005 -> mean 0.004, sd 0.001
    assert found.augmentation.mean == pytest.approx(0.004)
    assert found.augmentation.high == pytest.approx(0.004 + 4.3027 * 0.001 / 3**0.5, abs=1e-6)
    assert found.gain.mean == pytest.approx(found.kd.mean + found.augmentation.mean)
    assert found.gain.mean == pytest.approx(0.019)
    # the other order, through searched+fixed-kd: 0.890-0.887 ... = 0.003, 0.005, 0.001 -> 0.003
    assert found.augmentation_at_fixed_kd.mean == pytest.approx(0.003)
    assert found.kd_on_searched.mean == pytest.approx(0.016)
    # a row missing: no split
    assert split([row for row in rows if not row.name.endswith("searched-kd")]) is None


def test_the_split_uses_only_the_seeds_every_row_shares():
    rows = [
        _row("searched (trial 5)", "searched", [0.5, 0.91, 0.92], seeds=(0, 1, 2)),
        _row("standard", "baseline", [0.88, 0.89, 0.7], seeds=(1, 2, 3)),
        _row("standard+searched-kd", "baseline", [0.90, 0.90, 0.90], seeds=(1, 2, 3)),
    ]
    found = split(rows)
    assert found.seeds == (1, 2)
    assert found.gain.mean == pytest.approx(0.03)  # (0.91-0.88 + 0.92-0.89) / 2
    assert found.augmentation_at_fixed_kd is None  # no searched+fixed-kd row


def test_row_names_and_kd_kinds():
    assert parse_rows("all") == ROWS
    assert "standard+searched-kd" in ROWS and "kd-tuned" in ROWS and "searched+fixed-kd" in ROWS
    assert parse_rows("standard, kd-tuned,standard") == ("standard", "kd-tuned")
    assert expand(("standard", "student-alone"), ("fixed", "searched")) == (
        "standard", "standard+searched-kd", "student-alone",
    )  # fmt: skip
    assert expand(("none",), ("searched",)) == ("none+searched-kd",)
    with pytest.raises(UserError, match="unknown baseline 'student-alone\\+searched-kd'"):
        parse_rows("student-alone+searched-kd")
    with pytest.raises(UserError, match="--baselines-kd"):
        parse_kinds("tuned")


def _best(schedule=None, synthesis=None):
    policy = Policy((), (OpChoice("Rotate", 0.5, 0.8),), KDSettings(2.0, 0.6), synthesis=synthesis)
    if schedule is not None:
        policy = replace(policy, schedule=schedule)
    return Candidate(
        "searched (trial 7)", build_transform(policy), policy.kd, 7, policy.mix, policy=policy,
        synthesis=synthesis,
    )  # fmt: skip


def test_twins_take_away_one_part_of_the_best_policy_and_nothing_else():
    linear = Schedule(kind="linear", start=0.2, end=1.0)
    scheduled = _best(schedule=linear, synthesis=SynthesisSettings(0.25, hard_labels=False))
    flat = twin_candidate("searched+constant-strength", scheduled)
    assert flat.name == "searched+constant-strength (trial 7)" and flat.kind == "ablation"
    assert flat.policy.schedule.constant and not scheduled.policy.schedule.constant
    assert flat.policy.ops == scheduled.policy.ops and flat.kd == scheduled.kd
    assert flat.synthesis == scheduled.synthesis and flat.transform is scheduled.transform
    real = twin_candidate("searched-no-synthesis", scheduled)
    assert real.synthesis is None and real.policy.synthesis is None and real.kind == "ablation"
    assert real.policy.schedule == linear and real.kd == scheduled.kd
    # nothing to take away: no row (it would be the searched row again)
    plain = _best(synthesis=SynthesisSettings(0.0))
    assert twin_candidate("searched+constant-strength", plain) is None
    assert twin_candidate("searched-no-synthesis", plain) is None
    assert twin_candidate("searched-no-synthesis", None) is None
    rows = fair_candidates(ROWS, plain, KDSettings(4.0, 0.9), Policy((), (), None), 1)
    assert not any(row.name.startswith(("searched+constant", "searched-no-syn")) for row in rows)
    rows = fair_candidates(ROWS, scheduled, KDSettings(4.0, 0.9), Policy((), (), None), 1)
    assert [row.name for row in rows if row.kind == "ablation"] == [
        "searched+fixed-kd (trial 7)", "searched+constant-strength (trial 7)",
        "searched-no-synthesis (trial 7)",
    ]  # fmt: skip


def test_the_report_pairs_the_searched_policy_with_each_twin():
    rows = [
        _row("searched (trial 5)", "searched", [0.905, 0.907, 0.906]),
        _row("searched+constant-strength (trial 5)", "ablation", [0.900, 0.903, 0.901]),
        _row("standard", "baseline", [0.887, 0.886, 0.888]),
        _row("standard+searched-kd", "baseline", [0.902, 0.903, 0.901]),
        _row("searched+fixed-kd (trial 5)", "ablation", [0.890, 0.891, 0.889]),
    ]
    (line,) = _versus_twins(rows)
    assert line.startswith(
        "searched policy vs the same policy at constant strength (its schedule off): +0.47"
    )
    assert "beats it at 95%" in line  # 0.005, 0.004, 0.005: sd 0.00058, half-width 0.0014
    # the split still reads its third corner from searched+fixed-kd, not the first ablation row
    assert split(rows).augmentation_at_fixed_kd.mean == pytest.approx(0.003)
    assert _versus_twins(rows[2:]) == []


@pytest.fixture(scope="module")
def studies(smoke_run_once, tmp_path_factory):
    """A copy of the smoke study (3 trials) retrained with KD-fair rows, kd-tuned and the ablation row."""
    out = copy_of_run(smoke_run_once[0], tmp_path_factory.mktemp("fair")) / "out"
    names = ("standard", "kd-tuned", "searched+fixed-kd")
    kinds = ("fixed", "searched")
    retrain(
        RetrainOptions("smoke", out, epochs=1, seeds=2, baselines=names, baselines_kd=kinds, device="cpu")
    )
    return out


def _runs(folder):
    return [json.loads(path.read_text()) for path in sorted((folder / "retrain").glob("*.json"))]


def test_kd_fair_rows_use_the_searched_kd_settings(studies):
    study_dir = studies / "smoke"
    searched_kd = json.loads((study_dir / "best_policy.json").read_text())["kd"]
    runs = _runs(study_dir)
    fair = [run for run in runs if run["name"] == "standard+searched-kd"]
    assert len(fair) == 2 and {run["seed"] for run in fair} == {0, 1}
    assert all(run["kd"] == searched_kd and run["kd_source"] == "searched" for run in fair)
    assert searched_kd["temperature"] != 4.0  # else the test could not tell fixed from searched
    fixed = [run for run in runs if run["name"] == "standard"]
    assert all(run["kd"] == {"loss": "hinton", "temperature": 4.0, "alpha": 0.9} for run in fixed)
    assert all(run["kd_source"] == "fixed" for run in fixed)
    # the same augmentation: only the KD settings differ between standard and standard+searched-kd
    assert {json.dumps(run["transform"]) for run in fixed + fair} == {json.dumps(fixed[0]["transform"])}
    ablated = [run for run in runs if run["name"].startswith("searched+fixed-kd")]
    assert len(ablated) == 2 and all(run["kind"] == "ablation" for run in ablated)
    assert ablated[0]["kd"] == fixed[0]["kd"]
    searched = next(run for run in runs if run["kind"] == "searched")
    assert ablated[0]["transform"] == searched["transform"]


def test_the_report_carries_the_rows_the_split_and_the_strongest_rival(studies):
    study_dir = studies / "smoke"
    results = json.loads((study_dir / "results.json").read_text())
    names = [row["name"] for row in results["rows"]]
    assert {"standard+searched-kd", "kd-tuned"} <= set(names)
    assert all(row["ece"] is not None and row["nll"] is not None for row in results["rows"])
    baselines = [row for row in results["rows"] if row["kind"] == "baseline"]
    strongest = max(baselines, key=lambda row: row["mean"])["name"]
    assert f"best baseline ({strongest})" in results["verdict"]
    ablation = results["ablation"]
    assert ablation["baseline"] == "standard" and ablation["seeds"] == [0, 1]
    parts = ablation["from_kd_settings"]["mean"] + ablation["from_augmentation"]["mean"]
    assert parts == pytest.approx(ablation["gain"]["mean"])
    assert ablation["from_kd_settings"]["low"] is not None  # two seeds: an interval
    report = (study_dir / "report.md").read_text()
    assert "from KD settings = standard+searched-kd - standard" in report and "Ablation: gain = " in report
    csv = (study_dir / "results.csv").read_text()
    assert "standard+searched-kd" in csv and "searched+fixed-kd (trial" in csv


def test_kd_tuned_has_the_main_study_trial_budget_and_is_reused(studies):
    study_dir = studies / "smoke"
    main = optuna.load_study(study_name="smoke", storage=f"sqlite:///{study_dir / 'study.db'}")
    info = json.loads((study_dir / "kd-tuned.json").read_text())
    assert info["study"] == "smoke-kd-tuned" and info["trials"] == finished(main) == 3
    assert info["augmentation"] == "standard" and not info["reused"] and info["ran"] == 3
    kd_dir = studies / "smoke-kd-tuned"
    kd_study = optuna.load_study(study_name="smoke-kd-tuned", storage=f"sqlite:///{kd_dir / 'study.db'}")
    assert finished(kd_study) == 3
    assert all(set(trial.params) <= {"temperature", "alpha"} for trial in kd_study.trials)  # only KD searched
    row = [run for run in _runs(study_dir) if run["name"] == "kd-tuned"]
    best = max((t for t in kd_study.trials if t.value is not None), key=lambda t: (t.value, -t.number))
    assert row[0]["kd"]["temperature"] == pytest.approx(best.params["temperature"])
    assert row[0]["kd_source"] == "kd-tuned"

    # asked again: the KD-only study is reused, no trial is run and no run redone
    stamps = {path.name: path.stat().st_mtime_ns for path in (study_dir / "retrain").glob("*.json")}
    retrain(RetrainOptions("smoke", studies, epochs=1, seeds=2, baselines=("kd-tuned",), device="cpu"))
    info = json.loads((study_dir / "kd-tuned.json").read_text())
    assert info["reused"] and info["ran"] == 0
    assert len(kd_study.trials) == 3
    assert {path.name: path.stat().st_mtime_ns for path in (study_dir / "retrain").glob("*.json")} == stamps


def test_the_space_says_which_kd_settings_the_baselines_get(tmp_path):
    def fair(raw):
        raw["baselines"] = {"names": ["standard", "kd-tuned"], "kd": ["fixed", "searched"]}

    space = load_space(str(smoke_variant(tmp_path, fair)))
    assert space.baselines.kd == ("fixed", "searched") and space.baselines.names == ("standard", "kd-tuned")
    assert load_space("smoke").baselines.kd == ("fixed",)  # the default: today's rows only

    def bad(raw):
        raw["baselines"] = {"names": ["standard"], "kd": ["tuned"]}

    with pytest.raises(UserError, match=r"space.yaml: baselines.kd: expected a list of fixed, searched"):
        load_space(str(smoke_variant(tmp_path, bad)))


def test_the_report_sets_the_searched_policy_against_kd_tuned_too():
    # differences 0.02, 0.01, 0.02: mean 0.01667, sd 0.00577, half-width 4.3027 * 0.00577 / sqrt(3) = 0.01434
    rows = [
        _row("searched (trial 5)", "searched", [0.90, 0.91, 0.92]),
        _row("kd-tuned", "baseline", [0.88, 0.90, 0.90]),
        _row("none", "baseline", [0.95, 0.95, 0.95]),
    ]
    (line,) = _versus_kd_tuned(rows)
    assert line.startswith("searched policy vs kd-tuned (KD alone searched, same trials): +1.67 points")
    assert "95% interval [+0.23, +3.10]: the searched policy beats it at 95%" in line
    assert "best baseline (none)" in verdict(rows)  # the verdict itself: against the strongest baseline
    assert _versus_kd_tuned(rows[:2]) == []  # kd-tuned is the strongest: the verdict already says it

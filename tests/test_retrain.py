"""Retrain against baselines, resume after a kill, and the report's files and figures."""

import csv
import json

import optuna
import pytest
import torch
from conftest import copy_of_run, run_cli

from augsearch import retrain as retrain_module
from augsearch.pipeline import RetrainOptions, retrain
from augsearch.report import Row, proxy_fidelity, spearman, summarise, verdict


@pytest.fixture(scope="module")
def searched(smoke_run_once, tmp_path_factory):
    """A copy of the suite's smoke study: searched; its best policy and baselines retrained, seed 0."""
    return copy_of_run(smoke_run_once[0], tmp_path_factory.mktemp("study")) / "out"


def test_retrain_two_seeds_two_baselines_writes_the_report(searched):
    result = run_cli(
        "retrain", "--study", "smoke", "--studies-dir", str(searched), "--seeds", "2",
        "--baselines", "standard,student-alone", cwd=searched,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    study_dir = searched / "smoke"
    for name in ("report.md", "results.csv", "trials.csv", "history.png", "accuracy.png", "samples.png"):
        assert (study_dir / name).is_file(), name
    with open(study_dir / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows][1:] == ["standard", "student-alone"]
    assert rows[0]["name"].startswith("searched (trial ")
    columns = {"name", "kind", "kd", "n", "mean", "std", "epochs", "seconds", "images_per_second", "seeds"}
    assert columns <= set(rows[0])
    assert all(row["n"] == "2" and row["seeds"] == "0 1" for row in rows)
    assert "searched policy vs best baseline" in result.stdout and "search = " in result.stdout
    assert "paired over 2 seeds" in result.stdout and "95% interval [" in result.stdout
    assert all(0.0 <= float(row["ece"]) <= 1.0 and float(row["nll"]) > 0 for row in rows)
    assert all(len(row["accuracies"].split()) == 2 for row in rows)
    header = next(line for line in result.stdout.splitlines() if line.startswith("policy "))
    words = header.split()
    assert words[words.index("acc") + 1 : words.index("acc") + 3] == ["ECE", "NLL"]
    assert header.endswith("teacher passes saved")  # the report's column
    assert "teacher passes saved in the trials: " in result.stdout
    with open(study_dir / "trials.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert len(trials) == 3 and "params_op0" in trials[0] and "user_attrs_policy" in trials[0]
    assert "\n" not in trials[0]["user_attrs_policy"]

    # Baselines share seeds and budgets with the searched policy, as the stored runs record.
    runs = [json.loads(path.read_text()) for path in (study_dir / "retrain").glob("*.json")]
    assert len(runs) == 6
    budget = {
        (r["epochs"], r["batch_size"], r["lr"], r["schedule"], r["optimiser"], r["student"]) for r in runs
    }
    assert len(budget) == 1
    seeds = {}
    for run in runs:
        seeds.setdefault(run["name"], set()).add(run["seed"])
    assert all(found == {0, 1} for found in seeds.values())
    assert [r["kd"] for r in runs if r["name"] == "student-alone"] == [None, None]
    assert all(0.0 <= r["test_ece"] <= 1.0 and r["test_nll"] > 0 for r in runs)
    assert all(r["teacher_passes"] == 0 for r in runs if r["name"] == "student-alone")
    assert all(0 <= r["teacher_passes_saved"] <= r["teacher_passes"] > 0 for r in runs if r["kd"])

    # Asking again redoes nothing: every run is found finished and left as it was.
    stamps = {path.name: path.stat().st_mtime_ns for path in (study_dir / "retrain").glob("*.json")}
    again = run_cli(
        "retrain", "--study", "smoke", "--studies-dir", str(searched), "--seeds", "2",
        "--baselines", "standard,student-alone", cwd=searched,
    )  # fmt: skip
    assert again.returncode == 0
    assert {path.name: path.stat().st_mtime_ns for path in (study_dir / "retrain").glob("*.json")} == stamps


class _Killed(Exception):
    pass


def test_a_killed_retrain_resumes_from_its_checkpoint(searched, monkeypatch):
    """The loader dies at the start of epoch 2; the next call resumes there and ends with every epoch."""
    real = retrain_module.make_loader
    calls = {"iterations": 0}

    class DiesInEpochTwo:
        def __init__(self, loader):
            self.loader = loader

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            calls["iterations"] += 1
            if calls["iterations"] == 2:
                raise _Killed()
            return iter(self.loader)

    monkeypatch.setattr(retrain_module, "make_loader", lambda *a, **k: DiesInEpochTwo(real(*a, **k)))
    options = RetrainOptions("smoke", searched, seeds=1, baselines=("none",), top=1, device="cpu")
    with pytest.raises(_Killed):
        retrain(options)
    checkpoints = list((searched / "smoke" / "retrain").glob("*.ckpt"))
    assert len(checkpoints) == 1
    monkeypatch.setattr(retrain_module, "make_loader", real)
    before = torch.load(checkpoints[0], weights_only=True)["result"]["train_loss"]
    assert len(before) == 1
    retrain(options)
    assert not list((searched / "smoke" / "retrain").glob("*.ckpt"))
    runs = [json.loads(p.read_text()) for p in (searched / "smoke" / "retrain").glob("*.json")]
    none = [run for run in runs if run["name"] == "none"]
    assert len(none) == 1 and none[0]["epochs"] == 2
    assert len(none[0]["train_loss"]) == 2 and none[0]["train_loss"][0] == round(before[0], 5)


def test_spearman_on_hand_made_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x: 1 2 3 4 5, y: 2 1 4 3 5 -> d² = 1+1+1+1+0 = 4 -> 1 - 6*4/(5*24) = 0.8
    assert spearman([0.1, 0.2, 0.3, 0.4, 0.5], [0.82, 0.81, 0.90, 0.85, 0.95]) == pytest.approx(0.8)
    # ties share their mean rank: x ranks 1.5 1.5 3, y ranks 1 2 3 -> Pearson of ranks = 0.866...
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254)


def _row(name, kind, accuracies, seeds=None):
    seeds = tuple(seeds if seeds is not None else range(len(accuracies)))
    mean = sum(accuracies) / len(accuracies)
    std = float(torch.tensor(accuracies, dtype=torch.float64).std()) if len(accuracies) > 1 else 0.0
    trial = 0 if kind == "searched" else None
    return Row(name, kind, trial, "", len(accuracies), mean, std, 1, 1.0, 1.0, seeds, tuple(accuracies))


def test_verdict_pairs_seeds_and_says_it_at_95_percent():
    # per-seed differences 0.020, 0.021, 0.019: mean 0.020, sd 0.001, half-width 4.303 * 0.001 / sqrt(3)
    searched, standard = [0.900, 0.902, 0.898], [0.88, 0.881, 0.879]
    text = verdict([_row("searched", "searched", searched), _row("standard", "baseline", standard)])
    assert (
        "paired over 3 seeds +2.00, 95% interval [+1.75, +2.25]: the searched policy beats it at 95%" in text
    )
    searched = [0.86, 0.861, 0.859]
    text = verdict([_row("searched", "searched", searched), _row("standard", "baseline", standard)])
    assert "the searched policy loses to it at 95%" in text
    # differences +0.001, -0.012, +0.014: the interval holds 0, and the report says how many seeds would do
    searched, standard = [0.881, 0.870, 0.892], [0.88, 0.882, 0.878]
    text = verdict([_row("searched", "searched", searched), _row("standard", "baseline", standard)])
    assert "ties with it (no difference shown at 95%; about 652 paired seeds" in text  # (1.96·13/1)² ≈ 650
    # differences +0.01, 0.00, +0.02: about 7 seeds (tests/test_stats.py works it out by hand)
    searched, standard = [0.89, 0.88, 0.90], [0.88, 0.88, 0.88]
    text = verdict([_row("searched", "searched", searched), _row("standard", "baseline", standard)])
    assert "about 7 paired seeds would show a gap this size" in text
    text = verdict([_row("searched", "searched", [0.90]), _row("standard", "baseline", [0.88])])
    assert "seed noise is unknown" in text


def test_verdict_compares_only_the_seeds_both_sides_ran():
    # seeds 1 and 2 are shared: differences 0.02 and 0.02 (sd 0: an exact gap); seeds 0 and 3 are left out
    rows = [
        _row("searched", "searched", [0.5, 0.90, 0.91], seeds=(0, 1, 2)),
        _row("standard", "baseline", [0.88, 0.89, 0.99], seeds=(1, 2, 3)),
    ]
    assert "paired over 2 seeds +2.00, 95% interval [+2.00, +2.00]" in verdict(rows)


def _run(name, kind, trial, seed, accuracy):
    return {
        "name": name, "kind": kind, "trial": trial, "kd": None, "seed": seed, "test_accuracy": accuracy,
        "epochs": 8, "train_seconds": 1.0, "images_per_second": 1.0,
    }  # fmt: skip


def test_the_best_trial_leads_the_rows_whatever_its_number():
    """After `retrain --top N` the verdict pairs the study's best trial, not the lowest-numbered one."""
    runs = [_run("searched #2 (trial 4)", "searched", 4, seed, 0.80) for seed in (0, 1)]
    runs += [_run("searched (trial 23)", "searched", 23, seed, 0.90 + seed / 1000) for seed in (0, 1)]
    runs += [_run("none", "baseline", None, seed, 0.85) for seed in (0, 1)]
    rows = summarise(runs, {4: 0.851, 23: 0.856})
    assert [row.trial for row in rows] == [23, 4, None]
    assert "searched policy vs best baseline (none): +5.05 points" in verdict(rows)
    assert [row.trial for row in summarise(runs)] == [4, 23, None]  # no study: by trial number


def test_rank_fidelity_compares_every_trial_on_the_same_seeds():
    """`--top 3 --seeds 1` after a 3-seed retrain of the best: seed 0 for all, not the best's mean."""
    study = optuna.create_study(direction="maximize")
    for value in (0.80, 0.85, 0.90):
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
    runs = [_run("a", "searched", 0, 0, 0.70), _run("b", "searched", 1, 0, 0.75)]
    runs += [_run("c", "searched", 2, seed, accuracy) for seed, accuracy in enumerate((0.80, 0.60, 0.60))]
    rows = summarise(runs, {0: 0.80, 1: 0.85, 2: 0.90})
    assert proxy_fidelity(study, rows) == pytest.approx(1.0)  # on seed 0; the means would give -0.5
    assert spearman([0.80, 0.85, 0.90], [0.70, 0.75, 2 / 3]) == pytest.approx(-0.5)

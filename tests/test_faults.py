"""One test per fault: kill -9, SIGTERM, SIGINT, NaN loss, CUDA out of memory, a torn journal, a restart.

Each asserts the ledger: every trial is complete, pruned, failed or waiting (none left RUNNING), and every
trial that had finished before the fault is still there with its value. The kill tests use real
processes and real signals, on a copy of one small journal study whose trials last a few seconds.
"""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import REPO, run_cli, smoke_variant
from optuna.trial import TrialState
from test_workers import assert_clean_ledger

from augsearch import study as study_module
from augsearch.models import build_model
from augsearch.policy import sample_policy
from augsearch.space import load_space
from augsearch.storage import journal_storage, load_stored_study, open_storage, repair_journal
from augsearch.study import make_objective, open_study
from augsearch.trials import optimize
from augsearch.workspace import open_workspace, trial_context

ARGS = ("--space", "space.yaml", "--studies-dir", "out", "--no-retrain")


def _slow(raw: dict) -> None:
    """Trials of 30 epochs (a few seconds), never pruned: long enough to be caught mid-trial.

    (5 epochs last 0.3 s on a quiet machine: the trial seen running could finish before the signal.)
    """
    raw["trial"]["epochs"] = 30
    raw["study"]["pruner"] = "none"


@pytest.fixture(scope="module")
def journal_study(tmp_path_factory) -> Path:
    """A journal study (2 workers) with 2 finished slow trials and its teacher cached."""
    cwd = tmp_path_factory.mktemp("journal")
    smoke_variant(cwd, _slow)
    result = run_cli("run", *ARGS, "--workers", "2", "--trials", "2", cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return cwd


@pytest.fixture
def copy(journal_study, tmp_path) -> Path:
    """A private copy of the journal study (the recorded space file stays where it was)."""
    shutil.copytree(journal_study / "out", tmp_path / "out")
    shutil.copy(journal_study / "space.yaml", tmp_path / "space.yaml")
    return tmp_path


class Process:
    """``python -m augsearch ARGS`` started in the background; its output lines collected as they come."""

    def __init__(self, *args: str, cwd: Path) -> None:
        env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "augsearch", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.popen.stdout), daemon=True).start()

    def worker_pids(self, count: int) -> list[int]:
        wait_for(lambda: sum("started worker" in line for line in self.lines) >= count, self)
        return [int(line.split("pid ")[1].rstrip(")\n")) for line in self.lines if "started worker" in line]

    def finish(self, timeout: float = 120) -> int:
        code = self.popen.wait(timeout)
        time.sleep(0.1)  # the reader thread drains what is left
        return code


def wait_for(condition, process: Process, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.popen.poll() is None, "".join(process.lines)[-3000:]
        assert time.monotonic() < deadline, "".join(process.lines)[-3000:]
        time.sleep(0.2)


def trials_of(cwd: Path) -> list[optuna.trial.FrozenTrial]:
    return load_stored_study("smoke", cwd / "out", None).get_trials(deepcopy=False)


def running_on(cwd: Path, pid: int) -> list[optuna.trial.FrozenTrial]:
    """The process's running trials once all their parameters are sampled (the policy is recorded), so a
    snapshot's parameters are the trial's. A signal during sampling: test_workers' requeue test."""
    return [
        t
        for t in trials_of(cwd)
        if t.state == TrialState.RUNNING
        and t.user_attrs.get("worker", "").endswith(f":{pid}")
        and "policy" in t.user_attrs
    ]


def finished_values(cwd: Path) -> dict[int, float]:
    return {t.number: t.value for t in trials_of(cwd) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}


def test_sigkill_mid_trial_is_swept_and_requeued_by_the_next_run(copy):
    before = finished_values(copy)
    process = Process("run", *ARGS, "--workers", "2", "--trials", "4", cwd=copy)
    victim = process.worker_pids(2)[0]
    wait_for(lambda: running_on(copy, victim), process)
    killed = running_on(copy, victim)[0]
    os.kill(victim, signal.SIGKILL)
    assert process.finish() == 1
    assert "worker 0: killed by SIGKILL; run the same command again" in "".join(process.lines)
    assert trials_of(copy)[killed.number].state == TrialState.RUNNING  # nobody else may sweep it

    again = run_cli("run", *ARGS, "--workers", "2", "--trials", "4", cwd=copy)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "re-queued 1 trial(s) left running" in again.stdout + again.stderr
    study = load_stored_study("smoke", copy / "out", None)
    assert_clean_ledger(study, 4)
    failed = study.trials[killed.number]
    assert failed.state == TrialState.FAIL and "killed" in failed.user_attrs["fail_reason"]
    rerun = [t for t in study.trials if t.user_attrs.get("requeued_from") == killed.number]
    assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE and rerun[0].params == killed.params
    assert {n: v for n, v in finished_values(copy).items() if n in before} == before


def test_sigterm_mid_trial_fails_and_requeues_it_then_exits_143(copy):
    before = finished_values(copy)
    process = Process("worker", "--study", "smoke", "--studies-dir", "out", "--trials", "4", cwd=copy)
    wait_for(lambda: running_on(copy, process.popen.pid), process)
    process.popen.send_signal(signal.SIGTERM)
    assert process.finish() == 143
    study = load_stored_study("smoke", copy / "out", None)
    assert_clean_ledger(study, 2)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == "interrupted by SIGTERM; re-queued"
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == failed[0].params
    assert waiting[0].user_attrs["requeued_from"] == failed[0].number
    assert finished_values(copy) == before


def test_sigint_to_run_is_forwarded_to_its_workers(copy):
    before = finished_values(copy)
    process = Process("run", *ARGS, "--workers", "2", "--trials", "6", cwd=copy)
    pids = process.worker_pids(2)
    wait_for(lambda: all(running_on(copy, pid) for pid in pids), process)
    process.popen.send_signal(signal.SIGINT)  # to the parent only: it passes SIGTERM on
    assert process.finish() == 130
    study = load_stored_study("smoke", copy / "out", None)
    assert_clean_ledger(study, 2)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["fail_reason"] for t in failed] == ["interrupted by SIGTERM; re-queued"] * 2
    requeued = {t.user_attrs["requeued_from"] for t in study.trials if t.state == TrialState.WAITING}
    assert requeued == {t.number for t in failed}
    assert finished_values(copy) == before


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """What a smoke trial needs, in this process (an untrained teacher is enough to fail on)."""
    space = load_space("smoke")
    workspace = open_workspace(space, "synthetic", None, "cpu", 0)
    data = workspace.data
    shape = {"in_channels": data.channels, "num_classes": data.num_classes, "image_size": data.image_size}
    teacher = build_model(space.teacher.model, **shape)
    return trial_context(workspace, teacher.eval(), tmp_path_factory.mktemp("artifacts"))


def test_nan_loss_prunes_the_trial_with_its_reason(context, tmp_path):
    space = dataclasses.replace(context.space, trial=dataclasses.replace(context.space.trial, lr=1e30))
    study = open_study("nan", journal_storage(tmp_path), space, "synthetic", 0)
    optimize(study, make_objective(dataclasses.replace(context, space=space)), 2)
    assert_clean_ledger(study, 2)
    reasons = [t.user_attrs.get("pruned_reason", "") for t in study.trials]
    assert all(t.state == TrialState.PRUNED for t in study.trials)
    assert all("training loss became" in reason and "epoch 1" in reason for reason in reasons), reasons
    assert all(t.value is None for t in study.trials)  # never a ±inf or NaN result


def test_cuda_out_of_memory_fails_the_trial_frees_memory_and_goes_on(context, tmp_path, monkeypatch):
    real, calls, emptied = study_module.train_student, [], []

    def train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(study_module, "train_student", train)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    study = open_study("oom", journal_storage(tmp_path), context.space, "synthetic", 0)
    ran = optimize(study, make_objective(context), 2)
    assert ran == 3 and emptied == [1]
    assert_clean_ledger(study, 2)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].user_attrs["fail_reason"].startswith("CUDA out of memory: CUDA out of memory.")


def test_a_torn_last_journal_line_is_cut_and_earlier_trials_survive(tmp_path):
    path = Path(journal_storage(tmp_path))
    study = optuna.create_study(study_name="torn", storage=open_storage(str(path)), direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    before = {t.number: t.value for t in study.trials}
    intact = path.read_bytes()
    with open(path, "ab") as handle:  # a writer killed half-way through its record
        handle.write(b'{"op_code": 5, "worker_id": "dead", "trial_id": 3, "par')
    study = optuna.load_study(study_name="torn", storage=open_storage(str(path)))  # repairs first
    assert path.read_bytes() == intact
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    reread = optuna.load_study(study_name="torn", storage=open_storage(str(path)))
    assert_clean_ledger(reread, 5)
    assert {t.number: t.value for t in reread.trials[:3]} == before
    path.write_bytes(intact + b'{"not json"}\n')  # a torn record that happens to end in a newline
    assert repair_journal(path) == len(b'{"not json"}\n') and path.read_bytes() == intact
    assert repair_journal(path) == 0


def _proposals(study: optuna.Study, space, trials: int) -> list[tuple]:
    def objective(trial: optuna.Trial) -> float:
        sample_policy(trial, space, 1)
        return 0.5

    optimize(study, objective, trials)
    return [tuple(sorted(t.params.items())) for t in study.trials]


def test_a_restarted_study_proposes_no_parameter_set_twice(tmp_path):
    space = smoke_variant(tmp_path, lambda raw: raw["study"].update(trials=30))  # 10 random start-up trials
    space = load_space(str(space))
    one_run = _proposals(open_study("one", journal_storage(tmp_path), space, "synthetic", 0), space, 10)
    (tmp_path / "b").mkdir()
    first = _proposals(open_study("two", journal_storage(tmp_path / "b"), space, "synthetic", 0), space, 5)
    restarted = open_study("two", journal_storage(tmp_path / "b"), space, "synthetic", 0)  # a new process
    both = _proposals(restarted, space, 10)
    assert both[:5] == first  # finished trials kept
    assert len(set(one_run)) == 10 and len(set(both)) == 10
    assert one_run[:5] == first  # a fresh study with the same seed still proposes the same

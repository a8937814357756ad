"""One owner per study: a second ``run`` is refused while the first lives, its live workers keep their
trials, a worker whose trial is failed under it goes on, a dead owner blocks nothing, SQLite workers are
refused. Real subprocesses, real signals; a journal file and a real PostgreSQL server."""

import os
import signal
import time

import optuna
from conftest import run_cli, smoke_variant
from optuna.trial import TrialState
from test_faults import Process, _slow, wait_for
from test_postgres import database  # noqa: F401  (fixture: a fresh database on the test server)
from test_workers import assert_clean_ledger

from augsearch.storage import fail_left_running, load_stored_study, open_storage


def _study(tmp_path, storage: str | None) -> optuna.Study:
    if storage is None:
        return load_stored_study("smoke", tmp_path / "out", None)
    return optuna.load_study(study_name="smoke", storage=open_storage(storage))


def _running_on(study: optuna.Study, pid: int) -> list[optuna.trial.FrozenTrial]:
    """The process's running trials once their parameters are all sampled (the policy is recorded)."""
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.RUNNING
        and t.user_attrs.get("worker", "").endswith(f":{pid}")
        and "policy" in t.user_attrs
    ]


def _run_args(trials: int) -> tuple[str, ...]:
    """``run``'s arguments in these tests: the changed smoke space, two workers, no retrain."""
    return (
        "--space",
        "space.yaml",
        "--studies-dir",
        "out",
        "--no-retrain",
        "--workers",
        "2",
        "--trials",
        str(trials),
    )


def _slow_warm(raw: dict) -> None:
    """Slow trials (caught mid-trial), the first two of them the warm starts."""
    _slow(raw)
    raw["fixed_searched"] = True
    raw["study"] |= {"warm_starts": ["none", "standard"]}


def _second_run_is_refused(tmp_path, storage: str | None) -> None:
    smoke_variant(tmp_path, _slow_warm)
    args = _run_args(trials=3)
    args += ("--storage", storage) if storage else ()
    first = Process("run", *args, cwd=tmp_path)
    victim = first.worker_pids(2)[0]
    wait_for(lambda: _running_on(_study(tmp_path, storage), victim), first)
    alive = _running_on(_study(tmp_path, storage), victim)[0]

    second = run_cli("run", *args, cwd=tmp_path)
    assert second.returncode == 2, second.stderr[-2000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "study 'smoke'" in lines[0] and "augsearch worker" in lines[0], lines
    # not swept: a sweep would have failed it; on a loaded machine it may have finished meanwhile
    assert _study(tmp_path, storage).trials[alive.number].state in (TrialState.RUNNING, TrialState.COMPLETE)

    assert first.finish(300) == 0, "".join(first.lines)[-3000:]
    study = _study(tmp_path, storage)
    assert_clean_ledger(study, 3)
    assert study.trials[alive.number].state == TrialState.COMPLETE  # the live worker kept its trial
    assert [t.number for t in study.trials if t.state == TrialState.FAIL] == []
    warm = [t.user_attrs["warm_start"] for t in study.trials if "warm_start" in t.user_attrs]
    assert sorted(warm) == ["none", "standard"]  # each warm start enqueued once, run once


def test_a_second_run_of_a_journal_study_is_refused_and_the_live_worker_keeps_its_trial(tmp_path):
    _second_run_is_refused(tmp_path, None)


def test_a_second_run_on_postgres_is_refused_and_the_live_worker_keeps_its_trial(database, tmp_path):  # noqa: F811
    _second_run_is_refused(tmp_path, database)


def test_a_worker_whose_trial_is_failed_under_it_gives_it_up_and_goes_on(tmp_path):
    smoke_variant(tmp_path, _slow)
    args = _run_args(trials=3)
    process = Process("run", *args, cwd=tmp_path)
    victim = process.worker_pids(2)[0]
    wait_for(lambda: _running_on(_study(tmp_path, None), victim), process)
    study = _study(tmp_path, None)
    taken = _running_on(study, victim)[0]
    fail_left_running(study, taken, "failed from outside by the test")
    assert process.finish(300) == 0, "".join(process.lines)[-3000:]  # no worker crashed
    output = "".join(process.lines)
    assert f"trial {taken.number} was finished by another process while it ran; given up" in output
    assert "Traceback" not in output and "UpdateFinishedTrialError" not in output
    study = _study(tmp_path, None)
    assert_clean_ledger(study, 3)
    assert study.trials[taken.number].user_attrs["fail_reason"] == "failed from outside by the test"
    ran_by_victim = [t for t in study.trials if t.user_attrs.get("worker", "").endswith(f":{victim}")]
    assert any(t.state == TrialState.COMPLETE for t in ran_by_victim)  # it went on with another trial


def test_the_lock_of_a_killed_run_and_its_workers_blocks_nothing(tmp_path):
    smoke_variant(tmp_path, _slow)
    args = _run_args(trials=2)
    process = Process("run", *args, cwd=tmp_path)
    pids = process.worker_pids(2)
    wait_for(lambda: _running_on(_study(tmp_path, None), pids[0]), process)
    for pid in (process.popen.pid, *pids):
        os.kill(pid, signal.SIGKILL)
    process.popen.wait(30)
    deadline = time.monotonic() + 30
    while not all(_gone(pid) for pid in pids):  # the workers are grandchildren: wait until they are gone
        assert time.monotonic() < deadline
        time.sleep(0.1)
    again = run_cli("run", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "re-queued" in again.stdout + again.stderr
    assert_clean_ledger(_study(tmp_path, None), 2)


def _gone(pid: int) -> bool:
    """Whether the process has exited (a zombie has: it holds no file or connection any more)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_a_worker_refuses_a_sqlite_study(smoke_run_once):
    cwd, _ = smoke_run_once
    result = run_cli("worker", "--study", "smoke", "--studies-dir", "out", "--trials", "9", cwd=cwd)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "augsearch: error: SQLite is not safe for several workers; a study that workers join needs a journal "
        "file (run --workers K without --storage) or --storage postgresql://..."
    ]

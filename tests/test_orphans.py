"""No trial is left RUNNING for good: a signal during ``ask``, or a worker killed before its first heartbeat
(PostgreSQL, real SIGTERM and kill -9, the short heartbeat settings of the other server tests)."""

import os
import signal
import subprocess
import sys

import optuna
import pytest
from conftest import REPO
from optuna.trial import TrialState
from test_postgres import database  # noqa: F401  (fixture: a fresh database on the test server)

from augsearch.storage import open_storage
from augsearch.trials import Interrupted, run_trials


def test_a_signal_during_ask_puts_the_trial_back_in_the_queue(tmp_path, monkeypatch):
    """SIGTERM lands inside ``study.ask`` after the storage made the trial RUNNING: the trial goes back to
    the queue (WAITING) and the loop raises Interrupted, instead of a trial nobody will ever finish."""
    study = optuna.create_study(study_name="s", storage=open_storage(str(tmp_path / "journal.log")))
    storage = study._storage  # the object study.ask calls
    create = storage.create_new_trial

    def create_then_signal(*args, **kwargs):
        trial_id = create(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered before this function returns to ask
        return trial_id

    monkeypatch.setattr(storage, "create_new_trial", create_then_signal)
    with pytest.raises(Interrupted):
        run_trials(study, lambda trial: 1.0, 1)
    assert [t.state for t in study.get_trials()] == [TrialState.WAITING]


_ASK_AND_HANG = """
import sys, time, warnings
import optuna
from augsearch.storage import open_storage
warnings.simplefilter("ignore")
study = optuna.load_study(study_name="s", storage=open_storage(sys.argv[1]))
trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
print(trial.number, flush=True)
time.sleep(600)
"""


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_rerun(database, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AUGSEARCH_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("AUGSEARCH_GRACE_PERIOD", "3")
    study = optuna.create_study(study_name="s", storage=open_storage(database), direction="maximize")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _ASK_AND_HANG, database], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout.readline().strip() == "0"  # it took trial 0 and recorded no heartbeat
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]

    # A worker that wants one finished trial waits for the orphan, sees it failed and re-queued after the
    # grace period, and runs it (without the fix it waits until its timeout and runs nothing).
    ran = run_trials(
        study, lambda trial: trial.suggest_float("x", 0.0, 1.0), 1, timeout=120, wait_for_others=True
    )
    trials = study.get_trials()
    assert ran == 1
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert (
        trials[0].user_attrs["fail_reason"].startswith("orphaned: its worker died before its first heartbeat")
    )
    assert trials[1].params == trials[0].params

"""Workers on a real PostgreSQL server: concurrent first starts, exact trial counts, kill -9 and heartbeats.

The server is the one ``scripts/setup.sh --test`` starts on 127.0.0.1 when CI=true (or with --postgres).
``AUGSEARCH_TEST_POSTGRES`` names a database on it whose user may create databases; each test works in a
fresh database of its own, dropped afterwards. Without a reachable server the tests skip, except on CI
(CI=true), where they fail: CI must not pass by skipping them.
"""

import os
import signal
import threading
import uuid

import optuna
import pytest
from conftest import run_cli, smoke_variant
from optuna.trial import TrialState
from test_faults import Process, _slow, wait_for
from test_workers import assert_clean_ledger

from augsearch.space import load_space
from augsearch.storage import open_storage
from augsearch.study import open_study

DSN = os.environ.get("AUGSEARCH_TEST_POSTGRES", "postgresql://augsearch:augsearch@127.0.0.1/augsearch_test")


def _connect(dsn: str):
    import psycopg

    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


@pytest.fixture
def database() -> str:
    """The URL of a fresh, empty database on the test server; dropped after the test."""
    try:
        admin = _connect(DSN)
    except Exception as error:  # no driver, no server, wrong password: all mean "not here"
        why = str(error).splitlines()[0] if str(error) else repr(error)
        message = f"PostgreSQL not reachable at {DSN}: {why}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI must run these tests: bash scripts/setup.sh --test starts it)")
        pytest.skip(message)
    name = f"augsearch_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_concurrent_first_starts_create_the_study_once(database):
    """Four processes' worth of storages starting at once on an empty database: no crash, one study."""
    space, barrier, errors = load_space("smoke"), threading.Barrier(4), []

    def start() -> None:
        barrier.wait()
        try:
            open_study("smoke", database, space, "synthetic", 0)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    storage = open_storage(database)
    assert optuna.study.get_all_study_names(storage) == ["smoke"]
    assert storage.engine.pool._pre_ping  # a connection dropped during a long trial is replaced
    assert storage.heartbeat_interval == 60 and storage.grace_period == 180


def test_three_workers_finish_exactly_n_trials(database, tmp_path):
    args = ("--space", "smoke", "--studies-dir", "out", "--storage", database, "--no-retrain")
    result = run_cli("run", *args, "--workers", "3", "--trials", "7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("started worker") == 3
    study = optuna.load_study(study_name="smoke", storage=open_storage(database))
    assert_clean_ledger(study, 7)
    assert sum(t.state == TrialState.FAIL for t in study.trials) == 0
    assert len({t.user_attrs["worker"] for t in study.trials if "worker" in t.user_attrs}) == 3


def test_a_killed_workers_trial_is_failed_after_the_grace_period_and_rerun(database, tmp_path):
    smoke_variant(tmp_path, _slow)
    env = {"AUGSEARCH_HEARTBEAT_INTERVAL": "1", "AUGSEARCH_GRACE_PERIOD": "3"}
    os.environ.update(env)  # for this process's own look at the storage, too
    try:
        args = ("--space", "space.yaml", "--studies-dir", "out", "--storage", database, "--no-retrain")
        process = Process("run", *args, "--workers", "2", "--trials", "3", cwd=tmp_path)
        storage = open_storage(database)

        def running_on(pid: int) -> list:
            """The worker's running trial once all its parameters are sampled (its policy is recorded)."""
            study = optuna.load_study(study_name="smoke", storage=storage)
            return [
                t
                for t in study.get_trials(deepcopy=False)
                if t.state == TrialState.RUNNING
                and t.user_attrs.get("worker", "").endswith(f":{pid}")
                and "policy" in t.user_attrs
            ]

        victim = process.worker_pids(2)[0]
        wait_for(lambda: running_on(victim), process)
        killed = running_on(victim)[0]
        os.kill(victim, signal.SIGKILL)
        assert process.finish() == 0  # the other worker re-ran it: the study has its trials
        assert "worker 0: killed by SIGKILL, but the study has its 3 trials" in "".join(process.lines)
    finally:
        for name in env:
            os.environ.pop(name)
    study = optuna.load_study(study_name="smoke", storage=open_storage(database))
    assert_clean_ledger(study, 3)
    assert study.trials[killed.number].state == TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == killed.params

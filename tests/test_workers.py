"""Several workers on one study: the environment each gets, the journal default, exact trial counts."""

import threading
import time

import optuna
import pytest
import torch
from conftest import run_cli
from optuna.trial import TrialState

from augsearch import trials as trials_module
from augsearch.dashboard import DashboardOptions, make_server
from augsearch.errors import UserError
from augsearch.export import ExportOptions, export_study
from augsearch.pipeline import RunOptions, run
from augsearch.runtime import resolve, visible_gpus, worker_environments
from augsearch.space import load_space
from augsearch.storage import default_storage, journal_storage, load_stored_study, open_storage
from augsearch.study import open_study
from augsearch.trials import Ledger, _give_back, run_trials
from augsearch.workers import WorkerOptions, work


def assert_clean_ledger(study: optuna.Study, finished: int) -> None:
    """Every trial is complete, pruned, failed or waiting; exactly ``finished`` are done; numbers unique."""
    trials = study.get_trials(deepcopy=False)
    ledger = Ledger.of(study)
    assert ledger.running == 0, [t.number for t in trials if t.state == TrialState.RUNNING]
    assert len(trials) == ledger.done + ledger.failed + ledger.waiting
    assert ledger.done == finished
    assert sorted(t.number for t in trials) == list(range(len(trials)))


def test_each_worker_gets_its_share_of_the_cores_and_one_gpu():
    envs = worker_environments(4, {"PATH": "/bin"}, ["0", "1", "2"], cores=8)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["0", "1", "2", "0"]
    assert all(env["OMP_NUM_THREADS"] == env["AUGSEARCH_THREADS"] == "2" for env in envs)
    assert [env["AUGSEARCH_WORKER_INDEX"] for env in envs] == ["0", "1", "2", "3"]
    assert all(env["PATH"] == "/bin" for env in envs)
    one_gpu = worker_environments(3, {}, ["0"], cores=2)  # one card: shared, left as it is
    assert all("CUDA_VISIBLE_DEVICES" not in env and env["AUGSEARCH_THREADS"] == "1" for env in one_gpu)


def test_runtime_takes_the_workers_share(monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setenv("AUGSEARCH_THREADS", "1")
    try:
        runtime = resolve("cpu")
        assert torch.get_num_threads() == 1 and runtime.loader_workers == 0
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert visible_gpus("auto") == ["2", "5"] and visible_gpus("cpu") == []


def test_racing_workers_end_with_exactly_the_target(tmp_path):
    """Four workers (threads, each with its own storage object, as processes would) never overshoot."""
    path = journal_storage(tmp_path)
    optuna.create_study(study_name="race", storage=open_storage(path), direction="maximize")
    ran = []

    def objective(trial: optuna.Trial) -> float:
        time.sleep(0.02)
        return trial.suggest_float("x", 0, 1)

    def worker(seed: int) -> None:
        sampler = optuna.samplers.RandomSampler(seed=seed)
        study = optuna.load_study(study_name="race", storage=open_storage(path), sampler=sampler)
        ran.append(run_trials(study, objective, 12))

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    study = optuna.load_study(study_name="race", storage=open_storage(path))
    assert_clean_ledger(study, 12)
    assert sum(ran) == 12 and Ledger.of(study).failed == 0


def test_several_workers_refuse_sqlite(tmp_path):
    (tmp_path / "smoke").mkdir()
    open_study("smoke", default_storage(tmp_path / "smoke"), load_space("smoke"), "synthetic", 0)
    with pytest.raises(UserError, match=r"is stored in SQLite .* not safe for several workers; resume it"):
        run(RunOptions(space="smoke", studies_dir=tmp_path, workers=2))
    with pytest.raises(UserError, match="SQLite is not safe for several workers"):
        run(RunOptions(space="smoke", studies_dir=tmp_path, workers=2, storage="sqlite:///x.db"))
    with pytest.raises(UserError, match="--workers must be at least 1"):
        run(RunOptions(space="smoke", studies_dir=tmp_path, workers=0))


def test_run_with_workers_then_a_worker_joins(tmp_path):
    """`run --workers 2`: a journal study, exactly N trials; every command finds it; a worker joins."""
    args = ("--space", "smoke", "--studies-dir", "out", "--no-retrain")
    result = run_cli("run", *args, "--workers", "2", "--trials", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "started worker 1" in result.stdout and "worker done: ran" in result.stdout
    folder = tmp_path / "out" / "smoke"
    assert (folder / "journal.log").is_file() and not (folder / "study.db").exists()
    study = load_stored_study("smoke", tmp_path / "out", None)
    assert_clean_ledger(study, 4)
    before = {t.number: t.value for t in study.trials}
    workers = {t.user_attrs["worker"] for t in study.trials if t.state == TrialState.COMPLETE}
    assert len(workers) == 2, workers  # both processes ran trials
    assert study.user_attrs["target_trials"] == 4 and (folder / "best_policy.json").is_file()
    server, url = make_server(DashboardOptions("smoke", tmp_path / "out", port=0))
    server.server_close()
    assert url.endswith("/dashboard/studies/0")

    joined = run_cli("worker", "--study", "smoke", "--studies-dir", "out", "--trials", "5", cwd=tmp_path)
    assert joined.returncode == 0, joined.stderr[-2000:]
    assert "ran 1 trial(s)" in joined.stdout
    again = load_stored_study("smoke", tmp_path / "out", None)
    assert_clean_ledger(again, 5)
    assert {t.number: t.value for t in again.trials[:4]} == before
    document = export_study(ExportOptions("smoke", tmp_path / "p.json", tmp_path / "out"))
    assert document["provenance"]["trial"] == again.best_trial.number
    with pytest.raises(UserError, match="no study database at"):
        work(WorkerOptions(study="nope", studies_dir=tmp_path / "out"))


def test_an_interrupted_trial_is_requeued_with_every_parameter_the_storage_has(tmp_path):
    """A signal inside suggest_* can land after the storage has the value, before the Trial caches it."""
    study = optuna.create_study(storage=open_storage(journal_storage(tmp_path)), direction="maximize")
    trial = study.ask()
    trial.suggest_float("lr", 0.01, 0.1)
    distribution = optuna.distributions.CategoricalDistribution(["Rotate", "MotionBlur"])
    study._storage.set_trial_param(trial._trial_id, "op0", 1, distribution)  # stored, not cached
    assert "op0" not in trial.params
    _give_back(study, trial, "interrupted by SIGTERM; re-queued")
    failed, waiting = study.trials
    assert failed.state == TrialState.FAIL and waiting.state == TrialState.WAITING
    assert (
        waiting.system_attrs["fixed_params"]
        == failed.params
        == {"lr": failed.params["lr"], "op0": "MotionBlur"}
    )


def test_ledger_keeps_the_oldest_running_trials():
    ledger = Ledger(done=3, running=2, waiting=0, failed=0, running_numbers=(4, 5))
    assert ledger.keeps(4, 4) and not ledger.keeps(5, 4)
    assert ledger.keeps(4, 5) and ledger.keeps(5, 5)
    assert not ledger.keeps(4, 3)


def test_on_a_journal_the_older_trial_goes_on_and_the_newer_one_steps_back(tmp_path, monkeypatch):
    """A re-queued trial waits, then a fresh one; this worker takes the older while another worker takes
    the newer at the same moment. With one trial left to run, the older one goes on and the newer one is
    the surplus: the re-queued parameters run first (before, both could step back and the newer run)."""
    storage = open_storage(journal_storage(tmp_path))
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 0.25})
    study.enqueue_trial({"x": 0.75})
    real_ask = trials_module._ask_signals_deferred

    def racing_ask(study):
        trial = real_ask(study)  # the oldest waiting one
        newer = study.get_trials(deepcopy=False)[1]
        if newer.state == TrialState.WAITING:  # another worker takes the newer one right now
            study._storage.set_trial_state_values(newer._trial_id, TrialState.RUNNING)
        return trial

    monkeypatch.setattr(trials_module, "_ask_signals_deferred", racing_ask)
    ran = run_trials(study, lambda trial: trial.suggest_float("x", 0, 1), target=1)
    assert ran == 1
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert study.trials[0].params == {"x": 0.25}

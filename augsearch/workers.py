"""Workers: processes that run the trials of one shared study until it has enough finished ones.

Scaling out is Optuna's own model: any number of processes, on one machine or many, each asking the
shared storage (a PostgreSQL server, or a journal file on one machine) for the next trial. ``augsearch
run --workers K`` prepares everything once (data, teacher, study) and starts K ``augsearch worker``
processes; ``augsearch worker --study NAME --storage URL`` joins a study from any machine.

What "nothing lost" means here, and who sees to it:

- every finished trial is in the storage as soon as it ends (Optuna's ``tell``);
- SIGTERM or SIGINT during a trial: :func:`run_trials` marks it failed, re-queues its parameters, and
  the process exits with 143 or 130;
- CUDA out of memory: the trial fails with the reason in ``fail_reason``, memory is freed, the next runs;
- a process killed outright (kill -9, a lost machine): with a server, Optuna's heartbeats fail the trial
  after the grace period and re-queue it (see :func:`augsearch.study.open_storage`); with a journal file
  or SQLite, the next ``augsearch run`` of the study sweeps it (:func:`augsearch.study.requeue_interrupted`).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from augsearch.errors import UserError
from augsearch.runtime import cpu_share, release_memory, visible_gpus, worker_environments
from augsearch.study import DONE, heartbeats, requeue, requeue_interrupted

POLL_SECONDS = 1.0  # how often a worker with nothing to start looks again (only while others may fail)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. A KeyboardInterrupt, so no ``except Exception`` swallows it; the
    command exits with 128 + the signal's number (130, 143), as shells report a process they stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class WorkersFailed(RuntimeError):
    """Workers died before the study had its trials (the message says which and how)."""


@dataclass(frozen=True)
class Ledger:
    """The study's trials by state; every trial is in exactly one of these."""

    done: int  # complete or pruned
    running: int
    waiting: int
    failed: int

    @classmethod
    def of(cls, study: optuna.Study) -> Ledger:
        states = [trial.state for trial in study.get_trials(deepcopy=False)]
        return cls(
            sum(state in DONE for state in states),
            states.count(TrialState.RUNNING),
            states.count(TrialState.WAITING),
            states.count(TrialState.FAIL),
        )


@contextlib.contextmanager
def _signals_to(handler: Callable | int) -> Iterator[None]:
    """Within: SIGINT and SIGTERM go to ``handler``; the previous handlers come back after. Only the main
    thread can catch signals: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler_before in previous.items():
            signal.signal(number, handler_before)


def _interrupt(signum: int, frame: object) -> None:
    for number in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the clean-up
        signal.signal(number, signal.SIG_IGN)
    raise Interrupted(signum)


def signals_interrupt() -> contextlib.AbstractContextManager:
    """Within: SIGTERM and SIGINT raise :class:`Interrupted` in the main thread, so the running trial's
    clean-up runs."""
    return _signals_to(_interrupt)


def _signals_deferred() -> contextlib.AbstractContextManager:
    """A second Ctrl-C must not cut the clean-up that records the first one."""
    return _signals_to(signal.SIG_IGN)


@contextlib.contextmanager
def _heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every interval while it runs (server storages), as study.optimize does."""
    if not heartbeats(study):
        yield
        return
    storage, stop = study._storage, threading.Event()
    interval = storage.get_heartbeat_interval()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # one missed beat is what the grace period is for
                storage.record_heartbeat(trial._trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():  # "heartbeat ... supposed to be used with Study.optimize": see _heartbeat
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


def _give_back(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Fail an interrupted trial with the reason, and queue its parameters to be run again.

    The parameters are read back from the storage, not from ``trial``: a signal that lands inside a
    ``suggest_*`` call after the storage has the value but before the ``Trial`` object caches it would
    otherwise re-queue the trial without that parameter (seen: the re-queued trial had ``{}`` where the
    failed one had ``op0``)."""
    with _signals_deferred():
        stored = study._storage.get_trial(trial._trial_id)
        if stored.state.is_finished():
            return  # already failed and re-queued by a sweep
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        requeue(study, stored)


def _step_back(study: optuna.Study, trial: optuna.Trial) -> None:
    """Put a trial taken but not started back in the queue (WAITING), as it was: nothing ran."""
    with _signals_deferred():
        study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)


def _run_one(
    study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], float]
) -> FrozenTrial:
    """Run the objective on a RUNNING trial and record how it ended.

    Pruned stays pruned; CUDA out of memory fails the trial (the objective stored the reason) and frees
    memory, and the loop goes on; a non-finite value is never stored as a result (failed, with the
    reason); an interruption gives the trial back (:func:`_give_back`) and propagates; any other error
    is a bug: the trial fails with its reason and the error propagates.
    """
    out_of_memory = False
    with _heartbeat(study, trial):
        try:
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # who ran it
            value = objective(trial)
        except optuna.TrialPruned:
            return study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True
        except Interrupted as stop:
            _give_back(study, trial, f"interrupted by {signal.Signals(stop.signum).name}; re-queued")
            raise
        except KeyboardInterrupt:  # outside the main thread, where no handler turns it into Interrupted
            _give_back(study, trial, "interrupted by SIGINT; re-queued")
            raise
        except Exception as error:
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {str(error)[:300]}")
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
    if out_of_memory:  # outside the except clause: the traceback's frames (and tensors) are gone by now
        release_memory()
        return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        trial.set_user_attr("fail_reason", f"objective returned {value!r}, not a finite number")
        return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    return study.tell(trial, value, skip_if_finished=True)  # a sweep may have failed it meanwhile


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    target: int,
    *,
    timeout: float | None = None,
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | tuple = (),
    wait_for_others: bool = False,
) -> int:
    """Run trials until the study holds ``target`` finished (complete or pruned) ones; returns how many
    this process ran. Any number of processes may run it on one study at once, and together they end
    with exactly ``target`` finished trials.

    Why not ``study.optimize`` with ``MaxTrialsCallback``: that callback stops a worker only after its
    trial, so K workers overshoot by up to K-1. Here a worker first takes a trial (``ask``: the storage
    makes it RUNNING atomically, a queued one first), then counts: if the finished and running trials,
    its own included, exceed ``target``, its trial is surplus and goes back to the queue (WAITING). Of
    any set of racing workers the last to take a trial sees all the others, so the count never ends
    above ``target``; two that see each other may both step back, and they retry after a random pause.
    With heartbeats (``wait_for_others``, a server), a worker with nothing to start waits while other
    trials run, since a dead worker's trial comes back to the queue after the grace period.
    SIGTERM and SIGINT give the running trial back (failed, parameters re-queued) and raise
    :class:`Interrupted`.
    """
    started, ran = time.monotonic(), 0
    with signals_interrupt():
        while timeout is None or time.monotonic() - started < timeout:
            requeue_interrupted(study, owned=False)  # with heartbeats: dead workers' trials come back
            ledger = Ledger.of(study)
            if ledger.done >= target:
                break
            if ledger.done + ledger.running >= target:
                if wait_for_others and heartbeats(study):
                    time.sleep(POLL_SECONDS)
                    continue
                break
            trial = _ask(study)
            try:
                ledger = Ledger.of(study)
            except KeyboardInterrupt:
                _step_back(study, trial)
                raise
            if ledger.done + ledger.running > target:  # surplus: another worker took the last one
                _step_back(study, trial)
                time.sleep(random.uniform(0.05, 0.5))
                continue
            frozen = _run_one(study, trial, objective)
            ran += 1
            for callback in callbacks:
                callback(study, frozen)
    return ran


def worker_token() -> int:
    """This process's worker number: the one ``run --workers`` gave it, else one from host and pid (a
    worker started by hand on some machine), so that no two workers share a sampler seed."""
    given = os.environ.get("AUGSEARCH_WORKER_INDEX", "")
    if given.isdigit():
        return int(given)
    return 1 + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())


@dataclass(frozen=True)
class WorkerOptions:
    """``augsearch worker``'s settings; ``trials=None``: the target the study's ``run`` recorded."""

    study: str
    studies_dir: Path = Path("studies")
    storage: str | None = None
    trials: int | None = None
    timeout: float | None = None
    device: str = "auto"
    data_dir: Path | None = None


def work(options: WorkerOptions) -> int:
    """``augsearch worker``: join an existing study and run its trials until it has enough; returns how
    many this worker ran. Its space, dataset and seed come from the study (as ``retrain`` rebuilds them);
    the teacher from the study's checkpoint, else the cache in ``--studies-dir/teachers`` (trained there
    from the same seed if missing)."""
    from augsearch.pipeline import _workspace_of, trial_context  # pipeline starts workers
    from augsearch.study import load_stored_study, make_objective, open_study, study_storage_url
    from augsearch.teacher import checkpoint_sha256
    from augsearch.workspace import teacher_for

    url = study_storage_url(options.study, options.studies_dir, options.storage)
    stored = load_stored_study(options.study, options.studies_dir, url)
    target = options.trials if options.trials is not None else stored.user_attrs.get("target_trials")
    if target is None:
        raise UserError(f"study '{options.study}' records no target number of trials; pass --trials N")
    if int(target) < 1:
        raise UserError(f"--trials must be at least 1, got {target}")
    workspace = _workspace_of(stored, options.data_dir, options.device)
    index = worker_token()
    recorded = stored.user_attrs.get("teacher_checkpoint")
    checkpoint = Path(recorded) if recorded and Path(recorded).is_file() else None
    sha256 = checkpoint_sha256(workspace.space, checkpoint)  # part of the study's fingerprint
    study = open_study(
        options.study, url, workspace.space, workspace.data.name, workspace.seed, index, sha256
    )
    teacher, _ = teacher_for(workspace, options.studies_dir, checkpoint)
    context = trial_context(workspace, teacher, options.studies_dir / options.study)
    name = os.environ.get("AUGSEARCH_WORKER_INDEX", str(os.getpid()))
    print(f"worker {name}: {workspace.runtime.describe()}; target {target} finished trials", flush=True)
    return run_trials(
        study,
        make_objective(context),
        int(target),
        timeout=options.timeout,
        callbacks=[_say_trial(name)],
        wait_for_others=True,
    )


def _say_trial(name: str) -> Callable[[optuna.Study, FrozenTrial], None]:
    def say(study: optuna.Study, trial: FrozenTrial) -> None:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        why = trial.user_attrs.get("fail_reason") or trial.user_attrs.get("pruned_reason") or ""
        state = trial.state.name.lower()
        print(f"worker {name}: trial {trial.number:>3} {state:<8} val {value} {why}".rstrip(), flush=True)

    return say


@dataclass(frozen=True)
class SpawnOptions:
    """What ``run --workers K`` hands each worker."""

    count: int
    study: str
    studies_dir: Path
    storage: str
    trials: int
    timeout: float | None = None
    device: str = "auto"
    data_dir: Path | None = None


def worker_command(options: SpawnOptions) -> list[str]:
    command = [sys.executable, "-m", "augsearch", "worker", "--study", options.study]
    command += ["--studies-dir", str(options.studies_dir), "--storage", options.storage]
    command += ["--trials", str(options.trials), "--device", options.device]
    if options.timeout is not None:
        command += ["--timeout", str(options.timeout)]
    if options.data_dir is not None:
        command += ["--data-dir", str(options.data_dir)]
    return command


def spawn_workers(options: SpawnOptions, say: Callable[[str], None] = print) -> list[int]:
    """Start ``count`` worker processes on this machine and wait for all; returns their exit codes.

    Each gets its share of the cores and, with several GPUs, its own GPU (runtime.worker_environments).
    SIGINT or SIGTERM to this process is passed on to the workers as SIGTERM (each then gives its
    running trial back), and once they have exited this process raises :class:`Interrupted`.
    """
    environments = worker_environments(
        options.count, dict(os.environ), visible_gpus(options.device), cpu_share()
    )
    received: list[int] = []
    processes: list[subprocess.Popen] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    in_main = threading.current_thread() is threading.main_thread()
    numbers = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, forward) for number in numbers} if in_main else {}
    try:
        for index, env in enumerate(environments):
            processes.append(subprocess.Popen(worker_command(options), env=env))
            say(f"started worker {index} (pid {processes[-1].pid})")
            if received:  # a signal came while starting: the new one must stop too
                forward(received[0], None)
        codes = [process.wait() for process in processes]
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if received:
        raise Interrupted(received[0])
    return codes


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"

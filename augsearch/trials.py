"""The trial loop: take a trial, run the objective, record how it ended; what every worker process runs.

What "nothing lost" means here, and who sees to it:

- every finished trial is in the storage as soon as it ends (Optuna's ``tell``);
- SIGTERM or SIGINT during a trial: :func:`run_trials` marks it failed, re-queues its parameters, and
  the process exits with 143 or 130;
- CUDA out of memory: the trial fails with the reason in ``fail_reason``, memory is freed, the next runs;
- a process killed outright (kill -9, a lost machine): with a server, Optuna's heartbeats fail the trial
  after the grace period and re-queue it (see :func:`augsearch.storage.open_storage`); with a journal
  file or SQLite, the next ``augsearch run`` of the study sweeps it
  (:func:`augsearch.storage.requeue_interrupted`).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from augsearch.attributes import FAIL_REASON, WORKER
from augsearch.notes import give_up
from augsearch.runtime import release_memory
from augsearch.storage import beating, heartbeats, requeue, requeue_interrupted, set_waiting, stored_trial

DONE = (TrialState.COMPLETE, TrialState.PRUNED)

POLL_SECONDS = 1.0  # how often a worker with nothing to start looks again (only while others may fail)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. A KeyboardInterrupt, so no ``except Exception`` swallows it; the
    command exits with 128 + the signal's number (130, 143), as shells report a process they stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class Ledger:
    """The study's trials by state; every trial is in exactly one of these."""

    done: int  # complete or pruned
    running: int
    waiting: int
    failed: int
    running_numbers: tuple[int, ...] = ()

    @classmethod
    def of(cls, study: optuna.Study) -> Ledger:
        trials = study.get_trials(deepcopy=False)
        states = [trial.state for trial in trials]
        return cls(
            sum(state in DONE for state in states),
            states.count(TrialState.RUNNING),
            states.count(TrialState.WAITING),
            states.count(TrialState.FAIL),
            tuple(sorted(trial.number for trial in trials if trial.state == TrialState.RUNNING)),
        )

    def keeps(self, number: int, target: int) -> bool:
        """Whether running trial ``number`` is one of the oldest ``target - done`` running trials, the ones
        that go on when there are too many. Oldest first: a re-queued or warm-start trial (enqueued before
        any fresh one is sampled) runs rather than steps back, and of racing workers that see each other
        exactly the surplus steps back, never all of them."""
        return number in self.running_numbers[: max(0, target - self.done)]


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


def _ask(study: optuna.Study) -> optuna.Trial:
    # "heartbeat ... supposed to be used with Study.optimize": see storage.beating
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


def _ask_signals_deferred(study: optuna.Study) -> optuna.Trial:
    """Take a trial with SIGINT and SIGTERM held until the storage has it and this process knows it.

    A signal raised inside ``study.ask`` after the storage made a trial RUNNING, but before ``ask``
    returned it, would leave that trial RUNNING for good (nobody knows its id to give it back). Held
    here and acted on after: the trial goes back to the queue as it was (nothing ran), then
    :class:`Interrupted` is raised as the signal would have.
    """
    pending: list[int] = []
    with _signals_to(lambda signum, frame: pending.append(signum)):
        trial = _ask(study)
    if pending:
        _step_back(study, trial)
        raise Interrupted(pending[0])
    return trial


def _give_back(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Fail an interrupted trial with the reason, and queue its parameters to be run again.

    The parameters are read back from the storage, not from ``trial``: a signal that lands inside a
    ``suggest_*`` call after the storage has the value but before the ``Trial`` object caches it would
    otherwise re-queue the trial without that parameter (seen: the re-queued trial had ``{}`` where the
    failed one had ``op0``)."""
    with _signals_deferred():
        stored = stored_trial(study, trial)
        if stored.state.is_finished():
            return  # already failed and re-queued by a sweep
        trial.set_user_attr(FAIL_REASON, reason)
        study.tell(trial, state=TrialState.FAIL)
        requeue(study, stored)


def _step_back(study: optuna.Study, trial: optuna.Trial) -> None:
    """Put a trial taken but not started back in the queue (WAITING), as it was: nothing ran."""
    with _signals_deferred():
        set_waiting(study, trial)


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
    with beating(study, trial):
        try:
            trial.set_user_attr(WORKER, f"{socket.gethostname()}:{os.getpid()}")  # who ran it
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
        except optuna.exceptions.UpdateFinishedTrialError:  # failed under this worker: give it up, go on
            give_up(trial)
            return stored_trial(study, trial)
        except Exception as error:
            trial.set_user_attr(FAIL_REASON, f"{type(error).__name__}: {str(error)[:300]}")
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
    if out_of_memory:  # outside the except clause: the traceback's frames (and tensors) are gone by now
        release_memory()
        return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        trial.set_user_attr(FAIL_REASON, f"objective returned {value!r}, not a finite number")
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
    its own included, exceed ``target``, its trial is surplus and goes back to the queue (WAITING), unless
    (on a journal file or SQLite, whose trial numbers follow the one order every worker reads) it is among
    the oldest running ones: then the newer ones step back, so a re-queued trial runs before a fresh one.
    Of any set of racing workers the last to take a trial sees all the others, so the count never ends
    above ``target``; a worker that stepped back retries after a random pause.
    With heartbeats (``wait_for_others``, a server), a worker with nothing to start waits while other
    trials run, since a dead worker's trial comes back to the queue after the grace period.
    SIGTERM and SIGINT give the running trial back (failed, parameters re-queued) and raise
    :class:`Interrupted`.
    """
    started, ran = time.monotonic(), 0
    # A journal file or SQLite serialises its writers, so a trial's number is its place in the one order
    # every worker reads: a worker holding an older trial has been seen by every later one. A server's
    # numbers need not follow commit order, so there the old rule holds alone (any surplus steps back).
    ordered = not heartbeats(study)
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
            trial = _ask_signals_deferred(study)
            try:
                ledger = Ledger.of(study)
            except KeyboardInterrupt:
                _step_back(study, trial)
                raise
            if ledger.done + ledger.running > target and not (ordered and ledger.keeps(trial.number, target)):
                # surplus: another worker took the last one (where numbers follow one order: an older one)
                _step_back(study, trial)
                time.sleep(random.uniform(0.05, 0.5))
                continue
            frozen = _run_one(study, trial, objective)
            ran += 1
            for callback in callbacks:
                callback(study, frozen)
    return ran


def finished(study: optuna.Study) -> int:
    """How many of the study's trials are finished (complete or pruned)."""
    return sum(trial.state in DONE for trial in study.get_trials(deepcopy=False))


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    trials: int,
    timeout: float | None = None,
    callbacks: list | None = None,
) -> int:
    """Run the trials still missing to reach ``trials`` finished ones in this process; returns how many
    ran now. The same loop every worker runs (:func:`run_trials`)."""
    return run_trials(study, objective, trials, timeout=timeout, callbacks=callbacks or [])

"""Optuna storages: where a study lives, how it is opened, and the few writes that need the storage itself.

SQLite for one process (the default), a journal file for several workers on one machine, a database
server (PostgreSQL) for several machines. Opening settles the details each needs: a lock timeout for
SQLite, a repaired tail for a journal, pooled connections that are checked and heartbeats for a server.

This is the only module that touches Optuna's private API (``study._storage``, ``trial._trial_id``);
each use says why no public call does the job.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from augsearch.attributes import FAIL_REASON, REQUEUED_FROM, WARM_START
from augsearch.errors import UserError
from augsearch.journal import drop_damaged_records, say_dropped_records
from augsearch.notes import say_heartbeat_failed
from augsearch.redaction import redact, redact_text


def default_storage(study_dir: Path) -> str:
    """One embedded SQLite file per study, which ``optuna-dashboard sqlite:///...`` opens as is."""
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def journal_storage(study_dir: Path) -> str:
    """The study's journal file: the local storage for several worker processes (SQLite is not safe there).

    A storage "URL" without ``://`` is a journal file path; ``optuna-dashboard PATH`` opens it as is.
    """
    return str((study_dir / "journal.log").resolve())


def local_storage(study_dir: Path, workers: int) -> str:
    """The storage ``run`` uses without ``--storage``: the study's existing one, else SQLite for one worker
    and a journal file for several. A SQLite study is not moved to a journal behind the user's back."""
    journal, database = study_dir / "journal.log", study_dir / "study.db"
    if journal.is_file():
        return journal_storage(study_dir)
    if database.is_file() and workers > 1:
        raise UserError(
            f"study '{study_dir.name}' is stored in SQLite ({database}), which is not safe for several "
            f"workers; resume it with --workers 1, or pass --study NEW_NAME or --storage postgresql://..."
        )
    return default_storage(study_dir) if workers == 1 else journal_storage(study_dir)


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds for server storages; the environment may shorten them.

    A live worker records a heartbeat every interval; a RUNNING trial whose last one is older than the grace
    period belongs to a dead worker (kill -9, lost machine). The grace is three intervals, so a busy database
    or a long pause of one process never fails a live trial. ``AUGSEARCH_HEARTBEAT_INTERVAL`` and
    ``AUGSEARCH_GRACE_PERIOD`` override them (the tests use 1 s and 3 s).
    """
    values = []
    for name, default in (("AUGSEARCH_HEARTBEAT_INTERVAL", 60), ("AUGSEARCH_GRACE_PERIOD", None)):
        raw = os.environ.get(name)
        if raw is None:
            values.append(default if default is not None else 3 * values[0])
            continue
        if not raw.isdigit() or int(raw) < 1:
            raise UserError(f"{name} must be a whole number of seconds >= 1, got {raw!r}")
        values.append(int(raw))
    return values[0], values[1]


def server_url(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy; with only psycopg 3 installed, ask for that one."""
    scheme, rest = url.split("://", 1)
    plain = scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg2") is None
    if plain and importlib.util.find_spec("psycopg") is not None:
        return f"postgresql+psycopg://{rest}"
    return url


def _retry_callback() -> dict[str, Any]:
    """Re-queue a dead worker's trial with its parameters, at most 3 times (a trial that kills its
    worker every time must not loop forever). Optuna 4.9 renamed the callback and its argument."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        if retry is not None:
            return {"heartbeat_stale_trial_callback": retry(max_retry=3)}
        return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage behind ``url``: an RDB URL, or a journal file path (no ``://``).

    SQLite gets a generous lock timeout so a dashboard reading it never fails a write. A server keeps its
    pooled connections checked (``pool_pre_ping``: a connection the server dropped during a long trial is
    replaced, not failed) and runs Optuna's heartbeats, so a dead worker's trial is failed after the grace
    period and re-queued with its parameters (``RetryHeartbeatStaleTrialCallback``, at most 3 times).
    Several processes creating the tables of an empty database at once can collide; that is retried.
    """
    if "://" not in url:
        return open_journal(Path(url))
    if url.startswith("sqlite"):
        options: dict[str, Any] = {"engine_kwargs": {"connect_args": {"timeout": 60}}}
    else:
        interval, grace = heartbeat_settings()
        options = {"engine_kwargs": {"pool_pre_ping": True}, "heartbeat_interval": interval}
        options |= {"grace_period": grace, **_retry_callback()}
        url = server_url(url)
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **options)
        except Exception as error:  # bad URL, unreachable server, missing driver: all the user's to fix
            racing = "already exists" in str(error) or "duplicate key" in str(error)
            if racing and attempt < 3:  # another process is creating the same tables right now
                time.sleep(0.5 * (attempt + 1))
                continue
            why = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(redact_text(f"cannot open storage {redact(url)}: {why}", url)) from None
    raise AssertionError("unreachable")


def repair_journal(path: Path) -> int:
    """Cut a torn last record off a journal file; returns how many bytes were cut (0: none was torn).

    A writer killed in the middle of an append leaves a last line without its newline (or, rarely, one
    that is not JSON). Optuna's reader skips such a last line, but the next append would glue a new
    record onto it: that line and every record after it would then be unreadable. Cutting the torn tail
    before anyone appends keeps every earlier record, so every trial finished before the crash. It runs
    under the journal's own lock, so a live writer's half-written line is never mistaken for a torn one.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    lock = JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        with open(path, "rb+") as handle:
            data = handle.read()
            keep = data.rfind(b"\n") + 1  # 0 when there is no complete line at all
            start = data.rfind(b"\n", 0, max(keep - 1, 0)) + 1
            if keep and not _is_json(data[start:keep]):
                keep = start
            if keep < len(data):
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())
    finally:
        lock.release()
    return len(data) - keep


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def open_journal(path: Path) -> optuna.storages.BaseStorage:
    """A journal file storage, repaired first. ``JournalFileOpenLock`` (O_EXCL lock file), Optuna's advice
    for local disks and NFSv3 or later; it excludes the default symlink lock too (same lock file name), so
    a plain ``optuna-dashboard journal.log`` beside a search is safe."""
    if not path.parent.is_dir():
        raise UserError(f"cannot open journal {path}: folder {path.parent} does not exist")
    if cut := repair_journal(path):
        print(f"note: {path}: cut a torn last record ({cut} bytes) left by a killed writer", file=sys.stderr)
    say_dropped_records(path, *drop_damaged_records(path))  # damage mid-file (augsearch/journal.py)
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return JournalStorage(backend)


def study_storage_url(name: str, studies_dir: Path, storage: str | None) -> str:
    """The storage URL of an existing study: ``storage``, else its SQLite file or its journal file.

    Opening a missing SQLite file would create an empty database where the user mistyped a name.
    """
    if storage is not None:
        return storage
    folder = Path(studies_dir) / name
    database = folder / "study.db"
    if database.is_file():
        return default_storage(folder)
    if (folder / "journal.log").is_file():
        return journal_storage(folder)
    raise UserError(f"no study database at {database}; run `augsearch run` first or pass --storage")


def load_stored_study(name: str, studies_dir: Path, storage: str | None) -> optuna.Study:
    """An existing study, for commands that only read it; a one-line error when there is none."""
    storage = study_storage_url(name, studies_dir, storage)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise UserError(f"no study named '{name}' in {redact(storage)}") from None


def heartbeats(study: optuna.Study) -> bool:
    """Whether the study's storage runs Optuna's heartbeats (server RDB storages, see open_storage)."""
    return getattr(_storage(study), "get_heartbeat_interval", lambda: None)() is not None


def requeue_interrupted(study: optuna.Study, owned: bool = True) -> int:
    """Trials a killed process left RUNNING: mark them failed, enqueue their parameters; returns how many.

    With heartbeats (a server), only the trials whose heartbeat is older than the grace period are
    failed, by Optuna, whose retry callback re-queues them: safe while other workers run. Without
    (SQLite, a journal file), every RUNNING trial is taken for dead, so only a process that owns the
    storage (``owned``: ``run`` before it starts its workers) may sweep.
    """
    if heartbeats(study):
        before = sum(t.state == TrialState.FAIL for t in study.get_trials(deepcopy=False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        failed = sum(t.state == TrialState.FAIL for t in study.get_trials(deepcopy=False)) - before
        return failed + fail_unbeaten_trials(study)
    if not owned:
        return 0
    stale = [trial for trial in study.get_trials(deepcopy=False) if trial.state == TrialState.RUNNING]
    for trial in stale:
        reason = "interrupted: left running by a process that was killed; re-queued"
        try:
            fail_left_running(study, trial, reason)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished after all
        requeue(study, trial)
    return len(stale)


def fail_unbeaten_trials(study: optuna.Study) -> int:
    """Fail and re-queue RUNNING trials that never recorded a heartbeat and started longer than the grace
    period ago; returns how many. Optuna's ``fail_stale_trials`` looks only at trials with a heartbeat, so
    a worker killed between taking a trial and its first heartbeat would leave it RUNNING for good, and
    the other workers waiting for it forever. ``datetime_start`` is the taking worker's local clock (Optuna's
    ``datetime.now()``): the machines' clocks and time zones must agree to well within the grace period.
    """
    storage = getattr(_storage(study), "_backend", _storage(study))  # Optuna caches an RDBStorage
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is None:
        return 0
    grace = timedelta(seconds=getattr(storage, "grace_period", None) or 2 * interval)
    now = datetime.now()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    old = [t for t in running if t.datetime_start is not None and now - t.datetime_start > grace]
    if not old:
        return 0
    beaten = _trials_with_heartbeat(storage, [_trial_id(t) for t in old])
    count = 0
    for trial in old:
        if _trial_id(trial) in beaten:
            continue  # Optuna's own stale check looks after it
        try:
            fail_left_running(study, trial, "orphaned: its worker died before its first heartbeat; re-queued")
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished, or another worker failed it first (the row lock lets one through)
        requeue(study, trial)
        count += 1
    return count


def _trials_with_heartbeat(storage: optuna.storages.BaseStorage, ids: list[int]) -> set[int]:
    """Which of the trials have a heartbeat row: Optuna has no public call that says so, only its table
    ``trial_heartbeats`` (one row per trial, written by ``record_heartbeat``)."""
    import sqlalchemy

    query = sqlalchemy.text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids")
    query = query.bindparams(sqlalchemy.bindparam("ids", expanding=True))
    with storage.engine.connect() as connection:
        return {row[0] for row in connection.execute(query, {"ids": ids})}


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial | optuna.Trial) -> None:
    """Enqueue an interrupted trial's parameters again, keeping what it was enqueued as.

    A warm start stays one (so it is still never pruned), like Optuna's own RetryFailedTrialCallback,
    which copies the user attributes of the trials it re-queues.
    """
    attrs = {REQUEUED_FROM: trial.number}
    if WARM_START in trial.user_attrs:
        attrs[WARM_START] = trial.user_attrs[WARM_START]
    study.enqueue_trial(trial.params, user_attrs=attrs)


# Optuna's private API, in this module only. A trial in the middle of ``objective`` has no public way to
# be put back in the queue, be read back as the storage holds it, or have a heartbeat recorded: Optuna
# does these inside ``study.optimize``, whose loop augsearch replaces (augsearch/trials.py says why).


def _storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The study's storage object: ``optuna.Study`` exposes it only as the private ``_storage``."""
    return study._storage


def _trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (not its number): the private ``_trial_id`` of both trial classes."""
    return trial._trial_id


def stored_trial(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """The trial as the storage holds it now, not as the ``Trial`` object cached it (which may lag)."""
    return _storage(study).get_trial(_trial_id(trial))


def set_waiting(study: optuna.Study, trial: optuna.Trial) -> None:
    """Put a RUNNING trial back in the queue: ``study.tell`` only finishes trials."""
    _storage(study).set_trial_state_values(_trial_id(trial), TrialState.WAITING)


def fail_left_running(study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
    """Fail a RUNNING trial of another (dead) process: ``study.tell`` takes only this process's trials."""
    _storage(study).set_trial_user_attr(_trial_id(trial), FAIL_REASON, reason)
    _storage(study).set_trial_state_values(_trial_id(trial), TrialState.FAIL)


@contextlib.contextmanager
def beating(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every interval while it runs (server storages), as study.optimize does:
    Optuna records heartbeats only inside its own loop."""
    if not heartbeats(study):
        yield
        return
    storage, stop = _storage(study), threading.Event()
    interval = storage.get_heartbeat_interval()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(_trial_id(trial))
            except Exception as error:  # one missed beat is what the grace period is for; said, not hidden
                say_heartbeat_failed(trial.number, error)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()

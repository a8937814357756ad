"""One owner per study: who may sweep a study's left-over trials and enqueue its warm starts.

``augsearch run`` fails every RUNNING trial it finds in a journal or SQLite study (their processes
are taken for dead) and enqueues the space's warm starts if the study lacks them. Two runs at once
would fail each other's live trials and enqueue the warm starts twice. So a study has a lock in its
storage itself, one every machine that uses the storage sees:

- ``run`` takes it exclusively, without waiting, before it opens the study; held by another process,
  ``run`` is refused with one line (join with ``augsearch worker`` instead). After the sweep and the
  warm starts it holds it shared, as each worker does, until it exits: a rerun while the workers of
  a killed ``run`` live on is refused too, and a hand-started worker never waits on a live search.
- a journal file or SQLite: ``flock`` on a lock file beside it (``journal.log.owner``,
  ``study.db.owner``), a lock on one machine, which the kernel releases when its process dies;
- PostgreSQL: a session-level advisory lock on a hash of the study name, on a connection of its own,
  which the server releases when that session ends (the process died, the machine was lost).

A process keeps what it took until its search ends, or it exits (killed: the kernel or the server lets
go); taking a study it already holds again is a no-op.
"""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.pool import NullPool

from augsearch.errors import UserError
from augsearch.redaction import redact_text
from augsearch.storage import server_url

_HELD: dict[str, Any] = {}  # lock key -> the open file or connection that holds it in this process


def _lock_file(url: str) -> Path | None:
    """The lock file of a journal (a path) or SQLite (``sqlite:///PATH``) storage; None for a server."""
    if "://" not in url:
        return Path(f"{url}.owner")
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(f"{url.removeprefix('sqlite:///')}.owner")
    return None


def _advisory_key(name: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock``, from the study name (a lock per database)."""
    digest = hashlib.sha256(f"augsearch-study:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _refusal(name: str) -> UserError:
    return UserError(
        f"study '{name}' is being run by another process (a `run` or its workers are alive); "
        f"use `augsearch worker --study {name}` to join it, or wait until it ends"
    )


def _server_connection(url: str) -> Any:
    """A connection of its own (not pooled) that holds the advisory lock for the life of the process."""
    try:
        engine = sqlalchemy.create_engine(server_url(url), poolclass=NullPool)
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except Exception as error:  # unreachable server, bad URL: one line, without the password
        why = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(redact_text(f"cannot lock the study in its storage: {why}", url)) from None


def own_study(name: str, url: str) -> None:
    """Take the study's lock exclusively, for ``run``'s sweep and warm starts; refused when another
    process holds it (a one-line :class:`UserError`)."""
    key = f"{url}\0{name}"
    if key in _HELD:
        return
    path = _lock_file(url)
    if path is not None:
        if not path.parent.is_dir():
            return  # no storage yet where none can be created: opening the study says so
        handle = open(path, "a+")  # noqa: SIM115 (held open until the process exits)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise _refusal(name) from None
        _HELD[key] = handle
        return
    if not url.startswith(("postgresql", "postgres")):
        return  # another server: its trials are told by heartbeats, and no lock of its own is known here
    connection = _server_connection(url)
    taken = connection.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": _advisory_key(name)})
    if not taken.scalar():
        connection.close()
        raise _refusal(name)
    _HELD[key] = connection


def share_study(name: str, url: str) -> None:
    """Hold the study's lock shared from now on: what ``run`` holds after its start-up, and each worker
    (waiting, if a ``run`` is in its start-up). A ``run`` started meanwhile is refused."""
    key = f"{url}\0{name}"
    held = _HELD.get(key)
    path = _lock_file(url)
    if path is not None:
        if held is None:
            if not path.parent.is_dir():
                return
            held = _HELD[key] = open(path, "a+")  # noqa: SIM115 (held open until the process exits)
        fcntl.flock(held, fcntl.LOCK_SH)  # from exclusive: a conversion
        return
    if not url.startswith(("postgresql", "postgres")):
        return
    if held is None:
        held = _HELD[key] = _server_connection(url)
        held.execute(sqlalchemy.text("SELECT pg_advisory_lock_shared(:k)"), {"k": _advisory_key(name)})
        return
    # Shared taken while still exclusive, then exclusive let go: no moment without a lock.
    held.execute(sqlalchemy.text("SELECT pg_advisory_lock_shared(:k)"), {"k": _advisory_key(name)})
    held.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _advisory_key(name)})


def release_study(name: str, url: str) -> None:
    """Let go of the study's lock (a search that ends; a process that exits lets go anyway)."""
    held = _HELD.pop(f"{url}\0{name}", None)
    if held is not None:
        held.close()


def refuse_sqlite_worker(url: str) -> None:
    """``augsearch worker`` on SQLite: refused as ``run --workers K`` is (SQLite is not safe for several
    processes writing at once)."""
    if url.startswith("sqlite"):
        raise UserError(
            "SQLite is not safe for several workers; a study that workers join needs a journal file "
            "(run --workers K without --storage) or --storage postgresql://..."
        )

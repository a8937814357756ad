"""Damage in the middle of a journal file: dropped, with a copy of the damaged file kept.

A writer killed in the middle of an append leaves a torn record; if a live writer appends before anyone
cuts it (:func:`augsearch.storage.repair_journal` cuts a torn *last* record only), the torn bytes and
the next record share one line, which is not JSON, and Optuna's reader refuses the whole file: every
worker, dashboard and report then fails. On open, :func:`drop_damaged_records` rewrites the journal
without its damaged lines, under the journal's lock, after keeping the damaged file as
``journal.log.damaged-<timestamp>``. From a line that glued a torn record to a whole one, the whole
one is kept: it is the last complete JSON object at the line's end, the live writer's record.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from optuna.storages.journal import JournalFileOpenLock

_RECORD_START = b'{"op_code"'  # how every record of Optuna's journal begins (json.dumps of a dict)


def _record(line: bytes) -> bytes | None:
    """The line itself if it is a JSON object, else the whole record at its end (a torn record glued to
    a complete one), else None: nothing in it can be read."""
    if _is_object(line):
        return line
    start = line.find(_RECORD_START, 1)
    while start != -1:
        if _is_object(line[start:]):
            return line[start:]
        start = line.find(_RECORD_START, start + 1)
    return None


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        return False


def drop_damaged_records(path: Path) -> tuple[int, Path | None]:
    """Rewrite ``path`` without its damaged lines; returns (records dropped, where the damaged file was
    kept), (0, None) when nothing was damaged. Complete lines only: a torn last line without its newline
    is :func:`augsearch.storage.repair_journal`'s, and a live writer's line in progress is never read,
    since this runs under the journal's own lock, which every writer takes to append."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0, None
    lock = JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        lines = data[:end].split(b"\n")[:-1]
        kept = [_record(line) for line in lines]
        dropped = sum(record != line for record, line in zip(kept, lines, strict=True))
        if not dropped:
            return 0, None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        damaged = path.with_name(f"{path.name}.damaged-{stamp}")
        shutil.copy2(path, damaged)  # kept: what was dropped can still be looked at
        repaired = b"".join(record + b"\n" for record in kept if record is not None) + data[end:]
        temporary = path.with_name(f".{path.name}.repairing")
        with open(temporary, "wb") as handle:
            handle.write(repaired)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        return dropped, damaged
    finally:
        lock.release()


def say_dropped_records(path: Path, dropped: int, damaged: Path | None) -> None:
    """One line on stderr when :func:`drop_damaged_records` dropped something."""
    if dropped:
        print(
            f"note: {path}: dropped {dropped} damaged record(s) in the middle of the journal; "
            f"the damaged file is kept as {damaged}",
            file=sys.stderr,
            flush=True,
        )

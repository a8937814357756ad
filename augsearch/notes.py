"""One-line notes on stderr for faults a process survives: said once, not hidden, not flooding the log."""

from __future__ import annotations

import os
import sys
import time

import optuna

_LAST_NOTE: dict[str, float] = {}  # topic -> when say_rate_limited last said something about it


def say_rate_limited(topic: str, message: str, every: float = 60.0) -> None:
    """One line on stderr about ``topic``, at most once every ``every`` seconds (a failing heartbeat
    fails once per interval: one line per minute says so without flooding the log)."""
    now = time.monotonic()
    if now - _LAST_NOTE.get(topic, -every) >= every:
        _LAST_NOTE[topic] = now
        print(f"note: {message}", file=sys.stderr, flush=True)


def give_up(trial: optuna.Trial) -> None:
    """Say that this worker gives up a trial that was finished under it (failed by a sweep, or by hand),
    so that the loop goes on with the next one instead of failing on the trial's next write."""
    print(
        f"note: worker {os.getpid()}: trial {trial.number} was finished by another process while it "
        f"ran; given up, going on with the next",
        file=sys.stderr,
        flush=True,
    )


def say_heartbeat_failed(number: int, error: Exception) -> None:
    """A heartbeat that could not be recorded (database unreachable, say): one line a minute at most.
    Missing beats for longer than the grace period get the trial failed and re-queued by other workers."""
    why = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    say_rate_limited("heartbeat", f"worker {os.getpid()}: heartbeat of trial {number} failed: {why}")

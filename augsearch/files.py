"""The one place that writes files: always to a temporary file beside the target, then rename.

A run killed half-way therefore leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch


def _replace(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _replace(Path(path), lambda handle: handle.write(text.encode()))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_bytes(path: Path, data: bytes) -> None:
    _replace(Path(path), lambda handle: handle.write(data))


def save_torch(path: Path, obj: Any) -> None:
    _replace(Path(path), lambda handle: torch.save(obj, handle))


def set_aside(path: Path, error: BaseException) -> Path:
    """Move an unusable checkpoint to ``<name>.corrupt`` (kept for a post-mortem, never read again) and
    say so in one line on stderr: the caller starts over instead of failing on it forever."""
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
    print(
        f"augsearch: checkpoint {path} is unusable ({reason}); moved to {aside}, starting over",
        file=sys.stderr,
    )
    return aside

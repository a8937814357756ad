"""Shared test helpers: run the real CLI in a subprocess, small synthetic data, tiny spaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m augsearch ARGS`` in ``cwd``, as a user would run it; no network needed."""
    environment = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "augsearch", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def smoke_variant(tmp_path: Path, mutate: Callable[[dict], object]) -> Path:
    """A copy of the smoke space, changed in place by ``mutate(raw)``, written to ``tmp_path/space.yaml``."""
    raw = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    mutate(raw)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def smoke_space() -> Path:
    return REPO / "search_spaces" / "smoke.yaml"


@pytest.fixture(scope="session")
def smoke_run_once(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The suite's one real ``augsearch run --space smoke --seed 0`` (search, export, retrain, report) and its
    result; ``out/`` under the returned folder holds the study. Never changed: a test that writes to the
    study works on :func:`copy_of_run`."""
    cwd = tmp_path_factory.mktemp("smoke-run")
    # The teacher in fp32 on every CPU: with native bf16 its logits (and so the whole run, which the
    # regression golden records) would depend on the machine's instruction set.
    fp32 = {"AUGSEARCH_TEACHER_BF16": "0"}
    result = run_cli("run", "--space", "smoke", "--studies-dir", "out", "--seed", "0", cwd=cwd, env=fp32)
    assert result.returncode == 0, result.stderr[-2000:]
    return cwd, result


def copy_of_run(run_folder: Path, parent: Path) -> Path:
    """A private copy of a run's folder (its studies, teachers and retrain runs) under ``parent``."""
    return Path(shutil.copytree(run_folder, parent / "run"))

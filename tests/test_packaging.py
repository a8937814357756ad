"""The built wheel works outside the checkout: it ships the search spaces (pyproject.toml), and
``augsearch spaces`` and ``augsearch validate default`` find them from any folder."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import REPO


def _run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_installed_wheel_finds_the_shipped_spaces_from_another_folder(tmp_path):
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    _run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, REPO, cwd=tmp_path)
    (wheel,) = wheels.glob("augsearch-*.whl")
    # A fresh venv with this one's packages as its dependencies (offline, no pip inside), augsearch from
    # the wheel only: .pth lines add folders to sys.path without running the .pth files found there
    # (so not this checkout's editable install), after the venv's own site-packages.
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    listed = _run(venv / "bin" / "augsearch", "spaces", cwd=elsewhere, env=env)
    names = {line.split()[0] for line in listed.splitlines()}
    assert {"default", "smoke", "cifar10"} <= names
    verdict = _run(venv / "bin" / "augsearch", "validate", "default", cwd=elsewhere, env=env)
    assert verdict.startswith("ok: search space 'default' (") and str(site) in verdict
    assert str(REPO) not in verdict  # found in the installed package, not in this checkout

"""Hostile input files, through the real CLI: each exits 2 with one line on stderr, within bounds of
time and memory, and writes nothing outside --studies-dir (issue 17, items 4 and 5).

Bounds: every run gets 10 s of CPU time (RLIMIT_CPU: a bound on work that does not depend on how busy
the machine is) and an address-space limit (RLIMIT_AS) of what a plain, refused command needs plus
1 GiB. The plain figure is measured here, not assumed: torch's CUDA build maps about 3.5 GiB of
address space on import alone, so a flat 1 GiB limit would stop every command before it reads its file.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, smoke_variant

from augsearch.errors import UserError
from augsearch.names import check_study_name, study_name_problem

CPU_SECONDS = 10
HEADROOM = 1 << 30  # what a hostile file may cost beyond a plain refused command: 1 GiB
_PEAK = (
    "import atexit, runpy, sys\n"
    "def peak(out):\n"
    "    fields = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
    "    with open(out, 'w') as handle:\n"
    "        handle.write(fields['VmPeak'].split()[0])\n"
    "atexit.register(peak, sys.argv[1])\n"
    "sys.argv = ['augsearch', *sys.argv[2:]]\n"
    "runpy.run_module('augsearch', run_name='__main__')\n"
)


def _environment() -> dict[str, str]:
    return {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def address_limit(tmp_path_factory) -> int:
    """RLIMIT_AS for the hostile runs: the peak address space of plain refused commands + 1 GiB."""
    cwd = tmp_path_factory.mktemp("plain")
    peaks = []
    for args in (["validate", "missing.json"], ["run", "--space", "missing.yaml", "--studies-dir", "s"]):
        out = cwd / "peak"
        done = subprocess.run(
            [sys.executable, "-c", _PEAK, str(out), *args], cwd=cwd, env=_environment(), capture_output=True
        )
        assert done.returncode == 2, done.stderr
        peaks.append(int(out.read_text()) * 1024)
    return max(peaks) + HEADROOM


def _tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def run_hostile(cwd: Path, limit: int, *args: str) -> str:
    """Run ``augsearch ARGS`` in ``cwd`` under the limits; assert exit 2, one stderr line, nothing
    written in ``cwd`` except under ``cwd/studies``; return the line."""
    return run_hostile_each(cwd, limit, list(args))[0]


def run_hostile_each(cwd: Path, limit: int, *commands: list[str]) -> list[str]:
    """:func:`run_hostile` for several commands at once, side by side: each is a fresh interpreter
    that spends most of its time importing on one core, so two of them take the time of one."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))

    before = _tree(cwd)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "augsearch", *args],
            cwd=cwd,
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limits,
        )
        for args in commands
    ]
    lines = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)  # a hang guard only; the bound is RLIMIT_CPU
        assert process.returncode == 2, stderr[-2000:]
        found = stderr.splitlines()
        assert len(found) == 1 and found[0].startswith("augsearch"), stderr[-2000:]
        assert len(found[0]) < 1000 and stdout == ""
        lines.append(found[0])
    assert {path for path in _tree(cwd) - before if not path.startswith("studies")} == set()
    return lines


# --- item 4: names that would be folders outside --studies-dir -----------------------------------


@pytest.mark.parametrize(
    "name", ["..", ".", "a/b", "a\\b", "x" * 65, "", " x", "-x", ".hidden", "x\n", "caf\u00e9", 7, None]
)
def test_study_names_are_one_plain_folder_name(name):
    assert study_name_problem(name) is not None
    with pytest.raises(UserError, match=r"^where: expected a study name"):
        check_study_name(name, "where")


@pytest.mark.parametrize("name", ["smoke", "x", "a.b_c-1", "x" * 64, "2026-12-03"])
def test_ordinary_study_names_pass(name):
    assert study_name_problem(name) is None and check_study_name(name, "where") == name


@pytest.mark.parametrize("name", ["/etc/augsearch-hostile", "../outside"])
def test_a_space_name_that_is_not_one_folder_is_refused(tmp_path, address_limit, name):
    work = tmp_path / "work"
    work.mkdir()
    space = smoke_variant(work, lambda raw: raw.update(name=name))
    commands = (["validate", str(space)], ["run", "--space", str(space), "--studies-dir", "studies"])
    for line in run_hostile_each(work, address_limit, *commands):
        assert f"{space}: name: expected a study name" in line
    assert not (tmp_path / "outside").exists() and not Path("/etc/augsearch-hostile").exists()
    assert not (work / "studies").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--space", "smoke"],
        ["worker"],
        ["export"],
        ["retrain"],
        ["report"],
        ["dashboard", "--port", "0"],
        ["preview"],
    ],
)
@pytest.mark.parametrize("name", ["../outside", "/tmp/augsearch-hostile"])
def test_every_study_option_refuses_a_path(tmp_path, address_limit, command, name):
    work = tmp_path / "work"
    work.mkdir()
    line = run_hostile(work, address_limit, *command, "--study", name, "--studies-dir", "studies")
    assert "argument --study: expected a study name" in line
    assert not (tmp_path / "outside").exists() and not Path("/tmp/augsearch-hostile").exists()


# --- item 5: policy files and spaces that demand unbounded work, or break the parsers ------------


def _policy(cwd: Path) -> dict:
    """A real exported policy file's content (slots, fixed stages on), for the hostile edits below."""
    from augsearch.export import policy_document
    from augsearch.policy import KDSettings, OpChoice, Policy
    from augsearch.space import load_space

    ops = (OpChoice("Rotate", 0.5, 0.3), OpChoice("CoarseDropout", 0.5, 0.5), OpChoice("MotionBlur", 1, 1))
    policy = Policy(load_space("default").fixed, ops, KDSettings(4.0, 0.9))
    return json.loads(json.dumps(policy_document(policy, {"study": "t"})))


def _pipeline(document: dict) -> list:
    return document["albumentations"]["transform"]["transforms"]


def _in_both(document: dict, index: int, **args) -> None:
    """Change fixed stage ``index`` the same way in the policy section and in the pipeline, so only
    the bounds can refuse it."""
    document["policy"]["fixed"][index]["args"].update(args)
    _pipeline(document)[index].update(args)


def _op_stage(document: dict, name: str, **args) -> None:
    """Add catalogue op ``name`` as a fixed stage with ``args``, in both sections."""
    document["policy"]["fixed"].append({"name": name, "args": args})
    position = len(document["policy"]["fixed"]) - 1
    _pipeline(document).insert(position, {"__class_fullname__": name, "p": 1.0, **args})


HOSTILE_POLICIES = {
    "holes": (
        lambda d: _op_stage(d, "CoarseDropout", num_holes_range=[1, 10**7], p=1.0),
        "CoarseDropout.num_holes_range: expected values in [0, 64]",
    ),
    "motion-blur": (
        lambda d: _op_stage(d, "MotionBlur", blur_limit=[3, 99999], p=1.0),
        "MotionBlur.blur_limit: expected values in [0, 63]",
    ),
    "grid-steps": (
        lambda d: _op_stage(d, "GridDistortion", num_steps=100000, p=1.0),
        "GridDistortion.num_steps: expected values in [1, 64]",
    ),
    "gauss-sigma": (
        lambda d: _op_stage(d, "GaussianBlur", blur_limit=0, sigma_limit=[1, 10**6], p=1.0),
        "GaussianBlur.sigma_limit: expected values in [0, 32]",
    ),
    "someof-draws": (
        lambda d: _pipeline(d).append(
            {"__class_fullname__": "SomeOf", "p": 1.0, "n": 10**9, "replace": True, "transforms": []}
        ),
        "SomeOf.n: expected values in [0, 64]",
    ),
    "affine-grows": (
        lambda d: _op_stage(d, "Affine", scale=4, fit_output=True, p=1.0),
        "Affine.fit_output: expected values in [False, False]",
    ),
    "many-pads": (
        lambda d: [_op_stage(d, "Pad", padding=4000, p=1.0) for _ in range(3)],
        "Pad/PadIfNeeded stages add up to",
    ),
    "many-transforms": (
        lambda d: _pipeline(d).extend([{"__class_fullname__": "NoOp", "p": 1.0}] * 10_000),
        "transforms: 10006 transforms; expected at most 64",
    ),
    "pipeline-not-policy": (
        lambda d: _pipeline(d)[-1].update(p=0.75),
        "albumentations: the pipeline is not the one the policy section builds",
    ),
    "deep-json": (
        lambda d: d.update(provenance={"a": json.loads("[" * 500 + "]" * 500)}),
        "nested 502 levels",
    ),
    "very-deep-json": (None, "refused (nested too deep)"),
    "long-integer": (None, "an integer of 5000 characters; expected at most 40"),
    "provenance-list": (lambda d: d.update(provenance=["x"]), "provenance: expected a mapping, got list"),
    "huge-file": (None, "larger than 1048576 bytes"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_POLICIES))
def test_hostile_policy_files_are_refused_in_one_line(tmp_path, address_limit, case):
    mutate, expected = HOSTILE_POLICIES[case]
    document = _policy(tmp_path)
    path = tmp_path / "policy.json"
    if mutate:
        mutate(document)
        text = json.dumps(document)
    elif case == "very-deep-json":
        text = "[" * 200_000 + "]" * 200_000
    elif case == "long-integer":
        text = json.dumps(document).replace('"schema_version": 2', '"schema_version": ' + "9" * 5000)
    else:
        text = json.dumps(document) + " " * (1 << 20)
    path.write_text(text)
    line = run_hostile(tmp_path, address_limit, "validate", str(path))
    assert line.startswith(f"augsearch: error: {path}: ") and expected in line, line


def test_the_unedited_policy_file_of_the_hostile_tests_loads(tmp_path):
    from augsearch.pipeline import validate_file

    path = tmp_path / "policy.json"
    path.write_text(json.dumps(_policy(tmp_path)))
    assert validate_file(str(path)).startswith("ok: policy file")


def _alias_bomb(levels: int = 9) -> str:
    """Billion laughs: each level is a list of ten aliases of the one before; plain ``safe_load`` would
    build 10**(levels + 1) references."""
    lines = ["name: smoke", "l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


ALIAS_BOMB = _alias_bomb()
HOSTILE_SPACES = {
    "alias-bomb": (ALIAS_BOMB, "YAML aliases (*name) are not accepted"),
    "deep-yaml": ("name: smoke\nx: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64 levels"),
    "long-integer": ("study:\n  trials: " + "7" * 5000 + "\n", "an integer of 5000 characters"),
    "holes": (
        lambda raw: raw["fixed"].append({"name": "CoarseDropout", "args": {"num_holes_range": [1, 10**7]}}),
        "CoarseDropout.num_holes_range: expected values in [0, 64]",
    ),
    "grid-steps": (
        lambda raw: raw["fixed"].append({"name": "GridDistortion", "args": {"num_steps": 100000}}),
        "GridDistortion.num_steps: expected values in [1, 64]",
    ),
    "sampler-candidates": (
        lambda raw: raw["study"].update(sampler_args={"n_ei_candidates": 10**9}),
        "study.sampler_args.n_ei_candidates: expected values in [-100000, 100000]",
    ),
    "synthetic-size": (
        lambda raw: raw["dataset"]["synthetic"].update(image_size=1024, train_size=10**7),
        "dataset.synthetic: 9765.8 GiB of images; expected at most 8 GiB",
    ),
    "many-pads": (
        lambda raw: raw["fixed"].extend({"name": "Pad", "args": {"padding": 4000}} for _ in range(3)),
        "Pad/PadIfNeeded stages add more than 4096 pixels",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SPACES))
def test_hostile_spaces_are_refused_in_one_line(tmp_path, address_limit, case):
    content, expected = HOSTILE_SPACES[case]
    if isinstance(content, str):
        path = tmp_path / "space.yaml"
        path.write_text(content)
    else:

        def mutate(raw: dict) -> None:
            raw.setdefault("fixed", [])
            content(raw)

        path = smoke_variant(tmp_path, mutate)
    commands = (["validate", str(path)], ["run", "--space", str(path), "--studies-dir", "studies"])
    for line in run_hostile_each(tmp_path, address_limit, *commands):
        assert line.startswith(f"augsearch: error: {path}: ") and expected in line, line
    assert not (tmp_path / "studies").exists()

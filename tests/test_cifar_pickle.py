"""CIFAR batches are read with a restricted unpickler (issue 17, item 6): a planted pickle that would
run code is refused in one line and its code never runs; real-format batches still load."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from augsearch.data import load_dataset
from augsearch.errors import UserError

FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _write_cifar10(root: Path, protocol: int) -> tuple[list[np.ndarray], Path]:
    """A complete cifar-10-batches-py folder as the original files hold it: bytes keys, a uint8
    ``(N, 3072)`` array under ``b'data'``, a list of ints under ``b'labels'``, bytes filenames."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = []
    for index, name in enumerate(FILES):
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        batches.append(data)
        entry = {
            b"batch_label": f"batch {index}".encode(),
            b"labels": [index, 9 - index],
            b"data": data,
            b"filenames": [b"a_1.png", b"b_2.png"],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=protocol))
    meta = {b"num_cases_per_batch": 10000, b"label_names": [b"c%d" % i for i in range(10)], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return batches, folder


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_real_format_batches_load(tmp_path, protocol):
    batches, _ = _write_cifar10(tmp_path, protocol)
    data = load_dataset("cifar10", tmp_path, download=False)
    assert data.x_train.shape == (10, 32, 32, 3) and data.classes[3] == "c3"
    assert np.array_equal(data.x_train[2, :, :, 0], batches[1][0, :1024].reshape(32, 32))
    assert data.y_test.tolist() == [5, 4]


class _Planted:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_planted_pickle_is_refused_and_its_code_never_runs(tmp_path):
    _, folder = _write_cifar10(tmp_path, 2)
    marker = tmp_path / "ran"
    entry = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": _Planted(f"touch {marker}")}
    (folder / "data_batch_3").write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(UserError) as error:
        load_dataset("cifar10", tmp_path, download=False)
    message = str(error.value)
    assert message.startswith(f"{folder / 'data_batch_3'}: refused: the pickle calls posix.system")
    assert "\n" not in message and not marker.exists()


def test_a_planted_meta_file_is_refused_through_the_cli(tmp_path, smoke_space):
    """The same through ``augsearch run`` with --data-dir: exit 2, one line, nothing ran."""
    _, folder = _write_cifar10(tmp_path / "data", pickle.HIGHEST_PROTOCOL)
    marker = tmp_path / "ran"
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": _Planted(f"touch {marker}")}))
    done = run_cli(
        "run", "--space", str(smoke_space), "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
        "--studies-dir", str(tmp_path / "studies"), "--no-retrain", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "batches.meta: refused: the pickle calls posix.system" in lines[0]
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [pickle.dumps([1, 2]), pickle.dumps({b"data": 1})[:-3], b"not a pickle", pickle.dumps(Path("x"))],
)
def test_other_bad_batches_are_one_line(tmp_path, payload):
    _, folder = _write_cifar10(tmp_path, 2)
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(UserError) as error:
        load_dataset("cifar10", tmp_path, download=False)
    assert str(error.value).startswith(f"{folder / 'test_batch'}: ") and "\n" not in str(error.value)

"""Tests for augsearch.data: every loader on tiny fakes written here, never the network."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import augsearch.data as data
from augsearch.data import ImageData, SyntheticSpec, load_dataset, validation_split
from augsearch.errors import UserError

REAL_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real data, cache or network leaks into a test unless it asks for it."""
    monkeypatch.delenv("AUGSEARCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")

    def no_network(name: str, root: Path) -> None:
        raise AssertionError("tests must not download")

    monkeypatch.setattr(data, "_torchvision_download", no_network)


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    with opener(str(path) + (".gz" if gz else ""), "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def write_fmnist(d: Path, n_train: int, n_test: int = 2, gz: bool = True) -> Path:
    rng = np.random.default_rng(n_train)
    write_idx(d / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)), gz)
    write_idx(d / "train-labels-idx1-ubyte", np.arange(n_train) % 10, gz)
    write_idx(d / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)), gz)
    write_idx(d / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10, gz)
    return d


def check_arrays(ds: ImageData) -> None:
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.uint8 and x.ndim == 4 and x.flags.c_contiguous
        assert x.flags.writeable  # torch.from_numpy warns on read-only arrays
        assert y.dtype == np.int64 and len(x) == len(y)
    assert ds.num_classes == len(ds.classes)


# --- Fashion-MNIST ----------------------------------------------------------------------------------


def test_fashion_mnist_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = write_fmnist(tmp_path / "given", 3)
    env = write_fmnist(tmp_path / "env" / "FashionMNIST" / "raw", 4, gz=False).parents[1]
    debian = write_fmnist(tmp_path / "debian", 5)
    monkeypatch.setenv("AUGSEARCH_DATA", str(env))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)

    ds = load_dataset("fashion-mnist", given, download=False)
    check_arrays(ds)
    assert ds.x_train.shape == (3, 28, 28, 1) and ds.x_test.shape == (2, 28, 28, 1)
    assert ds.source == str(given) and ds.classes[0] == "T-shirt/top" and ds.num_classes == 10
    assert load_dataset("fashion-mnist", tmp_path / "empty", download=False).x_train.shape[0] == 4
    assert load_dataset("fashion-mnist", download=False).source == str(env / "FashionMNIST" / "raw")
    monkeypatch.delenv("AUGSEARCH_DATA")
    assert load_dataset("fashion-mnist", download=False).x_train.shape[0] == 5


def test_fashion_mnist_subfolder_layout_and_content(tmp_path: Path) -> None:
    d = write_fmnist(tmp_path / "root" / "fashion-mnist", 7)
    ds = load_dataset("fashion-mnist", tmp_path / "root", download=False)
    assert ds.source == str(d)
    assert ds.y_train.tolist() == [0, 1, 2, 3, 4, 5, 6]
    expected = np.random.default_rng(7).integers(0, 256, (7, 28, 28)).astype(np.uint8)
    assert np.array_equal(ds.x_train[..., 0], expected)


def test_fashion_mnist_not_found_names_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUGSEARCH_DATA", str(tmp_path / "envdir"))
    with pytest.raises(UserError) as err:
        load_dataset("fashion-mnist", tmp_path / "given", download=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("fashion-mnist not found; tried: ")
    for place in (tmp_path / "given", tmp_path / "envdir", tmp_path / "no-debian"):
        assert str(place) in msg
    assert "--data-dir" in msg and "$AUGSEARCH_DATA" in msg and "torchvision download" in msg
    assert "dataset-fashion-mnist" in msg

    monkeypatch.delenv("AUGSEARCH_DATA")
    with pytest.raises(UserError, match=r"--data-dir \(not given\), \$AUGSEARCH_DATA \(unset\)"):
        load_dataset("fashion-mnist", download=False)


def test_fashion_mnist_download_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str, root: Path) -> None:
        raise OSError("no network\nat all")

    monkeypatch.setattr(data, "_torchvision_download", offline)
    with pytest.raises(UserError) as err:
        load_dataset("fashion-mnist", download=True)
    msg = str(err.value)
    assert "\n" not in msg and "failed: OSError: no network at all" in msg
    assert str(data._cache_dir()) in msg and "xdg-cache" in msg


def test_fashion_mnist_download_goes_to_cache_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def fake_download(name: str, root: Path) -> None:
        calls.append(root)
        write_fmnist(root / "FashionMNIST" / "raw", 6)

    monkeypatch.setattr(data, "_torchvision_download", fake_download)
    assert load_dataset("fashion-mnist").x_train.shape[0] == 6
    assert calls == [tmp_path / "xdg-cache" / "augsearch" / "data"]
    assert load_dataset("fashion-mnist", download=False).x_train.shape[0] == 6  # cached: no second download
    assert len(calls) == 1


def test_fashion_mnist_incomplete_and_corrupt(tmp_path: Path) -> None:
    d = write_fmnist(tmp_path / "d", 3)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"incomplete.*t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", d, download=False)
    write_fmnist(d, 3)
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x09\x03junk"))
    with pytest.raises(UserError, match="bad magic number"):
        load_dataset("fashion-mnist", d, download=False)
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 3, 0, 0, 0, 3]) + b"x"))
    with pytest.raises(UserError, match="bad magic number"):  # header cut short
        load_dataset("fashion-mnist", d, download=False)
    (d / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(UserError, match="cannot read"):
        load_dataset("fashion-mnist", d, download=False)


@pytest.mark.skipif(not REAL_DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_debian_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", REAL_DEBIAN)
    ds = load_dataset("fashion-mnist", download=False)
    check_arrays(ds)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10


# --- CIFAR ----------------------------------------------------------------------------------------


def write_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def test_cifar10_from_fake_pickles(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (2, 3072), dtype=np.uint8) for _ in range(6)]
    for i in range(5):
        write_pickle(d / f"data_batch_{i + 1}", {b"data": batches[i], b"labels": [i, 9 - i]})
    write_pickle(d / "test_batch", {"data": batches[5], "labels": [3, 4]})
    write_pickle(d / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})

    ds = load_dataset("cifar10", tmp_path, download=False)
    check_arrays(ds)
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    assert ds.y_train.tolist() == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5] and ds.y_test.tolist() == [3, 4]
    assert ds.classes == tuple(f"c{i}" for i in range(10)) and ds.source == str(d)
    # channel-major rows of 1024 pixels become HWC
    assert np.array_equal(ds.x_train[0, :, :, 1], batches[0][0, 1024:2048].reshape(32, 32))


def test_cifar100_from_fake_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "cifar-100-python"
    x = np.arange(3 * 3072, dtype=np.int64).astype(np.uint8).reshape(3, 3072)
    write_pickle(d / "train", {"data": x, "fine_labels": [0, 99, 5], "coarse_labels": [0, 1, 2]})
    write_pickle(d / "test", {"data": x[:1], "fine_labels": [7], "coarse_labels": [0]})
    write_pickle(d / "meta", {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": []})
    monkeypatch.setenv("AUGSEARCH_DATA", str(tmp_path))
    ds = load_dataset("cifar100", tmp_path / "nothing-here", download=False)
    check_arrays(ds)
    assert ds.x_train.shape == (3, 32, 32, 3) and ds.num_classes == 100 and ds.y_train.tolist() == [0, 99, 5]


def test_cifar_not_found(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", tmp_path / "x", download=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cifar10 not found; tried: --data-dir")
    assert "$AUGSEARCH_DATA (unset)" in msg and f"torchvision download to {tmp_path / 'x'} (disabled)" in msg


# --- image folders ----------------------------------------------------------------------------------


def write_images(root: Path, split: str, counts: dict[str, int], mode: str = "L", size=(12, 10)) -> None:
    for cls, n in counts.items():
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new(mode, size, color=(i * 20) if mode == "L" else (i * 20, 5, 9)).save(
                root / split / cls / f"{i}.png"
            )


def test_imagefolder_grey_with_test_split(tmp_path: Path) -> None:
    write_images(tmp_path, "train", {"cat": 3, "dog": 2})
    write_images(tmp_path, "val", {"dog": 1})
    (tmp_path / "train" / "cat" / "README.txt").write_text("not an image")
    ds = load_dataset(f"imagefolder:{tmp_path}")
    check_arrays(ds)
    assert ds.classes == ("cat", "dog") and ds.notes == () and ds.source == str(tmp_path)
    assert ds.x_train.shape == (5, 10, 12, 1) and ds.y_train.tolist() == [0, 0, 0, 1, 1]
    assert ds.x_test.shape == (1, 10, 12, 1) and ds.y_test.tolist() == [1]
    assert ds.x_train[1, 0, 0, 0] == 20 and ds.image_size == 10 and ds.channels == 1


def test_imagefolder_rgb_carves_test_split(tmp_path: Path) -> None:
    write_images(tmp_path, "train", {"a": 10, "b": 10}, mode="RGB")
    write_images(tmp_path, "train", {"c": 10}, mode="L")  # one colour image anywhere makes it RGB
    ds = load_dataset(f"imagefolder:{tmp_path}")
    check_arrays(ds)
    assert ds.channels == 3 and ds.x_train.shape[0] + ds.x_test.shape[0] == 30
    assert sorted(ds.y_test.tolist()) == [0, 1, 2]
    assert len(ds.notes) == 1 and "carved 10%" in ds.notes[0]


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no train/ directory"):
        load_dataset(f"imagefolder:{tmp_path}")
    write_images(tmp_path, "train", {"a": 2})
    with pytest.raises(UserError, match="too few images"):
        load_dataset(f"imagefolder:{tmp_path}")
    (tmp_path / "train" / "a" / "9.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"cannot read image .*9\.jpg"):
        load_dataset(f"imagefolder:{tmp_path}")
    (tmp_path / "train" / "a" / "9.jpg").unlink()
    write_images(tmp_path, "test", {"a": 1}, size=(8, 8))
    with pytest.raises(UserError) as err:
        load_dataset(f"imagefolder:{tmp_path}")
    assert str(tmp_path / "test" / "a" / "0.png") in str(err.value) and "8x8" in str(err.value)
    assert "12x10" in str(err.value)


# --- npz ------------------------------------------------------------------------------------------


def test_npz_good(tmp_path: Path) -> None:
    np.savez(tmp_path / "train.npz", x=np.zeros((4, 6, 6), np.uint8), y=np.array([0, 1, 2, 4], np.int32))
    np.savez(tmp_path / "test.npz", x=np.ones((2, 6, 6, 1), np.uint8), y=np.array([1, 0]))
    ds = load_dataset(f"npz:{tmp_path}")
    check_arrays(ds)
    assert ds.name == f"npz:{tmp_path}" and ds.x_train.shape == (4, 6, 6, 1)
    assert ds.classes == ("0", "1", "2", "3", "4")


@pytest.mark.parametrize(
    ("x", "y", "problem"),
    [
        (np.zeros((2, 6, 6), np.float32), np.zeros(2, np.int64), "must be uint8"),
        (np.zeros((2, 6), np.uint8), np.zeros(2, np.int64), "got shape"),
        (np.zeros((2, 6, 6, 2), np.uint8), np.zeros(2, np.int64), "C 1 or 3"),
        (np.zeros((3, 6, 6), np.uint8), np.zeros(2, np.int64), "3 images but y has 2 labels"),
        (np.zeros((2, 6, 6), np.uint8), np.array([0, -1]), "non-negative"),
        (np.zeros((2, 6, 6), np.uint8), np.array([0.0, 1.0]), "integer"),
    ],
)
def test_npz_bad(tmp_path: Path, x: np.ndarray, y: np.ndarray, problem: str) -> None:
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "test.npz", x=np.zeros((1, 6, 6), np.uint8), y=np.zeros(1, np.int64))
    with pytest.raises(UserError, match=problem) as err:
        load_dataset(f"npz:{tmp_path}")
    assert str(tmp_path / "train.npz") in str(err.value)


def test_npz_missing_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "train.npz", x=np.zeros((1, 6, 6), np.uint8), y=np.zeros(1, np.int64))
    with pytest.raises(UserError, match=r"test\.npz not found"):
        load_dataset(f"npz:{tmp_path}")


# --- synthetic ------------------------------------------------------------------------------------


def nearest_class_mean_accuracy(ds: ImageData) -> float:
    xtr = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float32)
    xte = ds.x_test.reshape(len(ds.x_test), -1).astype(np.float32)
    means = np.stack([xtr[ds.y_train == c].mean(0) for c in range(ds.num_classes)])
    pred = ((xte[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    return float((pred == ds.y_test).mean())


@pytest.mark.parametrize("channels", [1, 3])
def test_synthetic_learnable_balanced_deterministic(channels: int) -> None:
    spec = SyntheticSpec(channels=channels)
    ds = load_dataset("synthetic", synthetic=spec)
    check_arrays(ds)
    assert ds.x_train.shape == (2000, 28, 28, channels) and ds.x_test.shape == (500, 28, 28, channels)
    assert ds.source == "generated" and ds.num_classes == 10
    assert np.bincount(ds.y_train).tolist() == [200] * 10 and np.bincount(ds.y_test).tolist() == [50] * 10
    assert nearest_class_mean_accuracy(ds) >= 0.6
    again = load_dataset("synthetic", synthetic=spec)
    assert np.array_equal(ds.x_train, again.x_train) and np.array_equal(ds.y_test, again.y_test)
    other = load_dataset("synthetic", synthetic=SyntheticSpec(channels=channels, seed=1))
    assert not np.array_equal(ds.x_train, other.x_train)


def test_synthetic_default_and_odd_sizes() -> None:
    assert load_dataset("synthetic").x_train.shape == (2000, 28, 28, 1)
    ds = load_dataset("synthetic", synthetic=SyntheticSpec(5, 3, 13, train_size=23, test_size=7))
    check_arrays(ds)
    assert ds.x_train.shape == (23, 13, 13, 3) and ds.x_test.shape == (7, 13, 13, 3)
    assert np.bincount(ds.y_train).max() - np.bincount(ds.y_train).min() <= 1
    assert load_dataset("synthetic", synthetic=SyntheticSpec(image_size=8)).image_size == 8
    with pytest.raises(UserError, match="image_size >= 8"):
        load_dataset("synthetic", synthetic=SyntheticSpec(image_size=7))
    with pytest.raises(UserError):
        load_dataset("synthetic", synthetic=SyntheticSpec(channels=2))


# --- validation_split and names -------------------------------------------------------------------


def test_validation_split() -> None:
    y = np.repeat(np.arange(5), [40, 20, 10, 3, 1])
    train, val = validation_split(y, 0.2, seed=0)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(y)))
    assert np.intersect1d(train, val).size == 0
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert np.bincount(y[val], minlength=5).tolist() == [8, 4, 2, 1, 0]  # a lone sample stays in train
    again = validation_split(y, 0.2, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, validation_split(y, 0.2, seed=1)[1])
    assert validation_split(np.array([0, 0, 1, 1]), 0.5, seed=0)[1].size == 2
    assert validation_split(y, 0.0, seed=0)[1].size == 0
    with pytest.raises(UserError):
        validation_split(y, 1.0, seed=0)


@pytest.mark.parametrize("name", ["foo", "imagefolder:", "npz:", "FASHION"])
def test_unknown_dataset(name: str) -> None:
    with pytest.raises(UserError) as err:
        load_dataset(name)
    assert str(err.value) == (
        f"unknown dataset {name!r}; choose one of fashion-mnist, cifar10, cifar100, synthetic, "
        "imagefolder:PATH, npz:PATH"
    )

"""Load image-classification datasets as plain uint8 numpy arrays.

Every loader returns the same :class:`ImageData` (N,H,W,C uint8 images, int64 labels) so the search,
the augmentation pipeline and the trainers never care where the pixels came from. Files are parsed
directly (IDX with gzip, CIFAR pickles, npz) rather than through torchvision datasets: that keeps
loading fast, lets tests use tiny fakes without md5 checks, and needs torchvision only to download.
Every problem the user can fix is a one-line :class:`UserError`.
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augsearch.errors import UserError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATASET_NAMES = ("fashion-mnist", "cifar10", "cifar100", "synthetic")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # fmt: skip
_Finder = Callable[[Path], "Path | str"]  # a data location, or a short reason it is not there
_CIFAR = {  # name -> (folder, train files, test file, meta file, label key, class-names key)
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"),
}  # fmt: skip


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape of the generated dataset: lets tests and smoke runs work with no files at all."""

    num_classes: int = 10
    channels: int = 1
    image_size: int = 28
    train_size: int = 2000
    test_size: int = 500
    seed: int = 0


# name -> (classes, channels, image size, training images): what a named dataset looks like, unloaded
KNOWN_SHAPES = {
    "fashion-mnist": (10, 1, 28, 60_000),
    "cifar10": (10, 3, 32, 50_000),
    "cifar100": (100, 3, 32, 50_000),
}


def stand_in(name: str, synthetic: SyntheticSpec | None = None) -> SyntheticSpec:
    """Generated images shaped like dataset ``name``: its classes, channels, image size and number of
    training images. For measuring speed where the dataset is not at hand (a GPU machine that cannot
    download it): what a trial costs depends on these shapes, not on what the pixels show. Never for
    accuracy. ``synthetic`` is the space's own spec, used when ``name`` is ``synthetic``.
    """
    if name == "synthetic":
        return synthetic or SyntheticSpec()
    if name not in KNOWN_SHAPES:
        known = ", ".join([*KNOWN_SHAPES, "synthetic"])
        raise UserError(
            f"no stand-in for dataset {name!r}: its shape is known only once loaded ({known} are)"
        )
    classes, channels, size, train = KNOWN_SHAPES[name]
    return SyntheticSpec(
        num_classes=classes, channels=channels, image_size=size, train_size=train, test_size=1000
    )


@dataclass(frozen=True, eq=False)  # eq=False: comparing/hashing numpy arrays elementwise makes no sense
class ImageData:
    """A dataset in memory: uint8 (N,H,W,C) images with C in {1,3}, int64 labels, class names."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        # Loaders normalise their output; a violation here is a bug, not user input, hence ValueError.
        for x, y in ((self.x_train, self.y_train), (self.x_test, self.y_test)):
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] not in (1, 3) or y.dtype != np.int64:
                raise ValueError(f"bad ImageData arrays: x {x.dtype}{x.shape}, y {y.dtype}{y.shape}")
            if len(x) != len(y) or x.shape[1:] != self.x_train.shape[1:]:
                raise ValueError(f"bad ImageData shapes: x {x.shape}, y {y.shape}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[3])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def model_shape(self) -> dict[str, int]:
        """What ``models.build_model`` needs of the data: ``build_model(name, **data.model_shape)``."""
        return {"in_channels": self.channels, "num_classes": self.num_classes, "image_size": self.image_size}


def load_dataset(
    name: str, data_dir: Path | None = None, *, synthetic: SyntheticSpec | None = None, download: bool = True
) -> ImageData:
    """Load a dataset by name: one of DATASET_NAMES, ``imagefolder:PATH`` or ``npz:PATH``."""
    data_dir = Path(data_dir).expanduser() if data_dir is not None else None
    if name == "fashion-mnist":
        return _load_fashion_mnist(data_dir, download)
    if name in _CIFAR:
        return _load_cifar(name, data_dir, download)
    if name == "synthetic":
        return _make_synthetic(synthetic or SyntheticSpec())
    if name.startswith("imagefolder:") and name.partition(":")[2]:
        return _load_imagefolder(name, Path(name.partition(":")[2]).expanduser())
    if name.startswith("npz:") and name.partition(":")[2]:
        return _load_npz(name, Path(name.partition(":")[2]).expanduser())
    raise UserError(
        f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}, imagefolder:PATH, npz:PATH"
    )


def validation_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of indices into sorted (train_idx, val_idx).

    Stratified so that small or imbalanced datasets still see every class in validation; each class
    keeps at least one training sample, and a class gets a validation sample once fraction*count >= 1.
    """
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"validation fraction must be in [0, 1), got {fraction}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        n_val = min(round(fraction * len(idx)), len(idx) - 1)  # round(x) >= 1 whenever x >= 1
        val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train_mask = np.ones(len(y), bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask).astype(np.int64), val_idx.astype(np.int64)


def stratified_draw(y: np.ndarray, pool: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` sorted indices of ``pool``, seeded, each class in proportion to its share of ``pool``
    (largest remainders get the rounding), so a few hundred labels still cover every class alike."""
    if size >= len(pool):
        return np.sort(pool)
    labels = np.asarray(y)[pool]
    classes, counts = np.unique(labels, return_counts=True)
    exact = size * counts / len(pool)
    take = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - take), kind="stable")[: size - take.sum()]:
        take[index] += 1
    rng = np.random.default_rng([seed, 0x6C6162])  # "lab": not the validation split's stream
    drawn = [rng.permutation(pool[labels == label])[:k] for label, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(drawn)).astype(np.int64)


# --- shared lookup helpers ----------------------------------------------------------------------------


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "augsearch" / "data"


def _torchvision_download(name: str, root: Path) -> None:
    """Download via torchvision into ``root``; a separate function so tests can replace it."""
    import torchvision.datasets as tvd

    cls = {"fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    root.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        cls(str(root), train=train, download=True)


def _search(
    name: str, data_dir: Path | None, extra: list[Path], download: bool, find: _Finder, hint: str
) -> Path:
    """Try data_dir, $AUGSEARCH_DATA, ``extra``, then the download target; return the found dir.

    The error lists every place tried, and why each failed, so a user sees at once why their files
    were not picked up.
    """
    env = os.environ.get("AUGSEARCH_DATA")
    places = [("--data-dir", data_dir), ("$AUGSEARCH_DATA", Path(env).expanduser() if env else None)]
    places += [("", p) for p in extra]
    tried: list[str] = []
    for label, place in places:
        if place is None:
            tried.append(f"{label} (not given)" if label == "--data-dir" else f"{label} (unset)")
            continue
        found = find(place)
        if isinstance(found, Path):
            return found
        tried.append(f"{label} {place} ({found})".strip())
    target = data_dir or _cache_dir()
    if data_dir is None:  # an earlier download sits in the cache: use it, even offline
        found = find(target)
        if isinstance(found, Path):
            return found
    if not download:
        tried.append(f"torchvision download to {target} (disabled)")
    else:
        try:
            _torchvision_download(name, target)
            found = find(target)
            if isinstance(found, Path):
                return found
            tried.append(f"torchvision download to {target} (failed: {found} afterwards)")
        except Exception as exc:  # no network, disk full, torchvision changes: all end the same way
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            tried.append(f"torchvision download to {target} (failed: {reason})")
    raise UserError(f"{name} not found; tried: {', '.join(tried)}; {hint}")


# --- Fashion-MNIST ----------------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic 0x0008<ndim>, big-endian uint32 dims, uint8 data."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    ndim = raw[3] if len(raw) >= 4 else 0
    if raw[:3] != b"\x00\x00\x08" or ndim not in (1, 3) or len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path}: not an unsigned-byte IDX file (bad magic number {raw[:4].hex()})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    # from a bytearray, not the bytes: a read-only array makes torch.from_numpy warn on every run
    data = np.frombuffer(bytearray(raw), np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path}: IDX header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


def _find_idx(root: Path) -> Path | str:
    if not root.is_dir():
        return "missing"
    for d in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw"):
        present = [any((d / (f + gz)).is_file() for gz in ("", ".gz")) for f in _FMNIST_FILES]
        if all(present):
            return d
        if any(present):
            return f"incomplete: {d} lacks {_FMNIST_FILES[present.index(False)]}[.gz]"
    return "no IDX files"


def _load_fashion_mnist(data_dir: Path | None, download: bool) -> ImageData:
    hint = "install Debian's dataset-fashion-mnist or pass --data-dir"
    d = _search("fashion-mnist", data_dir, [DEBIAN_FASHION_MNIST], download, _find_idx, hint)
    xtr, ytr, xte, yte = (_read_idx(d / f if (d / f).is_file() else d / (f + ".gz")) for f in _FMNIST_FILES)
    for x, y, f in ((xtr, ytr, _FMNIST_FILES[0]), (xte, yte, _FMNIST_FILES[2])):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UserError(f"{d}: {f} has shape {x.shape} but its labels have shape {y.shape}")
    return ImageData("fashion-mnist", np.ascontiguousarray(xtr[..., None]), ytr.astype(np.int64),
                     np.ascontiguousarray(xte[..., None]), yte.astype(np.int64), FASHION_MNIST_CLASSES,
                     str(d))  # fmt: skip


# --- CIFAR ----------------------------------------------------------------------------------------


# What a CIFAR batch's pickle may name: numpy's array reconstruction (protocol 2, as the original Python 2
# files and torchvision's copies have it; protocol 5's out-of-band-free form, as a current numpy writes
# it), under numpy 1's and numpy 2's module names. Dicts, lists, str and int need no name; bytes need
# ``_codecs.encode(text, "latin1")`` in a protocol-2 pickle written by Python 3 (answered by
# :func:`_latin1_bytes`, which does nothing else).
CIFAR_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a callable outside :data:`CIFAR_PICKLE_GLOBALS`."""


class _CifarUnpickler(pickle.Unpickler):
    """Why not ``pickle.load``: unpickling calls whatever a file names (``os.system`` included), and
    ``--data-dir`` / ``$AUGSEARCH_DATA`` may be anyone's folder. This one resolves only numpy's array
    reconstruction, so a planted file is refused before anything of it runs."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}"[:120])
        return super().find_class(module, name)


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, and only that."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _RefusedGlobal(f"_codecs.encode with {encoding!r}"[:120])
    return text.encode("latin1")


def _unpickle(path: Path) -> dict:
    # latin1 reads the original Python 2 pickles; keys may come back as bytes from other writers.
    try:
        with open(path, "rb") as fh:
            entry = _CifarUnpickler(fh, encoding="latin1").load()
    except _RefusedGlobal as refused:
        raise UserError(
            f"{path}: refused: the pickle calls {refused}; a CIFAR batch holds only numpy arrays, "
            "dicts, lists, bytes, str and int"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, MemoryError) as exc:
        raise UserError(f"{path}: not a CIFAR batch ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(entry, dict):
        raise UserError(f"{path}: not a CIFAR batch (a {type(entry).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _load_cifar(name: str, data_dir: Path | None, download: bool) -> ImageData:
    folder, train_files, test_file, meta_file, label_key, names_key = _CIFAR[name]

    def find(root: Path) -> Path | str:
        for d in (root / folder, root):
            missing = [f for f in (*train_files, test_file, meta_file) if not (d / f).is_file()]
            if not missing:
                return d
        return "missing" if not root.is_dir() else f"no complete {folder}/"

    d = _search(name, data_dir, [], download, find, "pass --data-dir with torchvision's layout")

    def read(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            try:
                entry = _unpickle(d / f)
                xs.append(np.asarray(entry["data"], np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(entry[label_key], np.int64))
            except (KeyError, ValueError, pickle.UnpicklingError, EOFError) as exc:
                raise UserError(f"{d / f}: not a {name} batch ({type(exc).__name__}: {exc})") from None
        return np.ascontiguousarray(np.concatenate(xs).transpose(0, 2, 3, 1)), np.concatenate(ys)

    xtr, ytr = read(train_files)
    xte, yte = read((test_file,))
    names = _unpickle(d / meta_file)[names_key]
    classes = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in names)
    return ImageData(name, xtr, ytr, xte, yte, classes, str(d))


# --- image folders and npz ------------------------------------------------------------------------


def _load_imagefolder(name: str, root: Path) -> ImageData:
    from PIL import Image

    if not (root / "train").is_dir():
        raise UserError(f"{name}: no train/ directory in {root} (expected {root}/train/<class>/*.png)")
    classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    if not classes:
        raise UserError(f"{name}: {root / 'train'} has no class subdirectories")

    def files(split: Path) -> list[tuple[Path, int]]:
        out = []
        for sub in sorted(p for p in split.iterdir() if p.is_dir()):
            if sub.name not in classes:
                raise UserError(f"{name}: class {sub.name!r} in {split} is not a class in {root / 'train'}")
            imgs = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            out += [(p, classes.index(sub.name)) for p in imgs]
        return out

    train = files(root / "train")
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    test = files(test_dir) if test_dir else []
    if not train:
        raise UserError(f"{name}: no image files ({', '.join(IMAGE_SUFFIXES)}) under {root / 'train'}")

    def read(path: Path, mode: str | None) -> tuple[str, tuple[int, int], np.ndarray | None]:
        try:  # Image.open reads only the header, so the first pass (mode=None) is cheap
            with Image.open(path) as im:
                return im.mode, im.size, None if mode is None else np.asarray(im.convert(mode))
        except OSError as exc:
            raise UserError(f"{name}: cannot read image {path}: {exc}") from None

    headers = [read(path, None)[:2] for path, _ in train + test]
    mode = "L" if all(m in _GREY_MODES for m, _ in headers[: len(train)]) else "RGB"
    size = headers[0][1]
    for (path, _), (_, s) in zip(train + test, headers, strict=True):
        if s != size:
            raise UserError(f"{name}: {path} is {s[0]}x{s[1]} but {train[0][0]} is {size[0]}x{size[1]}; "
                            "all images must have one size")  # fmt: skip

    def stack(items: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
        x = np.zeros((len(items), size[1], size[0], 1 if mode == "L" else 3), np.uint8)
        for i, (path, _) in enumerate(items):
            x[i] = read(path, mode)[2].reshape(x.shape[1:])
        return x, np.array([label for _, label in items], np.int64)

    xtr, ytr = stack(train)
    notes: tuple[str, ...] = ()
    if test:
        xte, yte = stack(test)
    else:
        tr, te = validation_split(ytr, 0.1, seed=0)
        if te.size == 0:
            raise UserError(f"{name}: no test/ or val/ split and too few images in train/ to carve 10% off")
        xtr, ytr, xte, yte = xtr[tr], ytr[tr], xtr[te], ytr[te]
        notes = (f"no test split found in {root}: carved 10% of train as test (stratified, seed 0)",)
    return ImageData(name, xtr, ytr, xte, yte, classes, str(root), notes)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise UserError(f"{path} not found (npz datasets need train.npz and test.npz with arrays x and y)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise UserError(f"{path}: needs arrays 'x' and 'y', has {sorted(z.files)}")
            x, y = z["x"], z["y"]
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read as npz without pickles ({exc})") from None
    if x.dtype != np.uint8:
        raise UserError(f"{path}: x must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise UserError(f"{path}: x must be (N,H,W) or (N,H,W,C) with C 1 or 3, got shape {x.shape}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: y must be a 1-D integer array, got {y.dtype} shape {y.shape}")
    if len(x) != len(y):
        raise UserError(f"{path}: x has {len(x)} images but y has {len(y)} labels")
    if len(y) and y.min() < 0:
        raise UserError(f"{path}: labels must be non-negative, found {y.min()}")
    return np.ascontiguousarray(x), y.astype(np.int64)


def _load_npz(name: str, root: Path) -> ImageData:
    xtr, ytr = _read_npz(root / "train.npz")
    xte, yte = _read_npz(root / "test.npz")
    if xtr.shape[1:] != xte.shape[1:]:
        raise UserError(f"{root}: train images are {xtr.shape[1:]} but test images are {xte.shape[1:]}")
    if len(ytr) == 0:
        raise UserError(f"{root / 'train.npz'}: no training images")
    n_classes = int(max(ytr.max(), yte.max() if len(yte) else 0)) + 1
    return ImageData(name, xtr, ytr, xte, yte, tuple(str(i) for i in range(n_classes)), str(root))


# --- synthetic ------------------------------------------------------------------------------------


def _make_synthetic(spec: SyntheticSpec) -> ImageData:
    """Class prototypes (a blob at a class position, striped at a class angle and frequency, tinted by a
    class colour) plus per-image shifts and noise: cheap, deterministic, and learnable in one epoch, so
    that smoke runs and tests exercise the whole search without any files."""
    if spec.num_classes < 2 or spec.channels not in (1, 3) or spec.image_size < 8:
        raise UserError(f"synthetic needs num_classes >= 2, channels 1 or 3, image_size >= 8; got {spec}")
    if spec.train_size < spec.num_classes or spec.test_size < 1:
        raise UserError(f"synthetic needs train_size >= num_classes and test_size >= 1; got {spec}")
    k = np.arange(spec.num_classes)
    turn = k / spec.num_classes
    cx, cy = 0.5 + 0.22 * np.cos(2 * np.pi * turn), 0.5 + 0.22 * np.sin(2 * np.pi * turn)
    angle, freq = np.pi * ((k * 0.618) % 1.0), 2.0 + (k % 3)
    colour = 0.35 + 0.65 * (0.5 + 0.5 * np.cos(2 * np.pi * (turn[:, None] + np.arange(3)[None, :] / 3)))
    cx, cy, angle, freq, colour = (a.astype(np.float32) for a in (cx, cy, angle, freq, colour))  # speed
    train_seq, test_seq = np.random.SeedSequence(spec.seed).spawn(2)  # test set independent of train_size
    size, max_shift = spec.image_size, max(1, spec.image_size // 10)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size

    def generate(n: int, seq: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seq)
        y = rng.permutation(np.arange(n) % spec.num_classes)  # balanced to within one image
        shift = (rng.integers(-max_shift, max_shift + 1, size=(n, 2)) / size).astype(np.float32)
        u = (coords[None, None, :] - shift[:, 0, None, None]).astype(np.float32)  # (n,1,W)
        v = (coords[None, :, None] - shift[:, 1, None, None]).astype(np.float32)  # (n,H,1)
        blob = np.exp(-((u - cx[y, None, None]) ** 2 + (v - cy[y, None, None]) ** 2) / (2 * 0.16**2))
        phase = u * np.cos(angle[y])[:, None, None] + v * np.sin(angle[y])[:, None, None]
        pattern = blob * (0.55 + 0.45 * np.cos(2 * np.pi * freq[y, None, None] * phase))  # (n,H,W)
        tint = colour[y][:, None, None, :] if spec.channels == 3 else np.ones((n, 1, 1, 1), np.float32)
        noise = rng.standard_normal((n, size, size, spec.channels), dtype=np.float32)
        img = 20 + 215 * pattern[..., None] * tint + 20 * noise
        return np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8)), y.astype(np.int64)

    xtr, ytr = generate(spec.train_size, train_seq)
    xte, yte = generate(spec.test_size, test_seq)
    return ImageData("synthetic", xtr, ytr, xte, yte, tuple(f"class{i}" for i in k), "generated")

"""Read a search-space YAML file into frozen dataclasses, refusing anything unexpected.

The space is the product's language: which data, which teacher and student, which fixed stages,
how many searched op slots over which ops, which KD settings, and the budgets of a trial and of the
final retrain. An optional ``proxy:`` section tunes the zero-cost teacher-side proxy each trial computes
before training (see :class:`ProxySettings` and ``augsearch/proxy.py``). YAML is read with
``yaml.safe_load`` (a ``!!python/...`` tag is refused, never run), and every key is checked so that
a typo is an error, not a silently ignored setting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from augsearch.data import SyntheticSpec
from augsearch.errors import UserError

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
SCHEDULES = ("onecycle", "cosine")
KD_LOSSES = ("hinton", "dkd")  # augsearch/distill.py: hinton_loss, dkd_loss
# Albumentations classes a space may name as a fixed stage, besides the catalogue's ops (augsearch/ops.py):
# the geometric, crop, pad and flip stages of the usual dataset recipes. Normalisation is not among them:
# the pipeline must hand uint8 images to the loader, which normalises on the device (augsearch/loader.py).
# An exported policy file may hold only these, the catalogue's ops and the containers (augsearch/validate.py).
FIXED_STAGES = (
    "Pad", "PadIfNeeded", "RandomCrop", "CenterCrop", "Crop", "RandomResizedCrop", "Resize", "LongestMaxSize",
    "SmallestMaxSize", "HorizontalFlip", "VerticalFlip", "RandomRotate90", "Transpose", "D4",
)  # fmt: skip
_REQUIRED = object()


@dataclass(frozen=True)
class Range:
    """A searched float; ``low == high`` fixes it."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Stage:
    """A fixed albumentations stage applied to every image: class name and its arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSettings:
    name: str
    validation_fraction: float = 0.1
    synthetic: SyntheticSpec | None = None


@dataclass(frozen=True)
class TeacherSettings:
    model: str
    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.1
    checkpoint: str | None = None


@dataclass(frozen=True)
class TrainSettings:
    """One training budget: a trial's (on a subset) or the final retrain's (on train + validation)."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    subset: int | None = None


@dataclass(frozen=True)
class PolicySpace:
    slots: int
    ops: tuple[str, ...] | None = None  # None: every catalogue op that suits the data's channels


@dataclass(frozen=True)
class KDSpace:
    """``kd: {loss: [hinton, dkd], temperature: ..., alpha: ..., beta: ...}``.

    ``losses`` lists the loss families to search (one: fixed; several: a categorical parameter
    ``kd_loss``); a space without ``loss`` means Hinton only. ``beta`` (the NCKD weight of DKD) is
    required when ``dkd`` is listed and refused otherwise; it is suggested only in trials that chose DKD.
    For DKD ``alpha`` is the TCKD weight (CE keeps weight 1), for Hinton the KD-vs-CE mix.
    """

    temperature: Range
    alpha: Range
    losses: tuple[str, ...] = ("hinton",)
    beta: Range | None = None


@dataclass(frozen=True)
class ProxySettings:
    """The T. stddev proxy (``augsearch/proxy.py``), computed for every policy before its trial trains.

    ``proxy: {batches: 4, skip_worst_fraction: 0.0, startup_trials: 5}`` (all optional, these are the
    defaults): ``batches`` augmented batches of the trial's batch size feed the teacher (0 turns the
    proxy off, 1 is refused: a standard deviation needs two); with ``skip_worst_fraction`` f > 0, a
    policy whose proxy is in the highest (worst: the paper finds lower T. stddev better) fraction f of
    the values seen so far in the study is pruned at step 0, before any training, once
    ``startup_trials`` values have been seen.
    """

    batches: int = 4
    skip_worst_fraction: float = 0.0
    startup_trials: int = 5


@dataclass(frozen=True)
class BaselineSettings:
    """``baselines: {names: [standard, student-alone], temperature: 4.0, alpha: 0.9}``.

    ``names`` are the baselines ``augsearch run`` retrains beside the searched policy (see
    ``augsearch/baselines.py``; ``augsearch retrain --baselines`` can ask for any); the KD baselines
    use ``temperature`` and ``alpha``, Hinton's usual setting unless the space says otherwise.
    """

    names: tuple[str, ...] = ()
    temperature: float = 4.0
    alpha: float = 0.9


@dataclass(frozen=True)
class StudySettings:
    trials: int
    sampler: str = "tpe"
    seed: int = 0
    pruner: str = "median"
    pruner_args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    path: Path
    sha256: str
    dataset: DataSettings
    teacher: TeacherSettings
    student: str
    fixed: tuple[Stage, ...]
    policy: PolicySpace
    kd: KDSpace
    trial: TrainSettings
    retrain: TrainSettings
    study: StudySettings
    proxy: ProxySettings = field(default_factory=ProxySettings)
    baselines: BaselineSettings = field(default_factory=BaselineSettings)


def find_space(name_or_path: str) -> Path:
    """A path to an existing file, else ``search_spaces/NAME.yaml`` here or beside the package."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if candidate.is_file():
            return candidate
        raise UserError(f"search space file not found: {name_or_path}")
    for folder in (Path.cwd() / "search_spaces", SPACES_DIR):
        if (folder / f"{name_or_path}.yaml").is_file():
            return folder / f"{name_or_path}.yaml"
    raise UserError(
        f"unknown search space '{name_or_path}'; choose one of {', '.join(space_names())} or a path"
    )


def space_names() -> list[str]:
    return sorted(path.stem for path in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str) -> Space:
    path = find_space(name_or_path)
    raw_bytes = path.read_bytes()
    try:
        raw = yaml.safe_load(raw_bytes)
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path}: not valid YAML ({first})") from None
    return parse_space(raw, path, hashlib.sha256(raw_bytes).hexdigest())


class _Reader:
    """Takes keys out of one mapping, checking types, and complains about whatever is left."""

    def __init__(self, raw: Any, where: str, file: Path) -> None:
        self.file, self.where = file, where
        if not isinstance(raw, dict):
            self.fail(where, f"expected a mapping, got {type(raw).__name__}")
        self.raw = dict(raw)

    def fail(self, key: str, what: str) -> None:
        raise UserError(f"{self.file}: {key}: {what}")

    def take(self, key: str, kind: type | tuple[type, ...], default: Any = _REQUIRED) -> Any:
        path = f"{self.where}.{key}" if self.where else key
        if key not in self.raw:
            if default is _REQUIRED:
                self.fail(path, "missing required key")
            return default
        value = self.raw.pop(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.fail(path, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def sub(self, key: str, default: Any = _REQUIRED) -> _Reader:
        path = f"{self.where}.{key}" if self.where else key
        return _Reader(self.take(key, dict, default), path, self.file)

    def number(self, key: str, low: float, high: float, default: Any = _REQUIRED, kind: type = float) -> Any:
        value = self.take(key, kind, default)
        if value is not None and not low <= value <= high:
            self.fail(f"{self.where}.{key}", f"expected a value in [{low}, {high}], got {value}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _REQUIRED) -> str:
        value = self.take(key, str, default)
        if value not in choices:
            self.fail(f"{self.where}.{key}", f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def range(self, key: str, low: float, high: float) -> Range:
        sub = self.sub(key)
        lo, hi = sub.number("low", low, high), sub.number("high", low, high)
        log = sub.take("log", bool, False)
        sub.done()
        if lo > hi:
            self.fail(f"{self.where}.{key}", f"low {lo} is greater than high {hi}")
        if log and lo <= 0:
            self.fail(f"{self.where}.{key}", "a log range needs low > 0")
        return Range(lo, hi, log)

    def done(self) -> None:
        if self.raw:
            key = sorted(self.raw)[0]
            self.fail(f"{self.where}.{key}" if self.where else key, "unknown key")


def _train(reader: _Reader) -> TrainSettings:
    settings = TrainSettings(
        epochs=reader.number("epochs", 1, 10_000, kind=int),
        batch_size=reader.number("batch_size", 1, 65_536, 128, kind=int),
        lr=reader.number("lr", 1e-6, 10.0, 0.05),
        weight_decay=reader.number("weight_decay", 0.0, 1.0, 5e-4),
        schedule=reader.choice("schedule", SCHEDULES, "onecycle"),
        subset=reader.number("subset", 1, 10**9, None, kind=int),
    )
    reader.done()
    return settings


def _kd(reader: _Reader) -> KDSpace:
    """The ``kd`` section; see :class:`KDSpace`."""
    temperature, alpha = reader.range("temperature", 0.1, 100.0), reader.range("alpha", 0.0, 1.0)
    losses = reader.take("loss", (list, str), "hinton")
    losses = (losses,) if isinstance(losses, str) else tuple(losses)
    for loss in losses:
        if loss not in KD_LOSSES:
            reader.fail("kd.loss", f"expected {' or '.join(KD_LOSSES)} or a list of them, got {loss!r}")
    if not losses or len(set(losses)) != len(losses):
        reader.fail("kd.loss", f"expected a non-empty list of distinct losses, got {list(losses)}")
    if "dkd" not in losses and "beta" in reader.raw:
        reader.fail("kd.beta", "only the dkd loss has beta; add dkd to kd.loss or remove beta")
    beta = reader.range("beta", 0.0, 100.0) if "dkd" in losses else None
    return KDSpace(temperature, alpha, losses, beta)


def parse_space(raw: Any, path: Path, sha256: str) -> Space:
    """Check a loaded YAML document and build a :class:`Space`; one-line :class:`UserError` otherwise."""
    from augsearch.ops import OPS  # the catalogue, to check op names

    top = _Reader(raw, "", path)
    data = top.sub("dataset")
    synthetic = None
    if "synthetic" in data.raw:
        syn = data.sub("synthetic")
        synthetic = SyntheticSpec(
            num_classes=syn.number("num_classes", 2, 1000, 10, kind=int),
            channels=syn.number("channels", 1, 3, 1, kind=int),
            image_size=syn.number("image_size", 8, 1024, 28, kind=int),
            train_size=syn.number("train_size", 10, 10**7, 2000, kind=int),
            test_size=syn.number("test_size", 10, 10**7, 500, kind=int),
            seed=syn.take("seed", int, 0),
        )
        syn.done()
    dataset = DataSettings(
        data.take("name", str), data.number("validation_fraction", 0.01, 0.5, 0.1), synthetic
    )
    data.done()

    teach = top.sub("teacher")
    teacher = TeacherSettings(
        model=teach.take("model", str),
        epochs=teach.number("epochs", 1, 10_000, 4, kind=int),
        batch_size=teach.number("batch_size", 1, 65_536, 128, kind=int),
        lr=teach.number("lr", 1e-6, 10.0, 0.1),
        checkpoint=teach.take("checkpoint", str, None),
    )
    teach.done()
    student = top.sub("student")
    student_model = student.take("model", str)
    student.done()

    fixed = []
    for index, item in enumerate(top.take("fixed", list, [])):
        stage = _Reader(item, f"fixed[{index}]", path)
        name = stage.take("name", str)
        args = stage.take("args", dict, {})
        stage.done()
        from augsearch.validate import stage_problem  # lazily: validate imports this module

        problem = stage_problem(name, args)
        if problem:
            stage.fail(f"fixed[{index}]", problem)
        fixed.append(Stage(name, args))

    pol = top.sub("policy")
    ops = pol.take("ops", (list, str), "all")
    if ops == "all":
        ops = None
    elif isinstance(ops, str):
        pol.fail("policy.ops", f"expected 'all' or a list of op names, got {ops!r}")
    else:
        for op in ops:
            if op not in OPS:
                pol.fail("policy.ops", f"unknown op {op!r}; known ops: {', '.join(OPS)}")
        ops = tuple(ops)
    policy = PolicySpace(pol.number("slots", 0, 16, kind=int), ops)
    pol.done()

    kd_reader = top.sub("kd")
    kd = _kd(kd_reader)
    kd_reader.done()

    study = top.sub("study")
    study_settings = StudySettings(
        trials=study.number("trials", 1, 100_000, kind=int),
        sampler=study.choice("sampler", SAMPLERS, "tpe"),
        seed=study.take("seed", int, 0),
        pruner=study.choice("pruner", PRUNERS, "median"),
        pruner_args=study.take("pruner_args", dict, {}),
    )
    study.done()

    proxy = ProxySettings()
    if "proxy" in top.raw:
        prox = top.sub("proxy")
        proxy = ProxySettings(
            batches=prox.number("batches", 0, 1024, 4, kind=int),
            skip_worst_fraction=prox.number("skip_worst_fraction", 0.0, 0.9, 0.0),
            startup_trials=prox.number("startup_trials", 1, 100_000, 5, kind=int),
        )
        prox.done()
        if proxy.batches == 1:
            prox.fail("proxy.batches", "expected 0 (off) or at least 2: a standard deviation needs two")
        if proxy.batches == 0 and proxy.skip_worst_fraction > 0:
            prox.fail("proxy.skip_worst_fraction", "needs the proxy on (proxy.batches >= 2)")

    baselines = BaselineSettings()
    if "baselines" in top.raw:
        from augsearch.baselines import BASELINES  # lazily: baselines imports policy, which imports space

        base = top.sub("baselines")
        names = tuple(base.take("names", list, []))
        for name in names:
            if name not in BASELINES:
                base.fail("baselines.names", f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
        baselines = BaselineSettings(
            names, base.number("temperature", 0.1, 100.0, 4.0), base.number("alpha", 0.0, 1.0, 0.9)
        )
        base.done()

    space = Space(
        name=top.take("name", str, path.stem),
        description=top.take("description", str, ""),
        path=path,
        sha256=sha256,
        dataset=dataset,
        teacher=teacher,
        student=student_model,
        fixed=tuple(fixed),
        policy=policy,
        kd=kd,
        trial=_train(top.sub("trial")),
        retrain=_train(top.sub("retrain")),
        study=study_settings,
        proxy=proxy,
        baselines=baselines,
    )
    top.done()
    return space

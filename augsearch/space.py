"""Read a search-space YAML file into frozen dataclasses, refusing anything unexpected.

The space is the product's language: which data, which teacher and student, which fixed stages
(always applied, or switched on and off by the search), which searched per-image structure over which
ops (AutoAugment-like op slots or sub-policies, RandAugment's N and M, TrivialAugment, Cutout), which
batch mixing, which KD settings, the budgets of a trial (learning rate, epochs and batch size fixed or
searched) and of the final retrain, the sampler and pruner, and the baselines enqueued as warm starts.
``search_spaces/README.md`` documents the format with an example of each feature. An optional
``proxy:`` section tunes the zero-cost teacher-side proxy each trial computes
before training (see :class:`ProxySettings` and ``augsearch/proxy.py``). YAML is read with
``yaml.safe_load`` (a ``!!python/...`` tag is refused, never run), and every key is checked so that
a typo is an error, not a silently ignored setting.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from augsearch.baselines import BASELINES
from augsearch.bounded import parse_yaml, read_bounded
from augsearch.bounds import (
    CONTROL_INTERVAL,
    DKD_BETA,
    ERASING_SIZE,
    KD_ALPHA,
    MAGNITUDE,
    MIX_ALPHA,
    PROBABILITY,
    RANDAUGMENT_N,
    STRENGTH,
    STRENGTH_STEP,
    SYNTHESIS_AGREEMENT,
    SYNTHESIS_RATIO,
    TEMPERATURE,
    Bound,
)
from augsearch.data import SyntheticSpec
from augsearch.errors import UserError
from augsearch.fair import KD_KINDS, ROWS
from augsearch.mixing import MIX_KINDS
from augsearch.names import study_name_problem
from augsearch.ops import OPS
from augsearch.schedule import (
    DEFAULT_TARGETS,
    SEARCHED_KINDS,
    SIGNALS,
    TARGET_BOUNDS,
    TEMPERATURE_SCHEDULES,
)
from augsearch.settings import (
    GENERATORS,
    KD_LOSSES,
    PRUNERS,
    SAMPLERS,
    SCHEDULES,
    STRUCTURES,
    BaselineSettings,
    DataSettings,
    ErasingSpace,
    GanRecipe,
    IntRange,
    KDSpace,
    MixSpace,
    PolicySpace,
    ProxySettings,
    Range,
    ScheduleSpace,
    Space,
    Stage,
    StudySettings,
    SynthesisSpace,
    TeacherSettings,
    TrainSearch,
    TrainSettings,
)
from augsearch.validate import MAX_SIDE, growth, stage_problem
from augsearch.warmstart import params_problem, warm_start_problem

# The shipped spaces: inside the package in an installed wheel (pyproject.toml ships search_spaces/ as
# augsearch/search_spaces/), beside the package in a checkout.
_PACKAGE = Path(__file__).resolve().parent
SPACES_DIR = next(
    (folder for folder in (_PACKAGE / "search_spaces", _PACKAGE.parent / "search_spaces") if folder.is_dir()),
    _PACKAGE.parent / "search_spaces",
)

_REQUIRED = object()
# Bounds on the work a space can ask for outside its fixed stages (those are checked with the policy
# file's allow-list, augsearch/validate.py): the generated data's size, the study's numeric arguments.
MAX_SYNTHETIC_BYTES = 8 << 30
MAX_STUDY_ARGUMENT = 100_000


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
    raw_bytes = read_bounded(path)
    try:
        raw = parse_yaml(raw_bytes, path)  # safe_load, bounded: no aliases, nesting, long integers
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path}: not valid YAML ({first})") from None
    return parse_space(raw, path, hashlib.sha256(raw_bytes).hexdigest())


def _span(bound: Bound) -> tuple[float, float]:
    """(low, high) of a policy setting's bound (augsearch/bounds.py), for the reader's range checks."""
    return bound.low, bound.high


class _Reader:
    """Takes keys out of one mapping, checking types, and complains about whatever is left."""

    def __init__(self, raw: Any, where: str, file: Path) -> None:
        self.file, self.where = file, where
        if not isinstance(raw, dict):
            self.fail(where, f"expected a mapping, got {type(raw).__name__}")
        self.raw = dict(raw)

    def fail(self, key: str, what: str) -> None:
        raise UserError(f"{self.file}: {key}: {what if len(what) <= 400 else what[:400] + '...'}")

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

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
            self.fail(self.path(key), f"expected a value in [{low}, {high}], got {value}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _REQUIRED) -> str:
        value = self.take(key, str, default)
        if value not in choices:
            self.fail(f"{self.where}.{key}", f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def range(self, key: str, low: float, high: float) -> Range:
        """``{low, high, log}``, or a plain number: fixed."""
        if isinstance(self.raw.get(key), (int, float)) and not isinstance(self.raw.get(key), bool):
            value = self.number(key, low, high)
            return Range(value, value)
        sub = self.sub(key)
        lo, hi = sub.number("low", low, high), sub.number("high", low, high)
        log = sub.take("log", bool, False)
        sub.done()
        if lo > hi:
            self.fail(f"{self.where}.{key}", f"low {lo} is greater than high {hi}")
        if log and lo <= 0:
            self.fail(f"{self.where}.{key}", "a log range needs low > 0")
        return Range(lo, hi, log)

    def int_range(self, key: str, low: int, high: int) -> IntRange:
        """``{low, high}`` of integers, or one integer: fixed."""
        if isinstance(self.raw.get(key), int) and not isinstance(self.raw.get(key), bool):
            value = self.number(key, low, high, kind=int)
            return IntRange(value, value)
        sub = self.sub(key)
        lo, hi = sub.number("low", low, high, kind=int), sub.number("high", low, high, kind=int)
        sub.done()
        if lo > hi:
            self.fail(f"{self.where}.{key}", f"low {lo} is greater than high {hi}")
        return IntRange(lo, hi)

    def int_choices(self, key: str, low: int, high: int, default: Any) -> tuple[int, ...]:
        """One integer, or a list of distinct ones to choose from (a categorical parameter)."""
        value = self.take(key, (int, list), default)
        values = value if isinstance(value, list) else [value]
        for index, item in enumerate(values):
            if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
                self.fail(
                    f"{self.where}.{key}[{index}]", f"expected an integer in [{low}, {high}], got {item!r}"
                )
        if not values or len(set(values)) != len(values):
            self.fail(
                f"{self.where}.{key}",
                f"expected an integer or a non-empty list of distinct ones, got {value!r}",
            )
        return tuple(values)

    def names(
        self, key: str, known: tuple[str, ...] | dict, what: str, default: Any = _REQUIRED
    ) -> tuple[str, ...]:
        """A list of distinct names, each one of ``known``."""
        values = self.take(key, list, default)
        for index, item in enumerate(values):
            if item not in known:
                self.fail(
                    f"{self.where}.{key}[{index}]", f"unknown {what} {item!r}; known: {', '.join(known)}"
                )
        if len(set(values)) != len(values):
            self.fail(f"{self.where}.{key}", f"expected distinct names, got {values}")
        return tuple(values)

    def done(self) -> None:
        if self.raw:
            key = sorted(self.raw)[0]
            self.fail(f"{self.where}.{key}" if self.where else key, "unknown key")


def _train(reader: _Reader, searchable: bool = False) -> tuple[TrainSettings, TrainSearch]:
    """A ``trial`` or ``retrain`` section. A trial's ``lr`` may be a range and its ``epochs`` and
    ``batch_size`` lists of choices (see :class:`TrainSearch`); its plain settings then hold, for
    whoever needs one value (the pruner's maximum resource, the proxy's batch, ``augsearch bench``),
    the largest choice and the range's middle."""
    if searchable:
        lr = reader.range("lr", 1e-6, 10.0) if "lr" in reader.raw else Range(0.05, 0.05)
        epochs = reader.int_choices("epochs", 1, 10_000, _REQUIRED)
        batch_sizes = reader.int_choices("batch_size", 1, 65_536, 128)
    else:
        value = reader.number("lr", 1e-6, 10.0, 0.05)
        lr = Range(value, value)
        epochs = (reader.number("epochs", 1, 10_000, kind=int),)
        batch_sizes = (reader.number("batch_size", 1, 65_536, 128, kind=int),)
    per_epoch = reader.number("reports_per_epoch", 1, 100, 1, kind=int) if searchable else 1
    per_report = reader.number("epochs_per_report", 1, 10_000, 1, kind=int) if searchable else 1
    if per_epoch > 1 and per_report > 1:
        reader.fail(reader.path("epochs_per_report"), "cannot be combined with reports_per_epoch above 1")
    settings = TrainSettings(
        epochs=max(epochs),
        batch_size=max(batch_sizes),
        lr=(lr.low * lr.high) ** 0.5 if lr.log else (lr.low + lr.high) / 2,
        weight_decay=reader.number("weight_decay", 0.0, 1.0, 5e-4),
        schedule=reader.choice("schedule", SCHEDULES, "onecycle"),
        subset=reader.number("subset", 1, 10**9, None, kind=int),
        reports_per_epoch=per_epoch,
        epochs_per_report=per_report,
    )
    reader.done()
    search = TrainSearch(
        lr if lr.low != lr.high else None,
        epochs if len(epochs) > 1 else (),
        batch_sizes if len(batch_sizes) > 1 else (),
    )
    return settings, search


def _ops(pol: _Reader, known: dict) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """``ops`` (all, or an allow-list) and ``exclude`` (a deny-list) of the ``policy`` section."""
    ops = pol.take("ops", (list, str), "all")
    if ops == "all":
        ops = None
    elif isinstance(ops, str):
        pol.fail("policy.ops", f"expected 'all' or a list of op names, got {ops!r}")
    else:
        for index, op in enumerate(ops):
            if op not in known:
                pol.fail(f"policy.ops[{index}]", f"unknown op {op!r}; known ops: {', '.join(known)}")
        if len(set(ops)) != len(ops):
            pol.fail("policy.ops", f"expected distinct op names, got {ops}")
        ops = tuple(ops)
    exclude = pol.names("exclude", tuple(known), "op", [])
    for index, op in enumerate(exclude):
        if ops is not None and op not in ops:
            pol.fail(
                f"policy.exclude[{index}]", f"{op!r} is not in policy.ops, so there is nothing to exclude"
            )
    if not set(ops or known) - set(exclude):
        pol.fail("policy.exclude", "excludes every op of policy.ops; leave at least one")
    return ops, exclude


def _policy(pol: _Reader, known: dict) -> PolicySpace:
    """The ``policy`` section; see :class:`PolicySpace`. ``{slots: N, ops: ...}`` alone means slots."""
    structure = pol.choice("structure", tuple(STRUCTURES), "slots")
    for other, keys in STRUCTURES.items():
        for key in keys:
            if key in pol.raw and key not in STRUCTURES[structure]:
                pol.fail(f"policy.{key}", f"belongs to structure {other}, not {structure} (policy.structure)")
    ops, exclude = _ops(pol, known)
    erasing = None
    if "erasing" in pol.raw:
        sub = pol.sub("erasing")
        p, size = sub.range("p", *_span(PROBABILITY)), sub.range("size", *_span(ERASING_SIZE))
        erasing = ErasingSpace(p, size)
        sub.done()
    policy = PolicySpace(ops=ops, structure=structure, exclude=exclude, erasing=erasing)
    if structure == "slots":
        policy = replace(policy, slots=pol.number("slots", 0, 16, kind=int))
    elif structure == "subpolicies":
        count, length = pol.number("subpolicies", 1, 32, kind=int), pol.number("length", 1, 8, kind=int)
        policy = replace(policy, subpolicies=count, length=length)
    elif structure == "randaugment":
        n, m = pol.int_range("n", *_span(RANDAUGMENT_N)), pol.range("m", *_span(MAGNITUDE))
        policy = replace(policy, n=n, m=m)
    pol.done()
    return policy


def _mixing(mix: _Reader) -> MixSpace:
    """The ``mixing`` section; see :class:`MixSpace`."""
    kinds = mix.names("kinds", MIX_KINDS, "mixing kind")
    if not kinds:
        mix.fail("mixing.kinds", f"expected a non-empty list of {', '.join(MIX_KINDS)}")
    if kinds == ("none",):
        mix.done()
        return MixSpace()
    settings = MixSpace(kinds, mix.range("p", *_span(PROBABILITY)), mix.range("alpha", *_span(MIX_ALPHA)))
    mix.done()
    return settings


def _kinds(reader: _Reader, key: str, known: tuple[str, ...], default: str) -> tuple[str, ...]:
    """One name or a non-empty list of distinct ones, each in ``known``."""
    value = reader.take(key, (list, str), default)
    values = (value,) if isinstance(value, str) else tuple(value)
    for index, item in enumerate(values):
        if item not in known:
            where = reader.path(key) if isinstance(value, str) else f"{reader.path(key)}[{index}]"
            reader.fail(where, f"expected one of {', '.join(known)}, got {item!r}")
    if not values or len(set(values)) != len(values):
        reader.fail(reader.path(key), f"expected a name or a non-empty list of distinct names, got {value!r}")
    return values


def _schedule(reader: _Reader) -> ScheduleSpace:
    """The ``schedule`` section; see :class:`ScheduleSpace` and augsearch/schedule.py. A setting of a
    kind the section does not list is refused (it would be searched for nothing)."""
    kinds = _kinds(reader, "kind", SEARCHED_KINDS, "constant")
    owners = {"start": "linear", "end": "linear"}
    owners |= dict.fromkeys(("initial", "signal", "target", "step", "interval"), "adaptive")
    for key, kind in owners.items():
        if key in reader.raw and kind not in kinds:
            reader.fail(reader.path(key), f"belongs to schedule kind {kind}, not listed in schedule.kind")
    settings = ScheduleSpace(kinds=kinds, scale_p=reader.take("scale_p", bool, False))
    if "linear" in kinds:
        start = reader.range("start", *_span(STRENGTH)) if "start" in reader.raw else settings.start
        end = reader.range("end", *_span(STRENGTH)) if "end" in reader.raw else settings.end
        settings = replace(settings, start=start, end=end)
    if "adaptive" in kinds:
        signals = _kinds(reader, "signal", SIGNALS, "agreement")
        targets: dict[str, Range] = {}
        if "target" in reader.raw:
            sub = reader.sub("target")
            for signal in signals:
                if signal in sub.raw:
                    targets[signal] = sub.range(signal, *_span(TARGET_BOUNDS[signal]))
            sub.done()
        for signal in signals:
            targets.setdefault(signal, Range(DEFAULT_TARGETS[signal], DEFAULT_TARGETS[signal]))
        settings = replace(
            settings,
            initial=reader.range("initial", *_span(STRENGTH))
            if "initial" in reader.raw
            else settings.initial,
            signals=signals,
            targets=targets,
            step=reader.range("step", *_span(STRENGTH_STEP)) if "step" in reader.raw else settings.step,
            interval=reader.int_range("interval", int(CONTROL_INTERVAL.low), int(CONTROL_INTERVAL.high))
            if "interval" in reader.raw
            else settings.interval,
        )
    reader.done()
    return settings


def _flags(reader: _Reader, key: str) -> tuple[bool, ...]:
    """``true``, ``false`` or a list of distinct ones to choose from (a categorical parameter)."""
    value = reader.take(key, (bool, list), False)
    values = value if isinstance(value, list) else [value]
    for index, item in enumerate(values):
        if not isinstance(item, bool):
            reader.fail(f"{reader.where}.{key}[{index}]", f"expected true or false, got {item!r}")
    if not values or len(set(values)) != len(values):
        reader.fail(f"{reader.where}.{key}", f"expected true, false or a list of both, got {value!r}")
    return tuple(values)


def _synthesis(syn: _Reader) -> SynthesisSpace:
    """The ``synthesis`` section; see :class:`SynthesisSpace`. ``generator`` and ``source`` exclude each
    other; ``recipe`` and ``checkpoint`` belong to a generator."""
    if "source" in syn.raw and "generator" in syn.raw:
        syn.fail("synthesis.source", "give either generator or source, not both")
    source = syn.take("source", str, None)
    if source is not None and (not source.startswith("npz:") or not source[4:]):
        syn.fail("synthesis.source", f"expected npz:PATH, got {source!r}")
    generator = None if source is not None else syn.choice("generator", GENERATORS, "dcgan")
    if source is not None:
        for key in ("recipe", "checkpoint", "min_agreement", "samples"):
            if key in syn.raw:
                syn.fail(f"synthesis.{key}", "belongs to a generator, not to a source")
    recipe = GanRecipe()
    if "recipe" in syn.raw:
        rec = syn.sub("recipe")
        recipe = GanRecipe(
            epochs=rec.number("epochs", 1, 10_000, recipe.epochs, kind=int),
            batch_size=rec.number("batch_size", 2, 65_536, recipe.batch_size, kind=int),
            lr=rec.number("lr", 1e-6, 1.0, recipe.lr),
            z_dim=rec.number("z_dim", 1, 4096, recipe.z_dim, kind=int),
            width=rec.number("width", 1, 1024, recipe.width, kind=int),
            epoch_images=rec.number("epoch_images", 2, 10**9, recipe.epoch_images, kind=int),
        )
        rec.done()
    settings = SynthesisSpace(
        ratio=syn.range("ratio", *_span(SYNTHESIS_RATIO)),
        hard_labels=_flags(syn, "hard_labels") if "hard_labels" in syn.raw else (True,),
        augment=_flags(syn, "augment"),
        generator=generator,
        source=source,
        checkpoint=syn.take("checkpoint", str, None),
        recipe=recipe,
        min_agreement=syn.number("min_agreement", *_span(SYNTHESIS_AGREEMENT), 0.3),
        samples=syn.number("samples", 20, 100_000, 2000, kind=int),
    )
    syn.done()
    return settings


def _kd(reader: _Reader) -> KDSpace:
    """The ``kd`` section; see :class:`KDSpace`."""
    temperature = reader.range("temperature", *_span(TEMPERATURE))
    alpha = reader.range("alpha", *_span(KD_ALPHA))
    losses = reader.take("loss", (list, str), "hinton")
    losses = (losses,) if isinstance(losses, str) else tuple(losses)
    for loss in losses:
        if loss not in KD_LOSSES:
            reader.fail("kd.loss", f"expected {' or '.join(KD_LOSSES)} or a list of them, got {loss!r}")
    if not losses or len(set(losses)) != len(losses):
        reader.fail("kd.loss", f"expected a non-empty list of distinct losses, got {list(losses)}")
    if "dkd" not in losses and "beta" in reader.raw:
        reader.fail("kd.beta", "only the dkd loss has beta; add dkd to kd.loss or remove beta")
    beta = reader.range("beta", *_span(DKD_BETA)) if "dkd" in losses else None
    schedules = _kinds(reader, "temperature_schedule", TEMPERATURE_SCHEDULES, "constant")
    if "linear" not in schedules and "temperature_end" in reader.raw:
        reader.fail("kd.temperature_end", "only a linear kd.temperature_schedule has temperature_end")
    end = reader.range("temperature_end", *_span(TEMPERATURE)) if "linear" in schedules else None
    return KDSpace(temperature, alpha, losses, beta, schedules, end)


def parse_space(raw: Any, path: Path, sha256: str) -> Space:
    """Check a loaded YAML document and build a :class:`Space`; one-line :class:`UserError` otherwise."""
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
        pixels = (synthetic.train_size + synthetic.test_size) * synthetic.image_size**2 * synthetic.channels
        if pixels > MAX_SYNTHETIC_BYTES:
            syn.fail(
                "dataset.synthetic",
                f"{pixels / 2**30:.1f} GiB of images; expected at most {MAX_SYNTHETIC_BYTES / 2**30:g} GiB",
            )
    dataset = DataSettings(
        data.take("name", str),
        data.number("validation_fraction", 0.01, 0.5, 0.1),
        synthetic,
        labelled=data.number("labelled", 1, 10**9, None, kind=int),
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
        problem = stage_problem(name, args)
        if problem:
            stage.fail(f"fixed[{index}]", problem)
        fixed.append(Stage(name, args))

    if growth([(stage.name, stage.args) for stage in fixed]) > MAX_SIDE:
        top.fail("fixed", f"its Pad/PadIfNeeded stages add more than {MAX_SIDE} pixels to the image side")
    fixed_searched = top.take("fixed_searched", bool, False)
    if fixed_searched and not fixed:
        top.fail("fixed_searched", "there are no fixed stages to switch on or off; add some under fixed")
    policy = _policy(top.sub("policy"), OPS)
    mixing = _mixing(top.sub("mixing")) if "mixing" in top.raw else MixSpace()
    synthesis = _synthesis(top.sub("synthesis")) if "synthesis" in top.raw else None

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
        sampler_args=study.take("sampler_args", dict, {}),
        warm_starts=study.names("warm_starts", BASELINES, "baseline", []),
        warm_start_params=tuple(study.take("warm_start_params", list, [])),
    )
    study.done()
    _check_sampler_args(study, study_settings)
    _check_study_numbers(study, study_settings)
    if study_settings.sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
        study.fail(
            "study.sampler", "cmaes needs the cmaes package, which is not installed (pip install cmaes)"
        )
    warm = len(study_settings.warm_starts) + len(study_settings.warm_start_params)
    if warm > study_settings.trials:
        study.fail("study.warm_starts", f"{warm} warm starts but only {study_settings.trials} trials")

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
        base = top.sub("baselines")
        names = tuple(base.take("names", list, []))
        for name in names:
            if name not in ROWS:
                base.fail("baselines.names", f"unknown baseline {name!r}; known: {', '.join(ROWS)}")
        kinds = tuple(base.take("kd", list, ["fixed"]))
        if not kinds or any(kind not in KD_KINDS for kind in kinds):
            base.fail("baselines.kd", f"expected a list of {', '.join(KD_KINDS)}, got {kinds!r}")
        baselines = BaselineSettings(
            names,
            base.number("temperature", *_span(TEMPERATURE), 4.0),
            base.number("alpha", *_span(KD_ALPHA), 0.9),
            tuple(dict.fromkeys(kinds)),
        )
        base.done()

    trial, trial_search = _train(top.sub("trial"), searchable=True)
    schedule = _schedule(top.sub("schedule")) if "schedule" in top.raw else ScheduleSpace()
    space = Space(
        name=_space_name(top, path),
        description=top.take("description", str, ""),
        path=path,
        sha256=sha256,
        dataset=dataset,
        teacher=teacher,
        student=student_model,
        fixed=tuple(fixed),
        policy=policy,
        kd=kd,
        trial=trial,
        retrain=_train(top.sub("retrain"))[0],
        study=study_settings,
        proxy=proxy,
        baselines=baselines,
        fixed_searched=fixed_searched,
        mixing=mixing,
        trial_search=trial_search,
        schedule=schedule,
        synthesis=synthesis,
    )
    top.done()
    _check_warm_starts(space, study)
    return space


def _space_name(top: _Reader, path: Path) -> str:
    """The space's ``name:`` (default: the file's stem): the study's folder name unless ``--study``
    says otherwise, so one safe path component (augsearch/names.py)."""

    given = "name" in top.raw
    name = top.take("name", str, path.stem)
    problem = study_name_problem(name)
    if problem:
        top.fail("name", problem if given else f"{problem} (the file's name; add a name: key)")
    return name


def _check_sampler_args(study: _Reader, settings: StudySettings) -> None:
    """``study.sampler_args`` names must be keyword arguments of the Optuna sampler (values are checked
    when it is built); the seed is ``study.seed``'s."""
    import inspect

    import optuna

    classes = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "gp": "GPSampler"}
    accepted = set(inspect.signature(getattr(optuna.samplers, classes[settings.sampler])).parameters) - {
        "seed"
    }
    for key in settings.sampler_args:
        if key not in accepted:
            study.fail(
                f"study.sampler_args.{key}",
                f"not an argument of {classes[settings.sampler]}; it takes {', '.join(sorted(accepted))}",
            )


def _check_study_numbers(study: _Reader, settings: StudySettings) -> None:
    """Numbers in ``sampler_args`` and ``pruner_args`` within ±:data:`MAX_STUDY_ARGUMENT`: they count
    trials, candidates or steps (TPE's ``n_ei_candidates=10**9`` would make every ask draw a billion
    candidates), and nothing sensible needs more."""
    for section, args in (("sampler_args", settings.sampler_args), ("pruner_args", settings.pruner_args)):
        for key, value in args.items():
            values = value if isinstance(value, list) else [value]
            for item in values:
                if isinstance(item, (int, float)) and not abs(item) <= MAX_STUDY_ARGUMENT:
                    study.fail(
                        f"study.{section}.{key}",
                        f"expected values in [-{MAX_STUDY_ARGUMENT}, {MAX_STUDY_ARGUMENT}], got {item!r}",
                    )


def _channels(space: Space) -> int:
    """The image channels the space's dataset is known to have before it is loaded (grey Fashion-MNIST,
    synthetic data as specified), else 3: the catalogue's every op, checked again when enqueued."""
    if space.dataset.synthetic is not None:
        return space.dataset.synthetic.channels
    return 1 if space.dataset.name == "fashion-mnist" else 3


def _check_warm_starts(space: Space, study: _Reader) -> None:
    """Refuse a warm start the space cannot express exactly (augsearch/warmstart.py says why)."""
    screening = space.proxy.batches and space.proxy.skip_worst_fraction > 0
    warm = len(space.study.warm_starts) + len(space.study.warm_start_params)
    if screening and warm > space.proxy.startup_trials:
        study.fail(
            "study.warm_starts",
            f"{warm} warm starts need proxy.startup_trials "
            f">= {warm}, or the proxy could skip one before it trains",
        )
    for index, params in enumerate(space.study.warm_start_params):
        problem = params_problem(params, space, _channels(space))
        if problem:
            study.fail(f"study.warm_start_params[{index}]", problem)
    for index, name in enumerate(space.study.warm_starts):
        problem = warm_start_problem(name, space)
        if problem:
            study.fail(
                f"study.warm_starts[{index}]", f"this space cannot express baseline {name!r}: {problem}"
            )

"""Strict checks of the policy files augsearch reads (``augsearch validate FILE`` runs them): the allow-list.

Why an allow-list: ``A.from_dict`` builds whatever class a JSON file names, only warns about (and drops)
a misspelt argument, fills a missing ``p`` with 0.5 and accepts a 100,000-pixel ``Resize``. A policy file
is input from anywhere, so before albumentations sees it every transform is checked here:

- its ``__class_fullname__`` is a container (:data:`CONTAINERS`), ``NoOp``, an op of the catalogue
  (``augsearch/ops.py``) or a fixed stage a space may use (``augsearch/space.py``: ``FIXED_STAGES``);
- every argument name is a parameter of that class's ``__init__`` (``inspect.signature``);
- ``p`` is present and in [0, 1];
- the top is one ``Compose`` and nesting is at most :data:`MAX_DEPTH` levels below it;
- image-size arguments (:data:`SIZE_ARGUMENTS`) are numbers in [0, :data:`MAX_SIDE`].

The policy as data (``policy``: fixed stages, slot ops, sub-policies, RandAugment, TrivialAugment,
erasing), ``kd`` and ``mixing`` are checked too: known keys only, catalogue ops, probabilities and
magnitudes in [0, 1], the KD loss and its weights, the mixing kind, p and alpha.

Each refusal is one :class:`UserError` line: the file, the JSON path, what was expected.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

import albumentations as A

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
    SYNTHESIS_RATIO,
    TEMPERATURE,
    Bound,
)
from augsearch.errors import UserError
from augsearch.mixing import MIX_KINDS
from augsearch.ops import OPS
from augsearch.schedule import KINDS as SCHEDULE_KINDS
from augsearch.schedule import SIGNALS, TARGET_BOUNDS
from augsearch.settings import FIXED_STAGES, KD_LOSSES

CONTAINERS = ("Compose", "OneOf", "SomeOf", "Sequential")
# Levels below the top Compose: 1 for the ops of a searched policy, 2 for the OneOf/SomeOf of the
# RandAugment- and TrivialAugment-like baselines, 3 for AutoAugment-style sub-policies (a OneOf of
# Sequentials). Nothing augsearch writes goes deeper.
MAX_DEPTH = 3
MAX_SIDE = 4096  # pixels: far above any image augsearch trains on, far below an out-of-memory resize
SIZE_ARGUMENTS = frozenset(
    {"height", "width", "min_height", "min_width", "size", "padding", "max_size", "max_size_hw",
     "x_min", "y_min", "x_max", "y_max", "pad_height_divisor", "pad_width_divisor", "min_max_height"}
)  # fmt: skip


# Every argument of an allow-listed class whose value scales the work (or the memory) per image, with
# the inclusive bounds of each number in it (a number, a (low, high) pair, or a mapping of them, like
# Affine's scale). Albumentations checks types and order, not size: it accepts CoarseDropout with 10**7
# holes, a 99,999-pixel blur kernel, a 100,000-step grid or a SomeOf drawing a billion ops. The bounds
# are far above anything the catalogue (augsearch/ops.py) or a dataset recipe uses and far below a hang.
# fit_output / keep_size are pinned: an output that grows with its input, chained, grows exponentially.
WORK_BOUNDS: dict[tuple[str, str], tuple[float, float]] = {
    ("CoarseDropout", "num_holes_range"): (0, 64),  # the catalogue: up to 4
    ("CoarseDropout", "hole_height_range"): (0, MAX_SIDE),  # a fraction of the side, or pixels
    ("CoarseDropout", "hole_width_range"): (0, MAX_SIDE),
    ("GaussianBlur", "blur_limit"): (0, 63),  # kernel side in pixels; the catalogue: up to 9
    ("GaussianBlur", "sigma_limit"): (0, 32),  # blur_limit 0 derives the kernel from sigma
    ("MotionBlur", "blur_limit"): (0, 63),
    ("Sharpen", "kernel_size"): (0, 63),
    ("Sharpen", "sigma"): (0, 32),
    ("GridDistortion", "num_steps"): (1, 64),  # albumentations' default: 5
    ("Affine", "scale"): (0, 16),
    ("Affine", "translate_px"): (-MAX_SIDE, MAX_SIDE),
    ("Affine", "fit_output"): (False, False),
    ("Perspective", "scale"): (0, 1),
    ("Perspective", "fit_output"): (False, False),
    ("Perspective", "keep_size"): (True, True),
    ("Downscale", "scale_range"): (0.01, 1),
    ("SomeOf", "n"): (0, 64),
}
MAX_TRANSFORMS = 64  # children of one container, stages or ops of one list: augsearch writes at most 24
MAX_TRAJECTORY = 10_000  # per-epoch strengths of an exported schedule (augsearch/schedule.py)
# Pad's padding and PadIfNeeded's divisors each add to the image side, so the sum over a whole pipeline
# is bounded too: the output side then stays within max(input, MAX_SIDE) + 2 * MAX_SIDE.
GROWTH_ARGUMENTS = {"Pad": ("padding",), "PadIfNeeded": ("pad_height_divisor", "pad_width_divisor")}


def allowed_classes() -> frozenset[str]:
    """Every albumentations class name a policy file may hold."""
    return frozenset((*CONTAINERS, "NoOp", *OPS, *FIXED_STAGES))


def _sizes_fit(value: Any, depth: int = 0) -> bool:
    if value is None:
        return True
    if isinstance(value, (list, tuple)) and depth < 2:
        return all(_sizes_fit(item, depth + 1) for item in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_SIDE


def _numbers(value: Any, depth: int = 0) -> list[float] | None:
    """The numbers in a number, a list/tuple or a mapping of them (two levels at most); None if other."""
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict) and depth < 2:
        value = list(value.values())
    if isinstance(value, (list, tuple)) and depth < 2:
        found: list[float] = []
        for item in value:
            numbers = _numbers(item, depth + 1)
            if numbers is None:
                return None
            found += numbers
        return found
    return None


def work_problem(name: str, args: dict[str, Any]) -> str | None:
    """Why ``args`` ask ``name`` for too much work per image (see :data:`WORK_BOUNDS`), or None."""
    for (owner, key), (low, high) in WORK_BOUNDS.items():
        if owner != name or key not in args or args[key] is None:
            continue
        numbers = _numbers(args[key])
        if numbers is None or not all(low <= number <= high for number in numbers):
            bounds = f"expected values in [{low}, {high}] (a bound on the work per image)"
            return f"{name}.{key}: {bounds}, got {_short(args[key])}"
    return None


def growth(stages: list[tuple[str, dict[str, Any]]]) -> float:
    """How many pixels the ``(name, args)`` stages may add to the image side, by :data:`GROWTH_ARGUMENTS`."""
    total = 0.0
    for name, args in stages:
        for key in GROWTH_ARGUMENTS.get(name, ()):
            total += sum(_numbers(args.get(key) or 0) or [0])
    return total


def _short(value: Any) -> str:
    """``repr(value)``, cut to a readable length for a one-line message."""
    text = repr(value)
    return text if len(text) <= 120 else text[:120] + "..."


def argument_problem(name: str, args: dict[str, Any]) -> str | None:
    """Why ``args`` do not suit albumentations class ``name`` (an unknown argument name, an image size
    out of bounds), or None. Names are checked against the class's real ``__init__``."""
    accepted = [
        key
        for key, parameter in inspect.signature(getattr(A, name)).parameters.items()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    for key in args:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"it takes {', '.join(accepted)}"
            return f"{name} has no argument {key!r} ({hint})"
    for key in sorted(SIZE_ARGUMENTS & set(args)):
        if not _sizes_fit(args[key]):
            return f"{name}.{key}: expected sizes in [0, {MAX_SIDE}] pixels, got {_short(args[key])}"
    return work_problem(name, args)


def stage_problem(name: str, args: dict[str, Any]) -> str | None:
    """Why a space's fixed stage ``name(**args)`` is refused, or None: the same allow-list and
    argument checks as a policy file (so whatever a space can write, ``load_policy`` reads back),
    then albumentations' own validation of the values."""
    if not isinstance(getattr(A, name, None), type):
        return f"unknown albumentations class {name!r}"
    if name not in FIXED_STAGES and name not in OPS:
        allowed = ", ".join(FIXED_STAGES)
        return f"albumentations class {name!r} is not allowed as a fixed stage; allowed: {allowed}, or an op"
    problem = argument_problem(name, args)
    if problem:
        return problem
    try:
        getattr(A, name)(**args)
    except Exception as error:  # albumentations/pydantic raise many kinds; all mean bad arguments
        reason = " ".join(str(error).split()).split(" For further information")[0]  # pydantic's link
        return f"{name} refuses these arguments: {reason[:300]}"
    return None


def _fail(file: Path, where: str, what: str) -> None:
    raise UserError(f"{file}: {where}: {what if len(what) <= 400 else what[:400] + '...'}")


def _check_transform(node: Any, where: str, depth: int, file: Path) -> None:
    if not isinstance(node, dict):
        _fail(file, where, f"expected a transform mapping, got {type(node).__name__}")
    name = node.get("__class_fullname__")
    if not isinstance(name, str):
        _fail(file, f"{where}.__class_fullname__", "missing; expected an albumentations class name")
    if name not in allowed_classes():
        _fail(
            file,
            f"{where}.__class_fullname__",
            f"class {name!r} is not allowed; expected {', '.join(CONTAINERS)}, NoOp, a catalogue op "
            f"({', '.join(OPS)}) or a fixed stage ({', '.join(FIXED_STAGES)})",
        )
    if (depth == 0) != (name == "Compose"):
        _fail(file, where, "expected one Compose at the top and OneOf/SomeOf/Sequential below it")
    if depth > MAX_DEPTH:
        _fail(file, where, f"nested {depth} levels deep; augsearch writes at most {MAX_DEPTH}")
    args = {key: value for key, value in node.items() if key != "__class_fullname__"}
    p = args.get("p")
    if "p" not in args:
        _fail(file, f"{where}.p", "missing; every transform needs its probability p")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        _fail(file, f"{where}.p", f"expected a probability in [0, 1], got {p!r}")
    problem = argument_problem(name, args)
    if problem:
        _fail(file, where, problem)
    if name in CONTAINERS:
        children = args.get("transforms")
        if not isinstance(children, list):
            _fail(file, f"{where}.transforms", "expected a list of transforms")
        if len(children) > MAX_TRANSFORMS:
            _fail(
                file, f"{where}.transforms", f"{len(children)} transforms; expected at most {MAX_TRANSFORMS}"
            )
        for index, child in enumerate(children):
            _check_transform(child, f"{where}.transforms[{index}]", depth + 1, file)


def check_pipeline(pipeline: Any, file: Path) -> None:
    """``document["albumentations"]`` (what ``A.to_dict`` wrote) against the allow-list."""
    if not isinstance(pipeline, dict) or "transform" not in pipeline:
        _fail(file, "albumentations", 'expected the mapping A.to_dict writes, with a "transform" key')
    extra = sorted(set(pipeline) - {"__version__", "transform"})
    if extra:
        _fail(file, f"albumentations.{extra[0]}", 'unknown key; expected only "__version__" and "transform"')
    _check_transform(pipeline["transform"], "albumentations.transform", 0, file)
    added = growth(_stages(pipeline["transform"]))
    if added > MAX_SIDE:
        _fail(
            file,
            "albumentations.transform",
            f"its Pad/PadIfNeeded stages add up to {added:g} pixels; expected at most {MAX_SIDE}",
        )


def _stages(node: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every transform of an already checked pipeline, containers included, as ``(name, args)``."""
    found, stack = [], [node]
    while stack:
        item = stack.pop()
        found.append((item["__class_fullname__"], item))
        stack.extend(item.get("transforms", []) if item["__class_fullname__"] in CONTAINERS else [])
    return found


def _check_number(value: Any, bound: Bound, where: str, file: Path) -> None:
    """A policy setting inside its bound (augsearch/bounds.py, the same the space parser uses)."""
    if not bound.holds(value):
        kind = "an integer" if bound.integer else "a number"
        _fail(file, where, f"expected {kind} in [{bound.low}, {bound.high}], got {value!r}")


def _check_ops(ops: Any, where: str, file: Path, triples: bool = True) -> None:
    """A list of catalogue ops: ``{name, p, magnitude}`` mappings (``triples``) or plain names."""
    if not isinstance(ops, list):
        _fail(file, where, "expected a list of ops")
    if len(ops) > MAX_TRANSFORMS:
        _fail(file, where, f"{len(ops)} ops; expected at most {MAX_TRANSFORMS}")
    for index, op in enumerate(ops):
        name = op.get("name") if triples and isinstance(op, dict) else op
        if not isinstance(name, str) or name not in OPS:
            at = f"{where}[{index}].name" if triples else f"{where}[{index}]"
            _fail(file, at, f"expected a catalogue op ({', '.join(OPS)}), got {name!r}")
        if triples:
            for key, bound in (("p", PROBABILITY), ("magnitude", MAGNITUDE)):
                _check_number(op.get(key), bound, f"{where}[{index}].{key}", file)


def _check_mapping(value: Any, where: str, keys: tuple[str, ...], file: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(file, where, f"expected a mapping with {', '.join(keys)}")
    for key in keys:
        if key not in value:
            _fail(file, f"{where}.{key}", "missing")
    extra = sorted(set(value) - set(keys))
    if extra:
        _fail(file, f"{where}.{extra[0]}", f"unknown key; expected {', '.join(keys)}")
    return value


def _check_policy_section(section: Any, file: Path, version: int) -> None:
    """``document["policy"]``: the policy as data (``build_transform`` input): fixed stages, slot ops,
    sub-policies, RandAugment, TrivialAugment, erasing (and, in version 1, perhaps ``mix``)."""
    known = ("fixed", "ops", "subpolicies", "randaugment", "trivial", "erasing") + (
        ("mix",) if version < 2 else ()
    )
    if not isinstance(section, dict):
        _fail(file, "policy", "expected a mapping with fixed and ops")
    for key in ("fixed", "ops"):
        if not isinstance(section.get(key), list):
            _fail(file, f"policy.{key}", f"expected a list, got {section.get(key)!r}")
    extra = sorted(set(section) - set(known))
    if extra:
        _fail(file, f"policy.{extra[0]}", f"unknown key; expected {', '.join(known)}")
    for key in ("fixed", "subpolicies"):
        if len(section.get(key) or ()) > MAX_TRANSFORMS:
            _fail(file, f"policy.{key}", f"{len(section[key])} entries; expected at most {MAX_TRANSFORMS}")
    for index, stage in enumerate(section["fixed"]):
        if not isinstance(stage, dict) or not isinstance(stage.get("args", {}), dict):
            _fail(file, f"policy.fixed[{index}]", "expected {name, args}")
        problem = stage_problem(str(stage.get("name")), stage.get("args", {}))
        if problem:
            _fail(file, f"policy.fixed[{index}]", problem)
    _check_ops(section["ops"], "policy.ops", file)
    subpolicies = section.get("subpolicies", [])
    if not isinstance(subpolicies, list):
        _fail(file, "policy.subpolicies", "expected a list of sub-policies (lists of ops)")
    for index, sub in enumerate(subpolicies):
        _check_ops(sub, f"policy.subpolicies[{index}]", file)
        if not sub:
            _fail(file, f"policy.subpolicies[{index}]", "expected at least one op")
    if "randaugment" in section:
        ra = _check_mapping(section["randaugment"], "policy.randaugment", ("n", "magnitude", "ops"), file)
        _check_number(ra["n"], RANDAUGMENT_N, "policy.randaugment.n", file)
        _check_number(ra["magnitude"], MAGNITUDE, "policy.randaugment.magnitude", file)
        _check_ops(ra["ops"], "policy.randaugment.ops", file, triples=False)
    if "trivial" in section:
        _check_ops(
            _check_mapping(section["trivial"], "policy.trivial", ("ops",), file)["ops"],
            "policy.trivial.ops",
            file,
            triples=False,
        )
    if "erasing" in section:
        erasing = _check_mapping(section["erasing"], "policy.erasing", ("p", "size"), file)
        _check_number(erasing["p"], PROBABILITY, "policy.erasing.p", file)
        _check_number(erasing["size"], ERASING_SIZE, "policy.erasing.size", file)
    if "mix" in section:
        _check_mixing(section["mix"], "policy.mix", file)


def _check_mixing(mixing: Any, where: str, file: Path) -> None:
    """Batch mixing: ``{kind, p, alpha}`` (augsearch/mixing.py)."""
    _check_mapping(mixing, where, ("kind", "p", "alpha"), file)
    if mixing["kind"] not in MIX_KINDS:
        _fail(file, f"{where}.kind", f"expected one of {', '.join(MIX_KINDS)}, got {mixing['kind']!r}")
    _check_number(mixing["p"], PROBABILITY, f"{where}.p", file)
    _check_number(mixing["alpha"], MIX_ALPHA, f"{where}.alpha", file)


def _check_kd(kd: Any, file: Path) -> None:
    if not isinstance(kd, dict):
        _fail(file, "kd", "expected a mapping with loss, temperature, alpha (and beta for dkd)")
    loss = kd.get("loss", "hinton")
    if loss not in KD_LOSSES:
        _fail(file, "kd.loss", f"expected one of {', '.join(KD_LOSSES)}, got {loss!r}")
    bounds = {"temperature": TEMPERATURE, "alpha": KD_ALPHA}
    if loss == "dkd":
        bounds["beta"] = DKD_BETA
    elif "beta" in kd:
        _fail(file, "kd.beta", f"only the dkd loss has beta (loss {loss!r})")
    for key, bound in bounds.items():
        _check_number(kd.get(key), bound, f"kd.{key}", file)
    if "temperature_end" in kd:  # a linear temperature schedule (KDSettings.at_epoch)
        _check_number(kd["temperature_end"], TEMPERATURE, "kd.temperature_end", file)


def _check_schedule(schedule: Any, file: Path) -> None:
    """The strength schedule (schema_version 3, augsearch/schedule.py): the keys its kind uses, each in
    its bound; the set-point in the bound of the schedule's signal; a trajectory of strengths."""
    keys = {
        "constant": ("kind",),
        "linear": ("kind", "start", "end"),
        "adaptive": ("kind", "initial", "signal", "target", "step", "interval"),
        "replay": ("kind", "trajectory"),
    }
    if not isinstance(schedule, dict):
        _fail(file, "schedule", "expected a mapping with kind and its settings")
    kind = schedule.get("kind")
    if kind not in keys:
        _fail(file, "schedule.kind", f"expected one of {', '.join(SCHEDULE_KINDS)}, got {kind!r}")
    optional = ("scale_p",) + (("trajectory",) if kind == "adaptive" else ())
    present = {key: value for key, value in schedule.items() if key not in optional}
    _check_mapping(present, "schedule", keys[kind], file)
    if kind == "adaptive":
        if schedule["signal"] not in SIGNALS:
            got = schedule["signal"]
            _fail(file, "schedule.signal", f"expected one of {', '.join(SIGNALS)}, got {got!r}")
        _check_number(schedule["target"], TARGET_BOUNDS[schedule["signal"]], "schedule.target", file)
        _check_number(schedule["step"], STRENGTH_STEP, "schedule.step", file)
        _check_number(schedule["interval"], CONTROL_INTERVAL, "schedule.interval", file)
    for key in ("start", "end", "initial"):
        if key in present:
            _check_number(schedule[key], STRENGTH, f"schedule.{key}", file)
    if "trajectory" in schedule:
        points = schedule["trajectory"]
        if not isinstance(points, list) or not points or len(points) > MAX_TRAJECTORY:
            _fail(file, "schedule.trajectory", f"expected a list of 1 to {MAX_TRAJECTORY} strengths")
        for index, value in enumerate(points):
            _check_number(value, STRENGTH, f"schedule.trajectory[{index}]", file)
    if not isinstance(schedule.get("scale_p", False), bool):
        _fail(file, "schedule.scale_p", f"expected true or false, got {schedule['scale_p']!r}")


def check_policy_document(document: dict[str, Any], file: Path) -> None:
    """All of a policy file's content checks, run by ``load_policy`` before ``A.from_dict``; the
    ``schema_version`` (already checked to be one this augsearch reads) decides which keys there are."""
    version = document["schema_version"]
    known = ("format", "schema_version", "albumentations", "policy", "kd", "provenance")
    known += ("mixing",) if version >= 2 else ()
    known += ("schedule",) if version >= 3 else ()
    known += ("synthesis",) if version >= 3 else ()
    extra = sorted(set(document) - set(known))
    if extra:
        _fail(file, extra[0], f"unknown key for schema_version {version}; expected {', '.join(known)}")
    if not isinstance(document.get("provenance", {}), dict):
        _fail(file, "provenance", f"expected a mapping, got {type(document['provenance']).__name__}")
    check_pipeline(document.get("albumentations"), file)
    _check_policy_section(document.get("policy"), file, version)
    _check_kd(document.get("kd"), file)
    if version >= 2:
        if "mixing" not in document:
            _fail(file, "mixing", "missing; schema_version 2 files hold the batch mixing ({kind, p, alpha})")
        _check_mixing(document["mixing"], "mixing", file)
    if "schedule" in document:
        _check_schedule(document["schedule"], file)
    if "synthesis" in document:
        _check_synthesis(document["synthesis"], file)


def _check_synthesis(synthesis: Any, file: Path) -> None:
    """``synthesis``: ``{ratio, hard_labels, augment, source}`` (augsearch/synthesis.py); ``source`` is the
    generator's or the user's images' provenance (a mapping) or null."""
    _check_mapping(synthesis, "synthesis", ("ratio", "hard_labels", "augment", "source"), file)
    _check_number(synthesis["ratio"], SYNTHESIS_RATIO, "synthesis.ratio", file)
    for key in ("hard_labels", "augment"):
        if not isinstance(synthesis[key], bool):
            _fail(file, f"synthesis.{key}", f"expected true or false, got {synthesis[key]!r}")
    if synthesis["source"] is not None and not isinstance(synthesis["source"], dict):
        _fail(
            file, "synthesis.source", f"expected a mapping or null, got {type(synthesis['source']).__name__}"
        )

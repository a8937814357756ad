"""The ``kd-tuned`` baseline: the best KD settings a KD-only search finds with the main search's budget.

Why: a practitioner who distils tunes T and α anyway (a grid on a validation split is the common
advice). The honest rival of an augmentation search is therefore not the baseline at Hinton's T=4, α=0.9
but the same student with the usual augmentation and KD settings tuned with the *same number of trials*.
Reviewers of augmentation and KD papers ask that every compared method get the same tuning budget.

The KD-only search is the main study's space with the augmentation held fixed: the fixed stages
(``standard``), or no augmentation at all (``none``) when the main space lets the search switch the fixed
stages off (``fixed_searched: true``); no op slots, no batch mixing, no strength schedule, no synthetic
images, no T. stddev proxy (a function of the augmentation alone, the same for every trial here); the same
dataset, split, seed, student, trial budget, sampler, pruner, KD ranges and losses, and warm start (the
fixed-KD baseline, when the main study warm-starts). Its teacher is the main study's, named by file in the
derived space (``teacher.checkpoint``), so the KD-only study is an ordinary study: ``augsearch report`` and
the dashboard open it. It is stored beside the main study as ``<study>-kd-tuned`` and run through the
trials' own machinery (``study.open_study``, ``trials.optimize``, ``workspace.trial_context``).

An existing study is reused instead of running one when it is compatible: same dataset, split and
seed, the same teacher weights (sha256 of the teacher file), the same student and trial budget, the
wanted augmentation, nothing but KD searched, and at least as many finished trials as the main study;
its best trial among its first N finished ones is taken, N being the main study's finished trials, so
that neither search gets more tries than the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import yaml

from augsearch import files, progress
from augsearch.attributes import POLICY_JSON
from augsearch.baselines import Candidate
from augsearch.bounded import parse_yaml, read_bounded
from augsearch.errors import UserError
from augsearch.export import export_best
from augsearch.fair import KD_TUNED
from augsearch.names import STUDY_NAME
from augsearch.owner import own_study, release_study
from augsearch.policy import Policy, build_transform, trial_policy
from augsearch.settings import Space, Stage
from augsearch.space import load_space
from augsearch.storage import load_stored_study, local_storage, requeue_interrupted
from augsearch.study import make_objective, open_study
from augsearch.teacher import cache_key, checkpoint_sha256
from augsearch.trials import DONE, finished, optimize
from augsearch.warmstart import enqueue_warm_starts
from augsearch.workspace import Workspace, trial_context

SUFFIX = "-kd-tuned"


@dataclass(frozen=True)
class KDTuned:
    """Which KD-only study the ``kd-tuned`` row came from, and how."""

    study: str
    trials: int  # finished trials counted: the main study's
    trial: int  # the best among them
    validation_accuracy: float
    kd: dict[str, Any]
    augmentation: str  # "none" or "standard"
    reused: bool  # an existing study had the trials: none was run now
    ran: int  # trials run now


def kd_study_name(main: str) -> str:
    """``<main>-kd-tuned``, shortened to stay one safe study name (augsearch/names.py)."""
    name = main + SUFFIX
    return name if STUDY_NAME.fullmatch(name) else main[: 64 - len(SUFFIX)] + SUFFIX


def wanted_fixed(space: Space) -> tuple[Stage, ...]:
    """The KD-only search's augmentation: none if the main search could switch the fixed stages off."""
    return () if space.fixed_searched else space.fixed


def kd_only_raw(space: Space, name: str, teacher_file: Path) -> dict[str, Any]:
    """The derived space (see the module docstring) as YAML data, from the main space's own file."""
    raw = parse_yaml(read_bounded(space.path), space.path)
    raw["name"] = name
    kind = "none" if space.fixed_searched else "standard"
    raw["description"] = (
        f"KD-only search for the kd-tuned baseline of space {space.name}: augmentation fixed to {kind}, "
        "only the KD settings searched, the same trial budget"
    )
    if space.fixed_searched:
        raw["fixed"] = []  # the stages as the file writes them otherwise: safe_dump would tag a tuple
    raw.pop("fixed_searched", None)
    for section in ("mixing", "schedule", "synthesis"):  # augmentation, held fixed here like the ops
        raw.pop(section, None)
    raw["policy"] = {"slots": 0}
    raw["proxy"] = {"batches": 0}
    raw["teacher"] = {**raw["teacher"], "checkpoint": str(teacher_file.resolve())}
    study = dict(raw["study"])
    if study.get("warm_starts"):
        study["warm_starts"] = [kind]
    raw["study"] = study
    raw.pop("baselines", None)
    return raw


def _teacher_file(space: Space, study: optuna.Study, workspace: Workspace, studies_dir: Path) -> Path:
    """The file holding a study's teacher weights: its checkpoint, else augsearch's cached teacher."""
    recorded = study.user_attrs.get("teacher_checkpoint") or space.teacher.checkpoint
    if recorded:
        return Path(recorded)
    key = cache_key(space, workspace.data, int(study.user_attrs.get("seed", workspace.seed)))
    return studies_dir / "teachers" / f"{key}.pt"


def problem(
    study: optuna.Study, workspace: Workspace, dataset: str, teacher_sha256: str, studies_dir: Path
) -> str | None:
    """Why ``study`` cannot stand for the KD-only search of ``workspace``'s space, or None."""
    attrs, main = study.user_attrs, workspace.space
    if attrs.get("dataset") != dataset or attrs.get("seed") != workspace.seed:
        return "another dataset or seed"
    try:
        space = load_space(str(attrs.get("space")))
    except UserError:
        return "its space file is gone"
    if space.sha256 != attrs.get("space_sha256"):
        return "its space file changed"
    if space.dataset != main.dataset or space.student != main.student:
        return "another split or student"
    if space.trial != main.trial or space.trial_search != main.trial_search:
        return "another trial budget"
    policy = space.policy
    if space.fixed_searched or policy.structure != "slots" or policy.slots or policy.erasing:
        return "it searches augmentation"
    if space.mixing.kinds != ("none",) or space.fixed != wanted_fixed(main):
        return "another augmentation"
    try:
        if checkpoint_sha256(space, _teacher_file(space, study, workspace, studies_dir)) != teacher_sha256:
            return "another teacher"
    except UserError:
        return "its teacher file is unreadable"
    return None


def best_of_first(study: optuna.Study, trials: int) -> optuna.trial.FrozenTrial | None:
    """The best complete trial among the study's first ``trials`` finished ones (by number)."""
    done = sorted((t for t in study.get_trials(deepcopy=False) if t.state in DONE), key=lambda t: t.number)
    complete = [t for t in done[:trials] if t.value is not None and POLICY_JSON in t.user_attrs]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def _stored_studies(studies_dir: Path, first: str) -> list[str]:
    """Study folders in ``studies_dir`` (``first`` first): SQLite ones, and ``first`` however stored.
    Other journal files are left alone: opening one repairs a torn record (augsearch/journal.py), which
    must not happen to a study that workers may be writing while we only look."""
    if not studies_dir.is_dir():
        return []
    names = sorted(
        folder.name
        for folder in studies_dir.iterdir()
        if (folder / "study.db").is_file() or (folder.name == first and (folder / "journal.log").is_file())
    )
    return sorted(names, key=lambda name: name != first)


def find_compatible(
    workspace: Workspace, main: optuna.Study, teacher_sha256: str, studies_dir: Path, trials: int
) -> optuna.Study | None:
    """An existing KD-only study with ``trials`` finished trials that fits, the derived one first."""
    dataset = main.user_attrs["dataset"]
    for name in _stored_studies(studies_dir, kd_study_name(main.study_name)):
        if name == main.study_name:
            continue
        try:
            study = load_stored_study(name, studies_dir, None)
        except (UserError, KeyError, ValueError, RuntimeError):
            continue  # not a study augsearch can read: not a candidate
        if finished(study) >= trials and not problem(study, workspace, dataset, teacher_sha256, studies_dir):
            return study
    return None


def run_kd_study(
    main: optuna.Study,
    workspace: Workspace,
    teacher: Any,
    teacher_file: Path,
    studies_dir: Path,
    storage: str | None,
    trials: int,
) -> tuple[optuna.Study, int]:
    """Create or resume ``<main>-kd-tuned`` and run it to ``trials`` finished trials, as ``run`` runs a
    search (owner lock, warm start, interrupted trials re-queued); returns it and the trials run now."""
    name = kd_study_name(main.study_name)
    folder = studies_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "space.yaml"
    files.write_text(path, yaml.safe_dump(kd_only_raw(workspace.space, name, teacher_file), sort_keys=False))
    space = load_space(str(path.resolve()))  # recorded by the study: absolute, so any folder can reopen it
    url = storage or local_storage(folder, 1)
    own_study(name, url)
    try:
        study = open_study(name, url, space, main.user_attrs["dataset"], workspace.seed,
                           teacher_sha256=checkpoint_sha256(space, None))  # fmt: skip
    except UserError as error:
        raise UserError(f"KD-only study '{name}' cannot be resumed ({error}); move {folder} aside") from None
    enqueue_warm_starts(study, space, workspace.data.channels)
    requeue_interrupted(study, owned=True)
    for key, value in (
        ("student", space.student), ("device", workspace.runtime.describe()),
        ("teacher_checkpoint", str(teacher_file.resolve())), ("target_trials", trials),
        ("kd_tuned_for", main.study_name), ("teacher", main.user_attrs.get("teacher")),
    ):  # fmt: skip
        study.set_user_attr(key, value)
    context = trial_context(replace(workspace, space=space), teacher, folder)
    with progress.bar(total=trials, initial=min(finished(study), trials), desc=f"{KD_TUNED} trials") as bar:
        ran = optimize(study, make_objective(context), trials, None, [lambda *_: bar.update(1)])
    release_study(name, url)
    if any(t.value is not None for t in study.get_trials(deepcopy=False)):
        export_best(study, url, folder / "best_policy.json")
    return study, ran


def kd_tuned(
    main: optuna.Study,
    workspace: Workspace,
    teacher: Any,
    teacher_file: Path,
    studies_dir: Path,
    storage: str | None = None,
) -> tuple[Candidate, KDTuned]:
    """The ``kd-tuned`` row: reuse a compatible KD-only study, else run ``<main>-kd-tuned``; then the best
    of its first N finished trials (N: the main study's) with the wanted augmentation."""
    trials = finished(main)
    if trials < 1:
        raise UserError(f"{KD_TUNED}: study '{main.study_name}' has no finished trial to match")
    teacher_sha256 = checkpoint_sha256(workspace.space, teacher_file)
    study, ran = find_compatible(workspace, main, teacher_sha256, studies_dir, trials), 0
    reused = study is not None
    if study is None:
        study, ran = run_kd_study(main, workspace, teacher, teacher_file, studies_dir, storage, trials)
    best = best_of_first(study, trials)
    if best is None:
        raise UserError(f"{KD_TUNED}: KD-only study '{study.study_name}' has no completed trial")
    kd = trial_policy(best).kd
    fixed = wanted_fixed(workspace.space)
    transform = build_transform(Policy(fixed, (), kd)) if fixed else None
    info = KDTuned(
        study.study_name, trials, best.number, float(best.value), kd.to_dict(),
        "standard" if fixed else "none", reused, ran,
    )  # fmt: skip
    return Candidate(KD_TUNED, transform, kd, kind="baseline", kd_source=KD_TUNED), info


def as_dict(info: KDTuned) -> dict[str, Any]:
    return asdict(info)

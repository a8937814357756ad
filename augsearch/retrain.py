"""The final retrain: fresh students trained in full with each candidate policy, then tested once.

Each (policy, seed) is one *run*: the student trains on the whole training split (the trials' subset
plus the validation part) for the retrain budget and is evaluated on the test split, which nothing
before this reads. A run checkpoints after every epoch under ``<study>/retrain/`` and a run found
finished there is never redone, so a killed ``augsearch retrain`` picks up where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import albumentations as A
import optuna
import torch
from torch import nn

from augsearch import files, progress
from augsearch.attributes import POLICY_JSON
from augsearch.baselines import Candidate, baseline
from augsearch.control import StrengthControl, run_transform, strength_control
from augsearch.distill import predict, train_student
from augsearch.loader import make_loader
from augsearch.models import build_model
from augsearch.policy import KDSettings, Policy, build_transform, trial_policy
from augsearch.reuse import clean_outputs
from augsearch.runtime import seed_everything
from augsearch.settings import TrainSettings
from augsearch.stats import expected_calibration_error, negative_log_likelihood
from augsearch.synthesis import Source, synthesizer_for
from augsearch.workspace import Workspace


def searched(study: optuna.Study, top: int = 1) -> list[Candidate]:
    """The best ``top`` complete trials as candidates, each with its own policy and KD settings."""
    trials = [
        t for t in study.get_trials(deepcopy=False) if t.value is not None and POLICY_JSON in t.user_attrs
    ]
    ranked = sorted(trials, key=lambda t: (-t.value, t.number))[:top]
    out = []
    for trial in ranked:
        policy = trial_policy(trial)
        name = "searched" if trial.number == ranked[0].number else f"searched #{len(out) + 1}"
        label = f"{name} (trial {trial.number})"
        out.append(
            Candidate(
                label,
                build_transform(policy),
                policy.kd,
                trial.number,
                policy.mix,
                synthesis=policy.synthesis,
                policy=policy,
            )
        )
    return out


def candidates(
    study: optuna.Study, workspace: Workspace, top: int, names: tuple[str, ...]
) -> list[Candidate]:
    """Searched policies first, then the named baselines built on the space's fixed stages."""
    settings = workspace.space.baselines
    kd = KDSettings(settings.temperature, settings.alpha)
    standard = Policy(workspace.space.fixed, (), kd)
    return searched(study, top) + [baseline(name, standard, kd, workspace.data.channels) for name in names]


def _settings(workspace: Workspace, epochs: int | None) -> TrainSettings:
    settings = replace(workspace.space.retrain, subset=None)
    return replace(settings, epochs=epochs) if epochs else settings


def run_key(
    candidate: Candidate,
    settings: TrainSettings,
    student: str,
    seed: int,
    teacher_sha256: str | None = None,
    synthesis_sha256: str | None = None,
    labelled: int | None = None,
) -> str:
    """A readable, stable file name for one run: the same policy, budget and seed always map to it.
    Batch mixing enters the recipe only when it can mix, the teacher checkpoint's sha256 only when the
    teacher comes from a file, and the labelled count only when the space limits it, so runs without
    any of them keep their old names."""
    recipe = {
        "transform": A.to_dict(candidate.transform) if candidate.transform else None,
        "kd": candidate.kd.to_dict() if candidate.kd else None,
        "train": settings.to_dict(),
        "student": student,
        "seed": seed,
    }
    if candidate.mix.active:
        recipe["mix"] = candidate.mix.to_dict()
    if candidate.policy is not None and not candidate.policy.schedule.constant:
        recipe["schedule"] = candidate.policy.schedule.to_dict()
    if teacher_sha256 is not None:
        recipe["teacher_checkpoint_sha256"] = teacher_sha256
    if labelled is not None:  # the space's dataset.labelled: another (smaller) training set
        recipe["labelled"] = labelled
    if candidate.synthesis is not None and candidate.synthesis.active:  # and which images it drew from
        recipe["synthesis"] = {**candidate.synthesis.to_dict(), "source_sha256": synthesis_sha256}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", candidate.name.lower()).strip("-")
    return f"{slug}-s{seed}-{digest}"


def retrain_run(
    candidate: Candidate,
    workspace: Workspace,
    teacher: nn.Module | None,
    seed: int,
    epochs: int | None,
    out: Path,
    teacher_sha256: str | None = None,
    synthesis: Source | None = None,
) -> dict[str, Any]:
    """Train and test one (candidate, seed); resume from its checkpoint, or return it if already finished.
    An unusable checkpoint is moved aside and the run starts over (augsearch/distill.py: _resume)."""
    space, data = workspace.space, workspace.data
    settings = _settings(workspace, epochs)
    source_sha256 = None if synthesis is None else synthesis.provenance.get("sha256")
    labelled = space.dataset.labelled
    key = run_key(candidate, settings, space.student, seed, teacher_sha256, source_sha256, labelled)
    record, checkpoint = out / f"{key}.json", out / f"{key}.ckpt"
    if record.is_file():
        return json.loads(record.read_text())
    seed_everything(seed)
    student = build_model(space.student, **data.model_shape)
    # The same strength schedule as the candidate's trial, controller included (augsearch/schedule.py).
    control = None if candidate.policy is None else strength_control(candidate.policy)
    transform = candidate.transform if control is None else run_transform(candidate.policy, control)
    if transform is not None:
        transform.set_random_seed(seed)
    x_train, y_train = workspace.retrain_images()
    batches = make_loader(
        x_train, y_train, transform, settings.batch_size, workspace.runtime, seed,
        strength=None if control is None else control.knob,
    )  # fmt: skip
    kd = candidate.kd or KDSettings(1.0, 0.0)
    teacher = teacher if candidate.kd else None
    clean = clean_outputs(teacher, x_train, workspace.normalise)  # shared by this process's runs

    def own_copy() -> A.Compose | None:  # the synthetic images' pipeline draws from its own stream
        return copy.deepcopy(transform)

    synthesizer = synthesizer_for(
        candidate.synthesis, synthesis, own_copy, seed, workspace.runtime.device,
        strength=None if control is None else control.knob,
    )  # fmt: skip
    extra = {} if synthesizer is None else {"synthesis": synthesizer}
    start = time.perf_counter()
    result = train_student(
        student, batches, settings, workspace.normalise, teacher, kd,
        description=f"{candidate.name} seed {seed}", checkpoint=checkpoint, mix=candidate.mix, clean=clean,
        control=control,
        **extra,
    )  # fmt: skip
    accuracy, probabilities = predict(student, data.x_test, data.y_test, workspace.normalise)
    state = {k: v.detach().cpu() for k, v in student.state_dict().items()}
    files.save_torch(
        out / f"{key}.pt", {"state_dict": state, "model": space.student, "test_accuracy": accuracy}
    )
    summary = {
        "name": candidate.name,
        "kind": candidate.kind or ("searched" if candidate.trial is not None else "baseline"),
        "trial": candidate.trial,
        "seed": seed,
        "student": space.student,
        "kd": candidate.kd.to_dict() if candidate.kd else None,
        "kd_source": candidate.kd_source or ("searched" if candidate.trial is not None else "fixed")
        if candidate.kd
        else None,
        "mix": candidate.mix.to_dict(),
        "mixed_batches": result.mixed_batches,
        "teacher_passes": result.teacher_images,
        "teacher_passes_saved": result.teacher_saved,
        **_synthesis_summary(candidate, result.synthetic_images, result.images),
        **{k: v for k, v in settings.to_dict().items() if k != "subset"},
        **({} if labelled is None else {"labelled": labelled}),
        "optimiser": "sgd-nesterov-0.9",
        "test_accuracy": accuracy,
        "test_ece": round(expected_calibration_error(probabilities, data.y_test), 6),
        "test_nll": round(negative_log_likelihood(probabilities, data.y_test), 6),
        "train_seconds": round(result.seconds, 2),
        "wall_seconds_this_process": round(time.perf_counter() - start, 2),
        "images_per_second": round(result.images_per_second, 1),
        "train_loss": [round(v, 5) for v in result.train_loss],
        "transform": A.to_dict(candidate.transform) if candidate.transform else None,
        **({} if control is None else _strength_record(control, result.strength)),
        "device": workspace.runtime.describe(),
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    files.write_json(record, summary)
    checkpoint.unlink(missing_ok=True)
    return summary


def _strength_record(control: StrengthControl, strength: list[float]) -> dict[str, Any]:
    """A scheduled run's schedule and its strength per epoch: the mean (what a replay applies) and the
    value at the epoch's end (resumed epochs: only the mean was kept)."""
    reached = [None] * (len(strength) - len(control.reached)) + control.reached
    return {"schedule": control.schedule.to_dict(), "strength": strength, "strength_reached": reached}


def _synthesis_summary(candidate: Candidate, synthetic: int, images: int) -> dict[str, Any]:
    """A run's synthesis, in its record only when its policy has one: how much of each batch was synthetic."""
    if candidate.synthesis is None:
        return {}
    share = round(synthetic / images, 4) if images else 0.0
    return {
        "synthesis": candidate.synthesis.to_dict(),
        "synthetic_images": synthetic,
        "synthetic_share": share,
    }


def retrain_all(
    runs: list[Candidate],
    workspace: Workspace,
    teacher: nn.Module,
    seeds: int,
    epochs: int | None,
    study_dir: Path,
    teacher_sha256: str | None = None,
    synthesis: Source | None = None,
) -> list[dict[str, Any]]:
    """Every candidate with seeds ``seed, seed+1, ...``: the same seeds for every candidate.
    ``teacher_sha256``: the teacher checkpoint's (augsearch/teacher.py: checkpoint_sha256), if any;
    ``synthesis``: where the synthetic images of candidates with synthesis come from."""
    out = study_dir / "retrain"
    results = []
    with progress.bar(total=len(runs) * seeds, desc="retrain", unit="run") as bar:
        for candidate in runs:
            for index in range(seeds):
                seed = workspace.seed + index
                result = retrain_run(
                    candidate, workspace, teacher, seed, epochs, out, teacher_sha256, synthesis
                )
                bar.write(
                    f"{result['name']:<32} seed {result['seed']}: test accuracy {result['test_accuracy']:.4f}"
                )
                bar.update(1)
                results.append(result)
    return results


def load_runs(study_dir: Path) -> list[dict[str, Any]]:
    """Every finished run recorded for the study, oldest first."""
    runs = [json.loads(path.read_text()) for path in sorted((study_dir / "retrain").glob("*.json"))]
    return sorted(runs, key=lambda run: run["created"])

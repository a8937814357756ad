"""The exported policy file: albumentations' own dict, the policy as data, KD, mixing, provenance.

``data["albumentations"]`` is exactly what ``A.to_dict`` returns (the per-image pipeline, with
OneOf/SomeOf/Sequential as the policy's structure needs), so anyone can rebuild the pipeline with
``A.from_dict(data["albumentations"])`` without augsearch installed. ``data["policy"]`` is the policy as
plain data (fixed stages, slot ops, sub-policies, RandAugment, TrivialAugment, erasing), and ``"kd"``
and ``"mixing"`` hold the settings albumentations has no place for. The ``schema_version`` lets a later
augsearch refuse or upgrade an older file instead of misreading it:

- 1: no ``"mixing"`` key (read as no mixing, or as ``policy.mix`` where a file has one);
- 2: ``"mixing"`` beside ``"kd"``;
- 3: a ``"schedule"`` beside them (augsearch/schedule.py: the kind, its settings and, for ``adaptive``,
  the per-epoch strengths the best trial followed; a file without the key is ``constant``) and/or a
  ``"synthesis"`` (the synthetic share of each batch, ``hard_labels``, ``augment`` and the ``source``: the
  generator's file, sha256, recipe and quality figures, augsearch/generator.py). Written only for a policy
  with a schedule that is not ``constant`` or with synthesis; every other policy is still version 2.
  ``data["albumentations"]`` is the pipeline at strength 1, the policy as searched.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import albumentations as A
import optuna

from augsearch import files
from augsearch.attributes import STRENGTH
from augsearch.bounded import parse_json, read_bounded
from augsearch.errors import UserError
from augsearch.mixing import NO_MIXING, MixSettings
from augsearch.policy import KDSettings, Policy, build_transform, build_transform_at, trial_policy
from augsearch.redaction import redact
from augsearch.schedule import Schedule, strength_at, with_trajectory
from augsearch.storage import load_stored_study, study_storage_url
from augsearch.synthesis import SynthesisSettings
from augsearch.validate import check_policy_document

FORMAT = "augsearch-policy"
SCHEMA_VERSION = 3
PLAIN_SCHEMA_VERSION = 2  # what a policy without a schedule or synthesis is written as


@dataclass(frozen=True)
class LoadedPolicy:
    """What :func:`load_policy` returns: the ready per-image pipeline, the policy as data, where it came
    from; ``kd`` and ``mix`` are the policy's KD and batch-mixing settings
    (``augsearch.mixing.mix_batch(images, labels, loaded.mix, generator)`` applies the latter)."""

    transform: A.Compose
    policy: Policy
    provenance: dict[str, Any]

    @property
    def kd(self) -> KDSettings:
        return self.policy.kd

    @property
    def mix(self) -> MixSettings:
        return self.policy.mix

    @property
    def schedule(self) -> Schedule:
        return self.policy.schedule

    def strength_at(self, epoch: int, epochs: int) -> float:
        """The strength of epoch ``epoch`` (0-based) of a run of ``epochs``, without a controller: 1 for
        ``constant``, the line for ``linear``, the stored trajectory stretched over the run for an
        exported ``adaptive`` schedule (a replay, augsearch/schedule.py)."""
        return strength_at(self.policy.schedule, epoch, epochs)

    def transform_at(self, strength: float, seed: int | None = None) -> A.Compose:
        """The per-image pipeline at ``strength`` in [0, 1]; ``transform_at(1.0)`` is ``transform``."""
        return build_transform_at(self.policy, strength, seed)

    @property
    def synthesis(self) -> SynthesisSettings | None:
        """The synthetic share of each batch and how it is used; None: no synthesis."""
        return self.policy.synthesis

    @property
    def synthesis_source(self) -> dict[str, Any] | None:
        """Where the synthetic images came from (generator file, sha256, recipe, quality figures)."""
        return self.provenance.get("synthesis_source")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("augsearch", "albumentations", "optuna", "torch", "torchvision", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def policy_document(
    policy: Policy, provenance: dict[str, Any], synthesis_source: dict[str, Any] | None = None
) -> dict[str, Any]:
    data = policy.to_dict()
    extended = "schedule" in data or policy.synthesis is not None  # else written as version 2
    document = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION if extended else PLAIN_SCHEMA_VERSION,
        "albumentations": A.to_dict(build_transform(policy)),
        "policy": {
            key: value for key, value in data.items() if key not in ("kd", "mix", "schedule", "synthesis")
        },
        "kd": data["kd"],
        "mixing": data["mix"],
        "provenance": {**provenance, "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }
    if "schedule" in data:
        document["schedule"] = data["schedule"]
    if policy.synthesis is not None:
        document["synthesis"] = {**data["synthesis"], "source": synthesis_source}
    return document


def write_policy(
    path: Path, policy: Policy, provenance: dict[str, Any], synthesis_source: dict[str, Any] | None = None
) -> dict[str, Any]:
    document = policy_document(policy, provenance, synthesis_source)
    files.write_json(path, document)
    return document


def load_policy(path: str | Path) -> LoadedPolicy:
    """Read a file written by ``augsearch export``; a one-line :class:`UserError` for anything else.

    The content is checked against augsearch's allow-list (``augsearch/validate.py``: classes, argument
    names, ``p``, nesting, image sizes, KD settings) before ``A.from_dict`` builds anything.
    """
    path = Path(path)
    try:
        document = parse_json(read_bounded(path).decode(), path)  # json.loads within bounds
    except FileNotFoundError:
        raise UserError(f"policy file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not a JSON file ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise UserError(f'{path}: not an augsearch policy file (no "format": "{FORMAT}")')
    version = document.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise UserError(f"{path}: schema_version must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise UserError(
            f"{path}: schema_version {version} is newer than this augsearch reads ({SCHEMA_VERSION}); upgrade"
        )
    check_policy_document(document, path)
    section = document["policy"]
    # Upgrade: a version-1 file has no "mixing"; it mixes nothing unless its policy data says so.
    mixing = document["mixing"] if version >= 2 else section.get("mix", NO_MIXING.to_dict())
    schedule = {"schedule": document["schedule"]} if "schedule" in document else {}
    try:
        synthesis = document.get("synthesis")  # version 3, only in policies with synthesis
        policy = Policy.from_dict(
            {**section, "kd": document["kd"], "mix": mixing, **schedule, "synthesis": synthesis}
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise UserError(f"{path}: malformed policy or kd section ({type(error).__name__}: {error})") from None
    pipeline = document.get("albumentations")
    _check_pipeline_matches(policy, pipeline, path)
    try:
        transform = A.from_dict(pipeline)
    except Exception as error:  # albumentations raises many kinds on bad dicts; all mean a bad file
        raise UserError(
            f"{path}: albumentations cannot rebuild the pipeline ({type(error).__name__}: {error})"
        ) from None
    provenance = dict(document.get("provenance", {}))
    if document.get("synthesis") is not None:
        provenance["synthesis_source"] = document["synthesis"]["source"]
    return LoadedPolicy(transform, policy, provenance)


def _check_pipeline_matches(policy: Policy, pipeline: dict[str, Any], path: Path) -> None:
    """The file's ``albumentations`` pipeline must be the one its ``policy`` section builds: whoever reads
    the file with plain ``A.from_dict`` and whoever reads it with augsearch must get the same
    augmentation, and a hand-edited pipeline must not hide behind an innocent-looking policy."""
    try:
        expected = json.loads(json.dumps(A.to_dict(build_transform(policy))["transform"]))
    except Exception as error:  # UserError or albumentations' own refusals: the policy section is bad
        reason = " ".join(str(error).split())[:300]
        raise UserError(f"{path}: policy: cannot build its pipeline ({reason})") from None
    if pipeline["transform"] != expected:
        written = pipeline.get("__version__", "unknown")
        raise UserError(
            f"{path}: albumentations: the pipeline is not the one the policy section builds "
            f"(file written with albumentations {written}, this is {A.__version__}); re-export it"
        )


def export_best(study: optuna.Study, storage: str, output: Path) -> dict[str, Any]:
    """Write the best trial's policy, with the study's provenance, to ``output`` (atomically)."""
    try:
        best = study.best_trial
    except ValueError:
        raise UserError(f"study '{study.study_name}' has no completed trial to export") from None
    attrs = study.user_attrs
    provenance = {
        "study": study.study_name,
        "storage": redact(storage),  # the file is for sharing: no password (augsearch/redaction.py)
        "trial": best.number,
        "validation_accuracy": best.value,
    }
    provenance |= {
        key: attrs.get(key) for key in ("space", "space_sha256", "dataset", "teacher", "student", "seed")
    }
    policy = trial_policy(best)
    if policy.schedule.kind == "adaptive" and best.user_attrs.get(STRENGTH):  # what the best trial followed
        policy = replace(policy, schedule=with_trajectory(policy.schedule, best.user_attrs[STRENGTH]))
    source = attrs.get("synthesis_source") if policy.synthesis is not None else None
    return write_policy(output, policy, provenance, source)


@dataclass(frozen=True)
class ExportOptions:
    """``augsearch export``: which stored study, and the policy file to write."""

    study: str
    output: Path
    studies_dir: Path = Path("studies")
    storage: str | None = None


def export_study(options: ExportOptions) -> dict[str, Any]:
    """``augsearch export``: the best policy of a stored study."""
    study = load_stored_study(options.study, options.studies_dir, options.storage)  # its SQLite or journal
    url = study_storage_url(options.study, options.studies_dir, options.storage)
    return export_best(study, url, options.output)

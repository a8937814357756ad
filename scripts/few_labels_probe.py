"""Probe for issue 15, item 0: does augmentation help a distilled student that sees few labelled images?

Retrains baselines (``none``, ``standard``, ``trivialaugment``, ``student-alone``; ``none-nokd``: no
augmentation and no teacher) on N class-balanced Fashion-MNIST training images, drawn once with
``numpy.random.default_rng(0)`` from the whole training split, for E epochs, and tests each on the test
split. The teacher is the one `full-labels` and `default` share (trained on the whole training split, in
``STUDIES/teachers``), or with ``--teacher-epochs K`` a cnn-teacher trained on the same N images for K
epochs (cached in ``scripts-probe/``). Each run is ``augsearch.retrain.retrain_run``, so a finished run
is never redone. No search here: the ``few-labels`` space (``dataset.labelled``) is the searched version.

Usage, from the repository root (one line per run on stdout)::

    python scripts/few_labels_probe.py 2000 60 cnn-small none,standard,trivialaugment --seeds 0,1,2
"""

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from augsearch.baselines import baseline
from augsearch.data import ImageData
from augsearch.mixing import MixSettings
from augsearch.policy import KDSettings, Policy
from augsearch.retrain import retrain_run
from augsearch.space import load_space
from augsearch.workspace import open_workspace, teacher_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", type=int, help="labelled training images (a multiple of 10)")
    parser.add_argument("epochs", type=int)
    parser.add_argument("student")
    parser.add_argument(
        "rows",
        help="comma list: none, standard, trivialaugment, student-alone, none-nokd; "
        "ROW+cutmix or ROW+mixup mixes every batch (lambda ~ Beta(1, 1))",
    )
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="teacher on the N images only")
    parser.add_argument("--studies-dir", type=Path, default=Path("studies"))
    parser.add_argument("--out", type=Path, default=Path("scripts-probe"))
    args = parser.parse_args()

    space = load_space("full-labels")  # all labels: the N images are drawn here, not by the space
    space = replace(space, student=args.student, retrain=replace(space.retrain, epochs=args.epochs))
    workspace = open_workspace(space, "fashion-mnist", None, "cpu", 0)
    data, rng = workspace.data, np.random.default_rng(0)
    per_class = args.images // data.num_classes
    classes = range(data.num_classes)
    drawn = [rng.choice(np.flatnonzero(data.y_train == c), per_class, replace=False) for c in classes]
    pick = np.sort(np.concatenate(drawn))
    few = ImageData(data.name, data.x_train[pick], data.y_train[pick], data.x_test, data.y_test,
                    data.classes, data.source)  # fmt: skip
    if args.teacher_epochs is None:
        teacher, info = teacher_for(workspace, args.studies_dir)
        workspace = replace(workspace, data=few)
    else:
        teacher_settings = replace(space.teacher, epochs=args.teacher_epochs)
        workspace = replace(workspace, data=few, space=replace(space, teacher=teacher_settings))
        teacher, info = teacher_for(workspace, args.out)
    print(f"teacher test accuracy {info.get('test_accuracy')}", flush=True)
    kd = KDSettings(4.0, 0.9)
    standard = Policy(space.fixed, (), kd)
    suffix = "" if args.teacher_epochs is None else f"-teacher{args.teacher_epochs}"
    out = args.out / f"{args.student}-n{args.images}-e{args.epochs}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    for name in args.rows.split(","):
        base, _, mixing = name.removesuffix("-nokd").partition("+")
        candidate = baseline(base, standard, kd, data.channels)
        if mixing:  # e.g. standard+cutmix: every batch mixed, lambda ~ Beta(1, 1)
            candidate = replace(candidate, mix=MixSettings(mixing, 1.0, 1.0), name=name)
        if name.endswith("-nokd"):
            candidate = replace(candidate, kd=None, name=name)
        for seed in (int(s) for s in args.seeds.split(",")):
            start = time.time()
            record = retrain_run(candidate, workspace, teacher, seed, None, out)
            print(
                f"{args.student} n={args.images} e={args.epochs}{suffix} {candidate.name:16s} seed {seed}: "
                f"test accuracy {record['test_accuracy']:.4f}, ECE {record['test_ece']:.4f} "
                f"({time.time() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()

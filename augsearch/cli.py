"""Command line: parse, call one function, print. Bad input: one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # before anything imports albumentations

from augsearch.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 like every other bad input."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="augsearch", description="Search augmentation policies for knowledge distillation.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="search a policy, retrain the best one, report (resumes if re-run)")
    run.add_argument(
        "--space", default="default", help="a shipped space name or a YAML path (default: default)"
    )
    run.add_argument("--study", help="study name (default: the space's name)")
    run.add_argument(
        "--studies-dir", type=Path, default=Path("studies"), help="outputs folder (default: ./studies)"
    )
    run.add_argument(
        "--dataset",
        help="override the space's dataset: fashion-mnist, cifar10, cifar100, "
        "synthetic, imagefolder:PATH, npz:PATH",
    )
    run.add_argument("--data-dir", type=Path, help="where datasets are looked up and downloaded to")
    run.add_argument("--trials", type=int, help="finished trials wanted in the study (default: the space's)")
    run.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    run.add_argument(
        "--seed", type=int, help="seed of the split, sampler, teacher and students (default: space's)"
    )
    run.add_argument("--storage", help="Optuna storage URL (default: sqlite:///STUDIES/STUDY/study.db)")
    run.add_argument(
        "--teacher-checkpoint", type=Path, help="use this teacher state dict instead of training one"
    )
    run.add_argument("--no-retrain", action="store_true", help="stop after the search and the export")

    export = commands.add_parser("export", help="write the best trial's policy as a versioned JSON file")
    export.add_argument("--study", default="default")
    export.add_argument("--studies-dir", type=Path, default=Path("studies"))
    export.add_argument("--storage", help="Optuna storage URL (default: the study's SQLite file)")
    export.add_argument("-o", "--output", type=Path, default=Path("best_policy.json"))

    commands.add_parser("spaces", help="list the shipped search spaces")
    return parser


def _run(args: argparse.Namespace) -> None:
    from augsearch.pipeline import RunOptions, run

    options = RunOptions(
        space=args.space,
        study=args.study,
        studies_dir=args.studies_dir,
        dataset=args.dataset,
        data_dir=args.data_dir,
        trials=args.trials,
        timeout=args.timeout,
        device=args.device,
        seed=args.seed,
        storage=args.storage,
        retrain=not args.no_retrain,
        teacher_checkpoint=args.teacher_checkpoint,
    )
    summary = run(options)
    from augsearch.report import table

    print(
        table(summary)
        if summary["retrain"]
        else f"best trial {summary['best_trial']['number']}: "
        f"validation accuracy {summary['best_trial']['validation_accuracy']:.4f} (retrain skipped)"
    )
    print(f"outputs in {args.studies_dir / summary['study']}/: report.md, results.json, best_policy.json")


def _export(args: argparse.Namespace) -> None:
    from augsearch.export import export_study

    document = export_study(args.study, args.studies_dir, args.storage, args.output)
    print(
        f"wrote {args.output} (trial {document['provenance']['trial']}, "
        f"validation accuracy {document['provenance']['validation_accuracy']:.4f})"
    )


def _spaces(args: argparse.Namespace) -> None:
    from augsearch.space import load_space, space_names

    for name in space_names():
        print(f"{name:<16} {load_space(name).description}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress lines say what each trial did
    try:
        {"run": _run, "export": _export, "spaces": _spaces}[args.command](args)
    except UserError as error:
        print(f"augsearch: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("augsearch: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0

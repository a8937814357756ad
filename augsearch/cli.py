"""Command line: parse, call one function, print. Bad input: one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # before anything imports albumentations

from augsearch.errors import UserError
from augsearch.redaction import storage_option

Options = TypeVar("Options")


def _study_name(text: str) -> str:
    """``--study NAME``: one safe path component (augsearch/names.py), else argparse's one-line error."""
    from augsearch.names import study_name_problem

    problem = study_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


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
    run.add_argument("--study", type=_study_name, help="study name (default: the space's name)")
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
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on this machine, one GPU each when several are visible (default: 1; "
        "more than 1 without --storage: a journal file in the study's folder)",
    )

    worker = commands.add_parser(
        "worker", help="join an existing study (any machine) and run its trials until it has enough"
    )
    worker.add_argument("--study", type=_study_name, required=True)
    worker.add_argument("--studies-dir", type=Path, default=Path("studies"))
    worker.add_argument("--storage", help="Optuna storage URL (default: the study's file in --studies-dir)")
    worker.add_argument("--trials", type=int, help="finished trials wanted (default: what `run` asked for)")
    worker.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    worker.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    worker.add_argument("--data-dir", type=Path, help="where datasets are looked up")

    export = commands.add_parser("export", help="write the best trial's policy as a versioned JSON file")
    export.add_argument("--study", type=_study_name, default="default")
    export.add_argument("--studies-dir", type=Path, default=Path("studies"))
    export.add_argument("--storage", help="Optuna storage URL (default: the study's SQLite file)")
    export.add_argument("-o", "--output", type=Path, default=Path("best_policy.json"))

    retrain = commands.add_parser(
        "retrain", help="retrain the best trial(s) and baselines over several seeds, then write the report"
    )
    retrain.add_argument("--study", type=_study_name, default="default")
    retrain.add_argument("--studies-dir", type=Path, default=Path("studies"))
    retrain.add_argument("--storage", help="Optuna storage URL (default: the study's SQLite file)")
    retrain.add_argument("--epochs", type=int, help="retrain epochs (default: the space's)")
    retrain.add_argument("--seeds", type=int, default=3, help="seeds per policy, shared by all (default: 3)")
    retrain.add_argument(
        "--baselines", default="all", help="all, or a comma list of none, standard, randaugment, "
        "trivialaugment, student-alone, NAME+searched-kd, kd-tuned, searched+fixed-kd, "
        "searched+constant-strength, searched-no-synthesis (default: all); an empty string for none"
    )  # fmt: skip
    retrain.add_argument(
        "--baselines-kd", help="KD settings of the KD baselines named: fixed, searched or fixed,searched "
        "(default: the space's baselines.kd, else fixed; `all` runs both)"
    )  # fmt: skip
    retrain.add_argument("--student", help="transfer: retrain the policy and baselines on this student")
    retrain.add_argument(
        "--teacher-checkpoint", type=Path, help="transfer: distil from this teacher state dict instead"
    )
    retrain.add_argument("--top", type=int, default=1, help="retrain the best N trials (default: 1)")
    retrain.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    retrain.add_argument("--data-dir", type=Path, help="where datasets are looked up")

    report = commands.add_parser("report", help="rewrite report.md, results.csv, trials.csv and plots")
    report.add_argument("--study", type=_study_name, default="default")
    report.add_argument("--studies-dir", type=Path, default=Path("studies"))
    report.add_argument("--storage", help="Optuna storage URL (default: the study's SQLite file)")
    report.add_argument("--data-dir", type=Path, help="where datasets are looked up (for the sample grid)")

    generator = commands.add_parser(
        "generator", help="train (or load the cached) class-conditional generator of a space with synthesis"
    )
    generator.add_argument("--space", default="default", help="a shipped space name or a YAML path")
    generator.add_argument("--studies-dir", type=Path, default=Path("studies"))
    generator.add_argument("--dataset", help="override the space's dataset")
    generator.add_argument("--data-dir", type=Path, help="where datasets are looked up")
    generator.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    generator.add_argument("--seed", type=int, help="seed (default: the space's study seed, as run uses)")
    generator.add_argument("--teacher-checkpoint", type=Path, help="the teacher state dict to measure with")

    commands.add_parser("spaces", help="list the shipped search spaces")

    validate = commands.add_parser(
        "validate", help="check a search-space YAML or a policy JSON file: exit 0 (ok) or 2 (one line)"
    )
    validate.add_argument("file", help="a space (.yaml, or a shipped space's name) or a policy file (.json)")

    bench = commands.add_parser("bench", help="measure a trial's speed against the hardware's bound")
    bench.add_argument("--space", default="default", help="a shipped space name or a YAML path")
    bench.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    bench.add_argument("--seconds", type=float, default=5.0, help="timed seconds per figure (default: 5)")
    bench.add_argument("--data-dir", type=Path, help="where datasets are looked up")
    bench.add_argument(
        "--loader-workers", type=int, help="loader worker processes (default: the device's choice)"
    )
    bench.add_argument(
        "--stand-in-data",
        action="store_true",
        help="generated images of the dataset's shape instead of the dataset (speed only; no download)",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    no_auth = "optuna-dashboard has NO authentication: anyone who can reach HOST:PORT can change the study"
    dashboard = commands.add_parser(
        "dashboard",
        help="serve optuna-dashboard on a study, with each trial's augmentation preview (no authentication)",
        description=f"Serve optuna-dashboard on a study and its preview artifacts until Ctrl-C. {no_auth}; "
        "keep the default --host 127.0.0.1 unless every machine on the network may do that.",
    )
    dashboard.add_argument("--study", type=_study_name, default="default")
    dashboard.add_argument("--studies-dir", type=Path, default=Path("studies"))
    dashboard.add_argument("--storage", help="Optuna storage URL (default: the study's SQLite file)")
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)"
    )
    dashboard.add_argument("--port", type=int, default=8080, help="(default: 8080; 0: any free port)")

    preview = commands.add_parser("preview", help="draw a policy's augmentation preview grid as a PNG")
    preview.add_argument("policy_file", nargs="?", type=Path, help="a policy file from `augsearch export`")
    preview.add_argument("--study", type=_study_name, help="instead of a file: a stored study's trial")
    preview.add_argument("--trial", type=int, help="with --study: the trial number (default: the best)")
    preview.add_argument("--studies-dir", type=Path, default=Path("studies"))
    preview.add_argument("--storage", help="Optuna storage URL (default: the study's SQLite file)")
    preview.add_argument("--dataset", help="images from this dataset (default: the one searched on)")
    preview.add_argument("--data-dir", type=Path, help="where datasets are looked up")
    preview.add_argument("-o", "--output", type=Path, default=Path("preview.png"))
    return parser


def _options(kind: type[Options], args: argparse.Namespace, **given: Any) -> Options:
    """A command's options dataclass from the parsed arguments of the same names, and ``given`` (the few
    the command line spells another way); the command resolves whatever is left unset (None)."""
    names = [field.name for field in dataclasses.fields(kind) if field.name not in given]
    return kind(**{name: getattr(args, name) for name in names}, **given)


def _run(args: argparse.Namespace) -> None:
    from augsearch.pipeline import RunOptions, run

    text, study_dir = run(_options(RunOptions, args, retrain=not args.no_retrain))
    print(text)
    print(f"outputs in {study_dir}/: report.md, results.csv, best_policy.json, study.db or journal.log")


def _worker(args: argparse.Namespace) -> None:
    from augsearch.workers import WorkerOptions, work

    ran = work(_options(WorkerOptions, args))
    print(f"worker done: ran {ran} trial(s) of study '{args.study}'")


def _retrain(args: argparse.Namespace) -> None:
    from augsearch.fair import parse_kinds, parse_rows
    from augsearch.pipeline import RetrainOptions, retrain

    kinds = None if args.baselines_kd is None else parse_kinds(args.baselines_kd)
    options = _options(RetrainOptions, args, baselines=parse_rows(args.baselines), baselines_kd=kinds)
    print(retrain(options))
    transfer = args.student is not None or args.teacher_checkpoint is not None
    where = "transfer/*/report.md" if transfer else "report.md"
    print(f"report in {args.studies_dir / args.study}/{where}")


def _report(args: argparse.Namespace) -> None:
    from augsearch.pipeline import ReportOptions, report_only

    print(report_only(_options(ReportOptions, args)))
    print(f"report in {args.studies_dir / args.study}/report.md")


def _export(args: argparse.Namespace) -> None:
    from augsearch.export import ExportOptions, export_study

    document = export_study(_options(ExportOptions, args))
    print(
        f"wrote {args.output} (trial {document['provenance']['trial']}, "
        f"validation accuracy {document['provenance']['validation_accuracy']:.4f})"
    )


def _dashboard(args: argparse.Namespace) -> None:
    from augsearch.dashboard import DashboardOptions, serve

    serve(_options(DashboardOptions, args))
    print("dashboard stopped")


def _preview(args: argparse.Namespace) -> None:
    from augsearch.pipeline import PreviewOptions, write_preview

    print(write_preview(_options(PreviewOptions, args)))


def _bench(args: argparse.Namespace) -> None:
    import json

    from augsearch.bench import bench, format_figures

    if not args.seconds > 0:
        raise UserError(f"--seconds must be positive, got {args.seconds}")
    if args.loader_workers is not None and args.loader_workers < 0:
        raise UserError(f"--loader-workers must be 0 or more, got {args.loader_workers}")
    say = None if args.json else lambda line: print(line, file=sys.stderr, flush=True)
    figures = bench(
        args.space, args.device, args.seconds, args.data_dir, say, args.loader_workers, args.stand_in_data
    )
    print(json.dumps(figures) if args.json else format_figures(figures))


def _generator(args: argparse.Namespace) -> None:
    from augsearch.pipeline import GeneratorOptions, generator

    print(generator(_options(GeneratorOptions, args)))


def _validate(args: argparse.Namespace) -> None:
    from augsearch.pipeline import validate_file

    print(validate_file(args.file))


def _spaces(args: argparse.Namespace) -> None:
    from augsearch.space import load_space, space_names

    for name in space_names():
        print(f"{name:<16} {load_space(name).description}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "storage"):  # --storage, else $AUGSEARCH_STORAGE (how `run` hands it to its workers)
        args.storage = storage_option(args.storage)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress lines say what each trial did
    try:
        handlers = {"run": _run, "export": _export, "spaces": _spaces, "bench": _bench, "validate": _validate}
        handlers |= {"dashboard": _dashboard, "preview": _preview, "retrain": _retrain, "report": _report}
        handlers |= {"worker": _worker, "generator": _generator}
        handlers[args.command](args)
    except UserError as error:
        print(f"augsearch: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # SIGINT, or SIGTERM in a search (trials.Interrupted): 130, 143
        print("augsearch: interrupted; run the same command again to resume", file=sys.stderr)
        return 128 + getattr(stop, "signum", 2)
    except Exception as error:
        from augsearch.workers import WorkersFailed

        if not isinstance(error, WorkersFailed):
            raise
        print(f"augsearch: error: {error}", file=sys.stderr)
        return 1
    return 0

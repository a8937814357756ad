"""The study's report: a table of every retrained policy against the baselines, with the noise stated.

``write`` reads the finished retrain runs (``<study>/retrain/*.json``) and the study itself, and writes
``report.md``, ``results.csv`` (one row per policy), ``trials.csv`` (one row per trial, the policy
flattened into readable columns), ``results.json`` and PNG plots. Test accuracies are only reported,
never used to choose anything.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from augsearch import ablation, files
from augsearch.attributes import POLICY, PROXY_STDDEV, TEACHER_PASSES, TEACHER_PASSES_SAVED
from augsearch.fair import CONSTANT_STRENGTH, KD_TUNED, NO_SYNTHESIS
from augsearch.stats import paired_difference, seeds_needed, spearman_interval
from augsearch.strength_report import Curve, strength_curves, strength_figure, strength_lines
from augsearch.synthesis import synthesis_lines


@dataclass(frozen=True)
class Row:
    """One policy's retrain runs, summarised over seeds."""

    name: str
    kind: str  # "searched" or "baseline"
    trial: int | None
    kd: str
    n: int
    mean: float
    std: float  # sample standard deviation over seeds (0 with one seed)
    epochs: int
    seconds: float  # mean training wall time of one run
    images_per_second: float
    seeds: tuple[int, ...]
    accuracies: tuple[float, ...] = ()  # test accuracy per seed, in the order of ``seeds``
    ece: float | None = None  # mean expected calibration error (15 bins) over seeds; None for older runs
    nll: float | None = None  # mean negative log-likelihood over seeds; None for older runs
    teacher_saved: float | None = None  # share of teacher passes reused from clean images; None: no teacher


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file augsearch wrote beside the report (kd-tuned.json), or None when there is none."""
    return json.loads(path.read_text()) if path.is_file() else None


def describe_kd_tuned(info: dict[str, Any]) -> str:
    """Where the kd-tuned row's KD settings came from (augsearch/kdtuned.py writes kd-tuned.json)."""
    how = "reused" if info.get("reused") else f"{info.get('ran')} trial(s) run now"
    return (
        f"{KD_TUNED}: best of the first {info['trials']} finished trials (the main study's count) of KD-only "
        f"study '{info['study']}' ({info['augmentation']} augmentation): trial {info['trial']}, "
        f"KD {_describe_kd(info['kd'])}; {how}"
    )


ABLATION_DEFINITION = (
    "gain = (searched policy + searched KD) - (b + fixed KD) = from KD settings + from augmentation, "
    "where from KD settings = (b + searched KD) - (b + fixed KD) and from augmentation = (searched "
    "policy + searched KD) - (b + searched KD); b is the KD baseline (none, standard, randaugment, "
    "trivialaugment) strongest with the searched KD; each part is the mean of the per-seed differences "
    "with its 95% paired t-interval (augsearch/ablation.py)."
)


def _versus_kd_tuned(rows: list[Row]) -> list[str]:
    """The searched policy against ``kd-tuned`` alone (the same trial budget spent on KD settings only),
    paired as the verdict is; nothing when that row was not retrained or is the verdict's rival already."""
    searched_row = next((row for row in rows if row.kind == "searched"), None)
    tuned = next((row for row in rows if row.name == KD_TUNED), None)
    baselines = [row for row in rows if row.kind == "baseline"]
    if searched_row is None or tuned is None or max(baselines, key=lambda row: row.mean) is tuned:
        return []
    text = verdict([searched_row, tuned])
    return [text.replace(f"best baseline ({KD_TUNED})", f"{KD_TUNED} (KD alone searched, same trials)")]


TWIN_LABELS = {
    CONSTANT_STRENGTH: "the same policy at constant strength (its schedule off)",
    NO_SYNTHESIS: "the same policy without synthetic images",
}


def _versus_twins(rows: list[Row]) -> list[str]:
    """The searched policy against itself less its schedule, or less its synthesis (augsearch/fair.py:
    TWINS), paired as the verdict is: what that one part added, at 95%."""
    searched_row = next((row for row in rows if row.kind == "searched"), None)
    if searched_row is None:
        return []
    lines = []
    for prefix, label in TWIN_LABELS.items():
        twin = next((row for row in rows if row.name.startswith(prefix)), None)
        if twin is None:
            continue
        text = verdict([searched_row, replace(twin, kind="baseline")])
        lines.append(text.replace(f"best baseline ({twin.name})", label))
    return lines


def trial_counts(study: optuna.Study) -> dict[str, int]:
    counts = Counter(trial.state.name.lower() for trial in study.get_trials(deepcopy=False))
    return {state: counts.get(state, 0) for state in ("complete", "pruned", "fail", "running", "waiting")}


def _describe_kd(kd: dict[str, Any] | None) -> str:
    if not kd:
        return "no KD"
    text = f"T={kd['temperature']:.2f} a={kd['alpha']:.2f}"
    return f"DKD {text} b={kd['beta']:.1f}" if kd.get("loss") == "dkd" else text


def summarise(runs: list[dict[str, Any]], trial_values: dict[int, float] | None = None) -> list[Row]:
    """Group runs by policy name: searched rows first, the study's best trial leading, then baselines.

    Why the study's ranking (``trial_values``: trial number -> validation accuracy): the verdict, the
    ablation, the twins and the cost line all read the first searched row as *the* searched policy.
    After ``retrain --top N``, or a search resumed after an earlier retrain, several trials have runs,
    and the lowest trial number is not the best one. Without values, trial number orders them."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["name"], []).append(run)
    rows = []
    for name, members in groups.items():
        members = sorted(members, key=lambda run: run["seed"])
        accuracies = np.array([run["test_accuracy"] for run in members])
        calibrated = all("test_ece" in run for run in members)
        kd = members[0]["kd"]
        rows.append(
            Row(
                name=name,
                kind=members[0]["kind"],
                trial=members[0]["trial"],
                kd=_describe_kd(kd),
                n=len(members),
                mean=float(accuracies.mean()),
                std=float(accuracies.std(ddof=1)) if len(members) > 1 else 0.0,
                epochs=members[0]["epochs"],
                seconds=float(np.mean([run["train_seconds"] for run in members])),
                images_per_second=float(np.mean([run["images_per_second"] for run in members])),
                seeds=tuple(run["seed"] for run in members),
                accuracies=tuple(float(a) for a in accuracies),
                ece=float(np.mean([run["test_ece"] for run in members])) if calibrated else None,
                nll=float(np.mean([run["test_nll"] for run in members])) if calibrated else None,
                teacher_saved=_saved_share(members),
            )
        )
    values = trial_values or {}

    def order(row: Row) -> tuple:
        if row.kind != "searched":
            return (1, 0.0, 0)
        trial = row.trial if row.trial is not None else 0
        return (0, -values.get(trial, float("-inf")), trial)

    return sorted(rows, key=order)


def _saved_share(runs: list[dict[str, Any]]) -> float | None:
    """The share of teacher passes saved over ``runs`` (augsearch/reuse.py); None when the teacher never
    ran in them, or they were recorded before the count existed."""
    passes = sum(run.get("teacher_passes", 0) for run in runs)
    return sum(run.get("teacher_passes_saved", 0) for run in runs) / passes if passes else None


def verdict(rows: list[Row]) -> str:
    """The searched policy against the best baseline, seed by seed, at 95%.

    Every row is retrained with the same seeds, and a seed fixes the student's initialisation and data
    order, so the two rows are compared on the seeds they share: the mean of the per-seed differences
    with its paired 95% t-interval (augsearch/stats.py). The words follow the interval: "beats" when it
    lies above 0, "loses to" below, "ties with" when it holds 0, and then how many paired seeds would
    show the observed difference if its spread stays as measured.
    """
    best = next((row for row in rows if row.kind == "searched"), None)
    baselines = [row for row in rows if row.kind == "baseline"]
    if best is None or not baselines:
        return "no searched policy and baseline both retrained yet: nothing to compare"
    rival = max(baselines, key=lambda row: row.mean)
    gain = best.mean - rival.mean
    head = f"searched policy vs best baseline ({rival.name}): {gain * 100:+.2f} points"
    theirs = dict(zip(rival.seeds, rival.accuracies, strict=True))
    mine = dict(zip(best.seeds, best.accuracies, strict=True))
    shared = sorted(set(mine) & set(theirs))
    if len(shared) < 2:
        return (
            f"{head}; fewer than two seeds on both sides, so the seed noise is unknown: "
            "run `augsearch retrain --seeds 3`"
        )
    difference = paired_difference([mine[s] for s in shared], [theirs[s] for s in shared])
    text = (
        f"{head}; paired over {difference.n} seeds {difference.mean * 100:+.2f}, 95% interval "
        f"[{difference.low * 100:+.2f}, {difference.high * 100:+.2f}]: "
        f"the searched policy {difference.word} it"
    )
    if difference.word != "ties with":
        return f"{text} at 95%"
    needed = seeds_needed(difference)
    more = f"about {needed} paired seeds" if needed else "more than 1000 paired seeds (or none at all)"
    return f"{text} (no difference shown at 95%; {more} would show a gap this size, if its spread holds)"


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation: Pearson's correlation of the ranks, ties given their mean rank.

    ``None`` below 3 pairs or when either side has no spread: no rank order to speak of.
    """
    if len(x) != len(y):
        raise ValueError("spearman needs two equally long lists")
    if len(x) < 3:
        return None

    def ranks(values: list[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        result = np.empty(len(values))
        result[values.argsort(kind="stable")] = np.arange(1, len(values) + 1)
        for value in np.unique(values):  # ties share their mean rank
            result[values == value] = result[values == value].mean()
        return result - result.mean()

    rx, ry = ranks(x), ranks(y)
    denominator = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denominator) if denominator else None


def proxy_correlation(study: optuna.Study) -> float | None:
    """Spearman of the teacher-side T. stddev proxy vs trial validation accuracy (negative if it works)."""
    pairs = [(t.user_attrs[PROXY_STDDEV], t.value) for t in study.get_trials(deepcopy=False)
             if t.value is not None and PROXY_STDDEV in t.user_attrs]  # fmt: skip
    return spearman([a for a, _ in pairs], [b for _, b in pairs])


def proxy_fidelity(study: optuna.Study, rows: list[Row]) -> float | None:
    """Spearman of trial validation accuracy vs retrained test accuracy, over retrained trials (>= 3):
    whether the short trials rank policies as full training does (`augsearch retrain --top N`)."""
    values = trial_values(study)
    retrained = [row for row in rows if row.kind == "searched" and row.trial in values]
    # Each trial's test accuracy on the seeds every retrained trial ran (`--top 8 --seeds 1` after a
    # 3-seed retrain of the best: seed 0 for all), so that no trial is averaged over more seeds than
    # another; the mean of each row's own seeds when they share none.
    shared = set.intersection(*(set(row.seeds) for row in retrained)) if retrained else set()

    def accuracy(row: Row) -> float:
        if not shared or len(row.accuracies) != len(row.seeds):
            return row.mean
        by_seed = dict(zip(row.seeds, row.accuracies, strict=True))
        return float(np.mean([by_seed[seed] for seed in sorted(shared)]))

    return spearman([values[row.trial] for row in retrained], [accuracy(row) for row in retrained])


def trial_values(study: optuna.Study) -> dict[int, float]:
    """Trial number -> validation accuracy, over the trials that finished with one."""
    trials = study.get_trials(deepcopy=False)
    return {trial.number: trial.value for trial in trials if trial.value is not None}


def search_cost(study: optuna.Study) -> dict[str, Any]:
    """Wall time of all trials as Optuna recorded them (start to completion), the device used, and the
    share of the teacher's passes the reuse saved over the trials that record it (None: none do)."""
    trials = study.get_trials(deepcopy=False)
    seconds = sum(
        (trial.datetime_complete - trial.datetime_start).total_seconds()
        for trial in trials
        if trial.datetime_complete and trial.datetime_start
    )
    passes = sum(trial.user_attrs.get(TEACHER_PASSES, 0) for trial in trials)
    saved = sum(trial.user_attrs.get(TEACHER_PASSES_SAVED, 0) for trial in trials)
    return {
        "seconds": round(seconds, 1),
        "device": study.user_attrs.get("device", "unknown"),
        "teacher_saved": saved / passes if passes else None,
    }


def table(rows: list[Row], teacher: dict[str, Any] | None) -> str:
    lines = [
        f"{'policy':<30} {'KD':<23} {'test acc':>16} {'ECE':>6} {'NLL':>6} {'n':>2} {'epochs':>6} "
        f"{'train s':>8} {'img/s':>7} {'teacher passes saved':>20}"
    ]
    if teacher:
        name = f"teacher {teacher.get('model')}"
        lines.append(f"{name:<30} {'(ceiling)':<23} {teacher['test_accuracy']:>16.4f}")
    for row in rows:
        accuracy = f"{row.mean:.4f} ± {row.std:.4f}" if row.n > 1 else f"{row.mean:.4f}"
        ece = f"{row.ece:.4f}" if row.ece is not None else "—"
        nll = f"{row.nll:.3f}" if row.nll is not None else "—"
        lines.append(
            f"{row.name:<30} {row.kd:<23} {accuracy:>16} {ece:>6} {nll:>6} {row.n:>2} {row.epochs:>6} "
            f"{row.seconds:>8.0f} {row.images_per_second:>7.0f} {_percent(row.teacher_saved):>20}"
        )
    return "\n".join(lines)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def trials_csv(study: optuna.Study) -> str:
    """``study.trials_dataframe()`` with the policy flattened: one readable ``policy`` column."""
    frame = study.trials_dataframe(attrs=("number", "value", "state", "duration", "params", "user_attrs"))
    # A study with metric names calls the column value_<name>; trials.csv keeps its plain "value".
    frame = frame.rename(columns={f"value_{name}": "value" for name in study.metric_names or ()})
    if "user_attrs_policy_json" in frame:
        frame = frame.drop(columns=["user_attrs_policy_json"])
    if "user_attrs_policy" in frame:
        frame["user_attrs_policy"] = frame["user_attrs_policy"].str.replace("\n", "; ")
    return frame.to_csv(index=False)


def _plots(
    study: optuna.Study, rows: list[Row], study_dir: Path, samples: bytes | None, curves: list[Curve] = ()
) -> list[str]:
    """PNG plots; each one that cannot be drawn yet (too few trials) is left out and named in the log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written = []

    def save(name: str, figure) -> None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
        plt.close(figure)
        files.write_bytes(study_dir / name, buffer.getvalue())
        written.append(name)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna flags its matplotlib plots as experimental
        save("history.png", optuna_plots.plot_optimization_history(study).figure)
        # fewer than two complete trials, or no parameter varies: nothing to rank, no importances plot
        with contextlib.suppress(ValueError, RuntimeError, ZeroDivisionError):
            save("importances.png", optuna_plots.plot_param_importances(study).figure)
    if rows:
        figure, axes = plt.subplots(figsize=(7, 0.5 + 0.45 * len(rows)))
        names = [row.name for row in rows][::-1]
        axes.barh(names, [row.mean for row in rows][::-1], xerr=[row.std for row in rows][::-1], capsize=3)
        low = min(row.mean - row.std for row in rows)
        axes.set_xlim(max(0.0, low - 0.02), min(1.0, max(row.mean + row.std for row in rows) + 0.01))
        axes.set_xlabel("test accuracy (mean ± std over seeds)")
        save("accuracy.png", figure)
    if curves:  # scheduled runs only (augsearch/strength_report.py)
        save("strength.png", strength_figure(list(curves), plt))
    if samples is not None:
        files.write_bytes(study_dir / "samples.png", samples)
        written.append("samples.png")
    return written


def write(
    study_dir: Path,
    study: optuna.Study,
    runs: list[dict[str, Any]],
    samples: bytes | None = None,
    student: str | None = None,
) -> str:
    """Write every report file for the study and return the text printed on the terminal.
    ``student``: the student of a transfer (augsearch/transfer.py), when it is not the study's."""
    rows = summarise(runs, trial_values(study))
    found = ablation.split(rows)  # None unless the KD-fair rows were retrained (augsearch/ablation.py)
    kd_tuned = _read_json(study_dir / "kd-tuned.json")
    teacher = study.user_attrs.get("teacher")
    cost = search_cost(study)
    searched_row = next((row for row in rows if row.kind == "searched"), None)
    ratio = cost["seconds"] / searched_row.seconds if searched_row and searched_row.seconds else None
    fidelity = proxy_fidelity(study, rows)
    counts = trial_counts(study)
    cost_line = f"search: {cost['seconds']:.0f}s of trials on {cost['device']}"
    if ratio:
        cost_line += f"; one final retrain: {searched_row.seconds:.0f}s (search = {ratio:.1f}x a retrain)"
    if cost["teacher_saved"] is not None:
        cost_line += f"; teacher passes saved in the trials: {_percent(cost['teacher_saved'])}"
    retrained = sum(row.kind == "searched" for row in rows)
    interval = spearman_interval(fidelity, retrained) if fidelity is not None else None
    fidelity_line = "rank fidelity of the trials: " + (
        f"Spearman {fidelity:+.2f} between trial validation and retrained test accuracy "
        f"over {retrained} trials"
        + (f", 95% interval [{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else "")
        if fidelity is not None
        else "needs at least 3 retrained trials (`augsearch retrain --top 8`)"
    )
    correlation = proxy_correlation(study)
    proxy_line = "T. stddev proxy vs trial accuracy: " + (
        f"Spearman {correlation:+.2f} (negative means the proxy ranks policies as the trials do)"
        if correlation is not None
        else "needs at least 3 complete trials with the proxy on"
    )
    lines = [
        table(rows, teacher),
        verdict(rows),
        *(ablation.describe(found) if found else []),
        *([describe_kd_tuned(kd_tuned)] if kd_tuned and any(row.name == KD_TUNED for row in rows) else []),
        *_versus_kd_tuned(rows),
        *_versus_twins(rows),
        cost_line,
        f"trials: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed",
        fidelity_line,
        proxy_line,
    ]
    lines += synthesis_lines(runs, study.get_trials(deepcopy=False), study.user_attrs.get("synthesis_source"))
    text = "\n".join(lines)
    curves = strength_curves(study, runs)
    plots = _plots(study, rows, study_dir, samples, curves)
    best = study.best_trial if counts["complete"] else None
    markdown = [
        f"# augsearch study `{study.study_name}`",
        "",
        f"Space `{study.user_attrs.get('space')}`, dataset `{study.user_attrs.get('dataset')}`, "
        f"student `{study.user_attrs.get('student')}`.",
        "",
        *([f"**Transfer**: every row below retrained on student `{student}`.", ""] if student else []),
        *(["Ablation: " + ABLATION_DEFINITION, ""] if found else []),
        "```",
        text,
        "```",
        "",
    ]
    if best is not None:
        markdown += ["## Best policy", "", f"Trial {best.number}, validation accuracy {best.value:.4f}:", ""]
        markdown += ["```", best.user_attrs.get(POLICY, ""), "```", ""]
    if curves:
        markdown += ["## Augmentation strength", "", "```", *strength_lines(curves), "```", ""]
    markdown += [f"![{name}]({name})" for name in plots] + [""]
    csv_buffer = io.StringIO()
    writer = csv.DictWriter(csv_buffer, fieldnames=[*asdict(rows[0]).keys()] if rows else ["name"])
    writer.writeheader()
    for row in rows:
        accuracies = " ".join(f"{a:.4f}" for a in row.accuracies)
        writer.writerow({**asdict(row), "seeds": " ".join(map(str, row.seeds)), "accuracies": accuracies})
    files.write_text(study_dir / "results.csv", csv_buffer.getvalue())
    files.write_text(study_dir / "trials.csv", trials_csv(study))
    summary = {"rows": [asdict(row) for row in rows], "verdict": verdict(rows), "search": cost}
    summary |= {
        "trials": counts,
        "proxy_fidelity": fidelity,
        "proxy_correlation": correlation,
        "teacher": teacher,
        "plots": plots,
    }
    if found:
        summary["ablation"] = ablation.as_dict(found)
    if kd_tuned:
        summary["kd_tuned"] = kd_tuned
    if twins := _versus_twins(rows):
        summary["twins"] = twins
    if student:
        summary["transfer_student"] = student
    files.write_json(study_dir / "results.json", summary)
    files.write_text(study_dir / "report.md", "\n".join(markdown))
    return text

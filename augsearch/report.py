"""The run's summary: a table on the terminal, ``report.md`` and ``results.json`` in the study folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import optuna

from augsearch import files


def trial_counts(study: optuna.Study) -> dict[str, int]:
    counts = Counter(trial.state.name.lower() for trial in study.get_trials(deepcopy=False))
    return {state: counts.get(state, 0) for state in ("complete", "pruned", "fail", "running", "waiting")}


def table(summary: dict[str, Any]) -> str:
    """A plain-text table: teacher ceiling, then each retrained student, with the KD gain stated."""
    rows = [("teacher " + summary["teacher"]["model"], summary["teacher"]["test_accuracy"], "", "")]
    for result in summary["retrain"]:
        rows.append(
            (
                f"{summary['student']}: {result['name']}",
                result["test_accuracy"],
                f"{result['epochs']}",
                f"{result['train_seconds']:.0f}s",
            )
        )
    lines = [f"{'model / policy':<40} {'test acc':>9} {'epochs':>7} {'train':>7}"]
    lines += [f"{name:<40} {acc:>9.4f} {epochs:>7} {secs:>7}" for name, acc, epochs, secs in rows]
    by_name = {result["name"]: result["test_accuracy"] for result in summary["retrain"]}
    if "searched + KD" in by_name and "searched, no KD" in by_name:
        gain = by_name["searched + KD"] - by_name["searched, no KD"]
        lines.append(
            f"KD gain over the same student without KD: {gain * 100:+.2f} points (one seed each, "
            "so within seed noise unless large)"
        )
    counts = summary["trials"]
    lines.append(
        f"trials: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed; "
        f"best trial {summary['best_trial']['number']} at validation accuracy "
        f"{summary['best_trial']['validation_accuracy']:.4f}"
    )
    return "\n".join(lines)


def write(study_dir: Path, summary: dict[str, Any]) -> str:
    text = table(summary)
    markdown = [
        f"# augsearch study `{summary['study']}`",
        "",
        f"Space `{summary['space']}`, dataset `{summary['dataset']}`, device {summary['device']}.",
        "",
        "```",
        text,
        "```",
        "",
        "## Best policy",
        "",
        "```",
        summary["best_trial"]["policy"],
        "```",
        "",
        f"Search this run: {summary['search_seconds_this_run']:.0f}s; "
        f"whole run: {summary['wall_seconds_this_run']:.0f}s.",
        "",
    ]
    files.write_json(study_dir / "results.json", summary)
    files.write_text(study_dir / "report.md", "\n".join(markdown))
    return text

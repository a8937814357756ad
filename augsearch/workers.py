"""Workers: processes that run the trials of one shared study until it has enough finished ones.

Scaling out is Optuna's own model: any number of processes, on one machine or many, each asking the
shared storage (a PostgreSQL server, or a journal file on one machine) for the next trial. ``augsearch
run --workers K`` prepares everything once (data, teacher, study) and starts K ``augsearch worker``
processes; ``augsearch worker --study NAME --storage URL`` joins a study from any machine.

Each worker runs the trial loop of ``augsearch/trials.py``, which says what "nothing lost" means and
who sees to it; this module only starts the processes and is the ``worker`` command.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from augsearch.attributes import FAIL_REASON, PRUNED_REASON
from augsearch.errors import UserError
from augsearch.owner import refuse_sqlite_worker, release_study, share_study
from augsearch.redaction import STORAGE_ENV
from augsearch.runtime import cpu_share, visible_gpus, worker_environments
from augsearch.storage import load_stored_study, study_storage_url
from augsearch.study import make_objective, open_study
from augsearch.teacher import checkpoint_sha256
from augsearch.trials import Interrupted, run_trials
from augsearch.workspace import synthesis_for, teacher_for, trial_context, workspace_of


class WorkersFailed(RuntimeError):
    """Workers died before the study had its trials (the message says which and how)."""


def worker_token() -> int:
    """This process's worker number: the one ``run --workers`` gave it, else one from host and pid (a
    worker started by hand on some machine), so that no two workers share a sampler seed."""
    given = os.environ.get("AUGSEARCH_WORKER_INDEX", "")
    if given.isdigit():
        return int(given)
    return 1 + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())


@dataclass(frozen=True)
class WorkerOptions:
    """``augsearch worker``'s settings; ``trials=None``: the target the study's ``run`` recorded."""

    study: str
    studies_dir: Path = Path("studies")
    storage: str | None = None
    trials: int | None = None
    timeout: float | None = None
    device: str = "auto"
    data_dir: Path | None = None


def work(options: WorkerOptions) -> int:
    """``augsearch worker``: join an existing study and run its trials until it has enough; returns how
    many this worker ran. Its space, dataset and seed come from the study (as ``retrain`` rebuilds them);
    the teacher from the study's checkpoint, else the cache in ``--studies-dir/teachers`` (trained there
    from the same seed if missing)."""
    url = study_storage_url(options.study, options.studies_dir, options.storage)
    refuse_sqlite_worker(url)
    stored = load_stored_study(options.study, options.studies_dir, url)
    share_study(options.study, url)  # a `run` of the study is refused while this worker lives (owner.py)
    target = options.trials if options.trials is not None else stored.user_attrs.get("target_trials")
    if target is None:
        raise UserError(f"study '{options.study}' records no target number of trials; pass --trials N")
    if int(target) < 1:
        raise UserError(f"--trials must be at least 1, got {target}")
    workspace = workspace_of(stored, options.data_dir, options.device)
    index = worker_token()
    recorded = stored.user_attrs.get("teacher_checkpoint")
    checkpoint = Path(recorded) if recorded and Path(recorded).is_file() else None
    sha256 = checkpoint_sha256(workspace.space, checkpoint)  # part of the study's fingerprint
    study = open_study(
        options.study, url, workspace.space, workspace.data.name, workspace.seed, index, sha256
    )
    teacher, _ = teacher_for(workspace, options.studies_dir, checkpoint)
    synthesis = synthesis_for(workspace, teacher, options.studies_dir)  # run trained or cached it
    context = trial_context(workspace, teacher, options.studies_dir / options.study, synthesis)
    name = os.environ.get("AUGSEARCH_WORKER_INDEX", str(os.getpid()))
    print(f"worker {name}: {workspace.runtime.describe()}; target {target} finished trials", flush=True)
    ran = run_trials(
        study,
        make_objective(context),
        int(target),
        timeout=options.timeout,
        callbacks=[_say_trial(name)],
        wait_for_others=True,
    )
    release_study(options.study, url)
    return ran


def _say_trial(name: str) -> Callable[[optuna.Study, FrozenTrial], None]:
    def say(study: optuna.Study, trial: FrozenTrial) -> None:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        why = trial.user_attrs.get(FAIL_REASON) or trial.user_attrs.get(PRUNED_REASON) or ""
        state = trial.state.name.lower()
        print(f"worker {name}: trial {trial.number:>3} {state:<8} val {value} {why}".rstrip(), flush=True)

    return say


@dataclass(frozen=True)
class SpawnOptions:
    """What ``run --workers K`` hands each worker."""

    count: int
    study: str
    studies_dir: Path
    storage: str
    trials: int
    timeout: float | None = None
    device: str = "auto"
    data_dir: Path | None = None


def worker_command(options: SpawnOptions) -> list[str]:
    command = [sys.executable, "-m", "augsearch", "worker", "--study", options.study]
    command += ["--studies-dir", str(options.studies_dir)]  # the storage URL goes by environment
    command += ["--trials", str(options.trials), "--device", options.device]
    if options.timeout is not None:
        command += ["--timeout", str(options.timeout)]
    if options.data_dir is not None:
        command += ["--data-dir", str(options.data_dir)]
    return command


def spawn_workers(options: SpawnOptions, say: Callable[[str], None] = print) -> list[int]:
    """Start ``count`` worker processes on this machine and wait for all; returns their exit codes.

    Each gets its share of the cores and, with several GPUs, its own GPU (runtime.worker_environments).
    SIGINT or SIGTERM to this process is passed on to the workers as SIGTERM (each then gives its
    running trial back), and once they have exited this process raises :class:`Interrupted`.
    """
    environments = worker_environments(
        options.count, dict(os.environ), visible_gpus(options.device), cpu_share()
    )
    received: list[int] = []
    processes: list[subprocess.Popen] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    in_main = threading.current_thread() is threading.main_thread()
    numbers = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, forward) for number in numbers} if in_main else {}
    try:
        for index, env in enumerate(environments):
            env = env | {STORAGE_ENV: options.storage}  # not on the command line: `ps` shows it to all
            processes.append(subprocess.Popen(worker_command(options), env=env))
            say(f"started worker {index} (pid {processes[-1].pid})")
            if received:  # a signal came while starting: the new one must stop too
                forward(received[0], None)
        codes = [process.wait() for process in processes]
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if received:
        raise Interrupted(received[0])
    return codes


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"

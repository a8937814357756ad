"""Journal damage mid-file (a torn record a live writer then appended to) leaves a study every reader opens,
nothing earlier lost; a failing heartbeat is said on stderr, once a minute at most."""

import os
import time

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from test_postgres import database  # noqa: F401  (fixture: a fresh database on the test server)

from augsearch import notes
from augsearch.storage import beating, load_stored_study, open_storage

X = {"x": FloatDistribution(0.0, 1.0)}


def test_a_torn_record_followed_by_a_live_append_leaves_a_study_every_reader_opens(tmp_path, capfd):
    path = tmp_path / "smoke" / "journal.log"
    path.parent.mkdir()
    live = optuna.create_study(study_name="smoke", storage=open_storage(str(path)), direction="maximize")
    for value in (0.1, 0.2, 0.3):
        live.tell(live.ask(X), value)
    other = optuna.load_study(study_name="smoke", storage=open_storage(str(path)))
    last = path.read_bytes().splitlines()[-1]
    with open(path, "ab") as handle:  # a writer killed half-way through its record
        handle.write(last[: len(last) // 2])
    live.ask(X)  # a live writer appends on top of the torn record: one line of both
    with pytest.raises(ValueError):  # and a second live writer's next append makes the file unreadable
        other.tell(other.ask(X), 0.5)
    with pytest.raises(ValueError):  # for every reader: Optuna's own
        optuna.load_study(study_name="smoke", storage=JournalStorage(JournalFileBackend(str(path))))
    damaged_bytes = path.read_bytes()
    capfd.readouterr()

    study = load_stored_study("smoke", tmp_path, None)  # what every augsearch command opens it with
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dropped 1 damaged record(s) in the middle of the journal" in err[0], err
    trials = study.get_trials()
    assert [(t.number, t.state, t.value) for t in trials[:3]] == [
        (0, TrialState.COMPLETE, 0.1),
        (1, TrialState.COMPLETE, 0.2),
        (2, TrialState.COMPLETE, 0.3),
    ]
    assert len(trials) == 5  # the live writers' trials, whose records were whole, are kept too
    kept = list(tmp_path.glob("smoke/journal.log.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged_bytes
    plain = optuna.load_study(study_name="smoke", storage=JournalStorage(JournalFileBackend(str(path))))
    assert len(plain.get_trials()) == 5  # optuna-dashboard's reader too
    study.tell(study.ask(X), 0.9)  # and it takes writes again
    assert load_stored_study("smoke", tmp_path, None).best_value == 0.9
    assert capfd.readouterr().err == ""  # repaired once: nothing more to say


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_failing_heartbeat_is_said_once_a_minute(database, monkeypatch, capfd):  # noqa: F811
    monkeypatch.setenv("AUGSEARCH_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setattr(notes, "_LAST_NOTE", {})
    study = optuna.create_study(study_name="s", storage=open_storage(database))
    trial = study.ask(X)
    beats: list[int] = []

    def unreachable(trial_id: int) -> None:
        beats.append(trial_id)
        raise ConnectionError("server closed the connection unexpectedly")

    monkeypatch.setattr(study._storage, "record_heartbeat", unreachable)
    capfd.readouterr()
    with beating(study, trial):
        while len(beats) < 3:  # three failed beats, one second apart
            time.sleep(0.1)
    err = capfd.readouterr().err.strip().splitlines()
    said = (
        f"note: worker {os.getpid()}: heartbeat of trial 0 failed: server closed the connection unexpectedly"
    )
    assert err == [said]

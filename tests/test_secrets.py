"""A storage URL's password never reaches a file augsearch writes, an error line or a command line."""

from pathlib import Path

import pytest
from conftest import run_cli
from test_faults import Process
from test_postgres import database  # noqa: F401  (fixture: a fresh database on the test server)

from augsearch.errors import UserError
from augsearch.redaction import STORAGE_ENV, redact, storage_option
from augsearch.storage import open_storage
from augsearch.workers import SpawnOptions, worker_command


def test_redact_hides_only_the_password():
    assert redact("postgresql://augsearch:pa:ss@127.0.0.1/db") == "postgresql://augsearch:***@127.0.0.1/db"
    assert redact("postgresql+psycopg://u:x%40y@h:5432/d?sslmode=require") == (
        "postgresql+psycopg://u:***@h:5432/d?sslmode=require"
    )
    for plain in ("postgresql://augsearch@127.0.0.1/db", "sqlite:////tmp/s.db", "/tmp/journal.log"):
        assert redact(plain) == plain


def test_storage_comes_from_the_environment_when_not_given(monkeypatch):
    monkeypatch.setenv(STORAGE_ENV, "postgresql://u:secretpw@h/db")
    assert storage_option(None) == "postgresql://u:secretpw@h/db"
    assert storage_option("/tmp/j.log") == "/tmp/j.log"
    monkeypatch.delenv(STORAGE_ENV)
    assert storage_option(None) is None


def test_worker_command_has_no_storage_url():
    url = "postgresql://augsearch:topsecret@127.0.0.1/db"
    command = worker_command(SpawnOptions(2, "s", Path("out"), url, 3))
    assert not any("topsecret" in part for part in command) and "--storage" not in command


def test_the_error_for_an_unreachable_server_hides_the_password():
    with pytest.raises(UserError) as caught:
        open_storage("postgresql://augsearch:topsecret@127.0.0.1:1/nowhere")
    assert "topsecret" not in str(caught.value) and "augsearch:***@127.0.0.1:1" in str(caught.value)


def _needles(url: str) -> list[str]:
    """What a leak of ``url``'s password looks like: ``:PASSWORD@`` (any URL that carries it), and the bare
    password unless it is a word augsearch prints anyway (the test server's default password is the
    package's own name, which every command line holds)."""
    secret = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert secret, "the test needs a URL with a password"
    return [f":{secret}@"] + ([secret] if secret not in ("augsearch", "smoke", "worker") else [])


def _command_lines(pids: list[int]) -> list[str]:
    lines = []
    for pid in pids:
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except FileNotFoundError:  # already done
            continue
    return lines


def test_a_multi_worker_search_writes_and_shows_no_password(database, tmp_path):  # noqa: F811
    """A real 2-worker search on PostgreSQL with a password URL: no file under the studies folder, no line of
    output and no worker's command line (read from /proc while it runs) holds the password."""
    needles = _needles(database)
    args = ("--space", "smoke", "--studies-dir", "out", "--storage", database, "--no-retrain", "--seed", "0")
    process = Process("run", *args, "--workers", "2", "--trials", "3", cwd=tmp_path)
    pids = process.worker_pids(2)
    seen = _command_lines(pids)
    assert process.finish(300) == 0, "".join(process.lines)[-2000:]
    assert seen, "the workers ended before their command lines could be read"
    assert all("augsearch worker" in line for line in seen), seen
    assert [line for line in seen if any(needle in line for needle in needles)] == []
    output = "".join(process.lines)
    assert not any(needle in output for needle in needles)
    files = [path for path in (tmp_path / "out").rglob("*") if path.is_file()]
    assert any(path.name == "best_policy.json" for path in files)
    leaks = [path for path in files if any(needle.encode() in path.read_bytes() for needle in needles)]
    assert leaks == []
    assert "augsearch:***@" in (tmp_path / "out" / "smoke" / "best_policy.json").read_text()


def test_a_worker_takes_the_url_from_the_environment(database, tmp_path):  # noqa: F811
    """``augsearch worker`` with no --storage reads $AUGSEARCH_STORAGE; its errors show no password."""
    needles = _needles(database)
    result = run_cli(
        "worker", "--study", "missing", "--studies-dir", "out", cwd=tmp_path, env={STORAGE_ENV: database}
    )
    assert result.returncode == 2
    assert "no study named 'missing'" in result.stderr and not any(
        n in result.stderr + result.stdout for n in needles
    )


def test_the_dashboard_error_for_a_missing_study_hides_the_password(database, tmp_path):  # noqa: F811
    from augsearch.dashboard import DashboardOptions, make_server

    with pytest.raises(UserError) as caught:
        make_server(DashboardOptions("missing", tmp_path, database))
    assert "no study named 'missing'" in str(caught.value)
    assert not any(needle in str(caught.value) for needle in _needles(database))

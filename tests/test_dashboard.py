"""`augsearch dashboard`: a missing study, reading beside a running search, and a real headless browser."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from conftest import REPO, copy_of_run, run_cli

from augsearch.dashboard import DashboardOptions, make_server
from augsearch.errors import UserError
from augsearch.storage import default_storage, open_storage

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def smoke_study(smoke_run_once, tmp_path_factory) -> Path:
    """A copy of the suite's smoke run (3 trials, 3 previews) for the dashboard to serve."""
    return copy_of_run(smoke_run_once[0], tmp_path_factory.mktemp("dashboard"))


@contextmanager
def dashboard_process(cwd: Path, *args: str):
    """`augsearch dashboard ... --port 0` as a user runs it; yields (process, study URL); then Ctrl-C."""
    environment = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}
    environment["PYTHONFAULTHANDLER"] = "1"  # a stuck server dumps its threads' stacks on SIGABRT
    command = [sys.executable, "-m", "augsearch", "dashboard", "--port", "0", *args]
    # A suite started in the background by a script (`pytest ... &`) has SIGINT ignored, and a child
    # inherits an ignored signal, so Ctrl-C could never stop the server. A handled one is reset to the
    # default in the child, as in a terminal: handle it here while the child starts.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    watchdog = threading.Timer(120, process.kill)  # never let a stuck server hang the suite
    watchdog.start()
    try:
        line = process.stdout.readline().decode()
        found = re.search(r"http://127\.0\.0\.1:\d+/dashboard/studies/\d+", line)
        assert found, f"no URL in {line!r}; stderr: {process.stderr.read().decode()[-2000:]}"
        assert "no authentication" in line
        yield process, found.group(0)
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            process.wait(timeout=60)  # a loaded machine has taken more than 15 s to stop it
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack to stderr
            stderr = process.communicate(timeout=30)[1].decode()[-6000:]
            raise AssertionError(f"Ctrl-C did not stop the dashboard; its stacks:\n{stderr}") from None
        finally:
            watchdog.cancel()
            process.kill()


def test_the_run_stored_one_preview_per_trial(smoke_study):
    study = optuna.load_study(study_name="smoke", storage=default_storage(smoke_study / "out" / "smoke"))
    folder = smoke_study / "out" / "smoke" / "artifacts"
    for trial in study.trials:
        (meta,) = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
        assert meta.mimetype == "image/png" and (folder / meta.artifact_id).read_bytes()[:4] == b"\x89PNG"
    assert len(list(folder.iterdir())) == len(study.trials) == 3


def test_missing_study_is_one_line_and_exit_2(smoke_study):
    result = run_cli("dashboard", "--study", "nope", "--studies-dir", "out", cwd=smoke_study)
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.startswith("augsearch: error: no study database at out/nope/study.db; run ")
    assert result.stderr.count("\n") == 1
    storage = default_storage(smoke_study / "out" / "smoke")
    with pytest.raises(UserError, match="no study named 'nope'"):
        make_server(DashboardOptions(study="nope", storage=storage, port=0))


def test_ctrl_c_stops_the_dashboard_cleanly(smoke_study):
    with (
        dashboard_process(smoke_study, "--study", "smoke", "--studies-dir", "out") as (process, url),
        urllib.request.urlopen(url, timeout=30) as response,
    ):
        assert response.status == 200
    assert process.returncode == 0
    assert process.stdout.read().decode().strip() == "dashboard stopped"


WRITER = textwrap.dedent(
    """
    import sys
    import optuna
    from augsearch.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="busy", storage=open_storage(sys.argv[1]))

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for i in range(5):  # several commits per trial, like a real one's user attributes
            trial.set_user_attr(f"attr{i}", "a" * 500)
        for step in range(3):
            trial.report(x, step)
        return x

    study.optimize(objective, n_trials=int(sys.argv[2]))
    """
)


def test_dashboard_reads_while_a_search_writes(tmp_path):
    """Reader and writer share the SQLite file; the busy timeout makes each wait out the other."""
    storage_url = default_storage(tmp_path / "busy")
    (tmp_path / "busy").mkdir()
    optuna.create_study(study_name="busy", storage=open_storage(storage_url), direction="maximize")
    server, url = make_server(DashboardOptions(study="busy", studies_dir=tmp_path, port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = url.replace("/dashboard/studies/", "/api/studies/") + "?after=0"
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, storage_url, "12"], env=environment, stderr=subprocess.PIPE
    )
    reads, seen = 0, []
    try:
        while writer.poll() is None or reads == 0:
            with urllib.request.urlopen(api, timeout=60) as response:
                assert response.status == 200
                seen.append(len(json.loads(response.read())["trials"]))
            reads += 1
    finally:
        server.shutdown()
        server.server_close()
    assert writer.wait(timeout=60) == 0, writer.stderr.read().decode()[-2000:]
    assert reads >= 3 and seen == sorted(seen)  # the reader saw the study grow, never an error
    study = optuna.load_study(study_name="busy", storage=open_storage(storage_url))
    assert len(study.trials) == 12 and all(t.state.name == "COMPLETE" for t in study.trials)


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    return sync_playwright


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium (/usr/bin/chromium)")
@pytest.mark.skipif(_playwright() is None, reason="needs the playwright Python package")
def test_preview_shows_in_the_dashboard_in_a_real_browser(smoke_study, tmp_path):
    """As a user: open the dashboard, pick the study, a trial, its artifact; the image must load."""
    sync_playwright = _playwright()
    with (
        dashboard_process(smoke_study, "--study", "smoke", "--studies-dir", "out") as (_, url),
        sync_playwright() as playwright,
    ):
        base = url.split("/dashboard")[0]
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{base}/dashboard")
            page.get_by_role("link", name=re.compile(r"smoke")).first.click()  # the study list
            page.get_by_role("link", name="Trials (List)").click()
            page.get_by_text("Trial 1", exact=True).first.click()
            page.get_by_role("heading", name="Trial 1", exact=False).first.wait_for()
            card = page.get_by_role("img", name="augmentation-preview.png")  # the Artifacts section
            card.scroll_into_view_if_needed()
            page.wait_for_function(
                "image => image.complete && image.naturalWidth > 0", arg=card.element_handle()
            )
            assert card.evaluate("image => image.naturalWidth") == 466  # the smoke grid: 16 px -> 64 px cells
            page.screenshot(path=tmp_path / "trial.png")

            link = page.get_by_role("link", name="download artifact").first.get_attribute("href")
            artifact = (smoke_study / "out" / "smoke" / "artifacts" / link.rsplit("/", 1)[1]).read_bytes()
            assert page.request.get(base + link).body() == artifact
            page.goto(base + link)  # open the artifact itself, as its link does
            image = page.locator("img").first
            page.wait_for_function(
                "image => image.complete && image.naturalWidth > 0", arg=image.element_handle()
            )
            assert image.evaluate("image => [image.naturalWidth, image.naturalHeight]") == [466, 530]
            page.screenshot(path=tmp_path / "artifact.png")
        finally:
            browser.close()
    assert (tmp_path / "trial.png").stat().st_size > 10_000
    keep = os.environ.get("AUGSEARCH_KEEP_SCREENSHOTS")  # to look at them after the run
    if keep:
        for name in ("trial.png", "artifact.png"):
            shutil.copy(tmp_path / name, Path(keep) / name)

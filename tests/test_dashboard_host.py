"""The dashboard refuses requests whose Host header is not the address it listens on (issue 17, item 7:
DNS rebinding would otherwise let any web page reach optuna-dashboard's unauthenticated API)."""

from __future__ import annotations

import http.client
import threading

import optuna
import pytest

from augsearch.dashboard import DashboardOptions, allowed_hosts, make_server
from augsearch.storage import default_storage


@pytest.fixture
def served(tmp_path):
    """A real server on a free port, on a one-trial study; yields (port, study id, storage URL)."""
    storage = default_storage(tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    study.add_trial(optuna.trial.create_trial(value=0.5))
    server, _url = make_server(DashboardOptions(study="s", studies_dir=tmp_path, storage=storage, port=0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, study._study_id, storage
    finally:
        server.shutdown()
        server.server_close()


def _request(port: int, host: str | None, method: str = "GET", path: str = "/api/studies") -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest(method, path, skip_host=True)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_foreign_host_gets_403_and_the_bound_names_get_200(served):
    port, study_id, _ = served
    assert _request(port, "evil.example") == 403
    assert _request(port, f"evil.example:{port}") == 403
    assert _request(port, None) == 403
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"LOCALHOST:{port}"):
        assert _request(port, host) == 200, host
    assert _request(port, f"127.0.0.1:{port}", path=f"/dashboard/studies/{study_id}") == 200


def test_a_foreign_host_cannot_delete_the_study(served):
    port, study_id, storage = served
    assert _request(port, f"evil.example:{port}", "DELETE", f"/api/studies/{study_id}") == 403
    assert optuna.load_study(study_name="s", storage=storage).trials[0].value == 0.5


def test_allowed_hosts_follow_the_bound_address():
    assert allowed_hosts("127.0.0.1", 8080) >= {"127.0.0.1:8080", "localhost:8080", "[::1]:8080"}
    assert "[::1]:9" in allowed_hosts("::1", 9) and "evil.example:9" not in allowed_hosts("::1", 9)
    assert "10.0.0.7:80" in allowed_hosts("10.0.0.7", 80)
    assert "evil.example:80" not in allowed_hosts("0.0.0.0", 80)

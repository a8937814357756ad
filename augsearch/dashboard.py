"""``augsearch dashboard``: optuna-dashboard on one study, with its trials' preview grids.

optuna-dashboard has no authentication: whoever reaches the port can read the study and change it
(notes, deletions). So it binds to 127.0.0.1 unless told otherwise. It runs beside a search without
disturbing it: both sides open the study through :func:`augsearch.storage.open_storage`. For a SQLite
file its 60 s busy timeout makes a reader wait out a writer's commit (and the other way round) instead
of failing with "database is locked"; a journal file (a search with several workers) is read under the
journal's own lock; a server needs nothing.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import optuna_dashboard

from augsearch.errors import UserError
from augsearch.preview import artifact_store
from augsearch.redaction import redact
from augsearch.storage import open_storage, study_storage_url


@dataclass(frozen=True)
class DashboardOptions:
    """``augsearch dashboard``'s settings; ``port=0`` lets the system pick a free port."""

    study: str = "default"
    studies_dir: Path = Path("studies")
    storage: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080


class _Server(ThreadingMixIn, WSGIServer):
    """wsgiref, one thread per request (the page loads several at once), threads die with the process."""

    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log: the terminal keeps the URL line readable."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def make_server(options: DashboardOptions) -> tuple[WSGIServer, str]:
    """The bound (not yet serving) server and the study's page URL; a missing study is a UserError."""
    url = study_storage_url(options.study, options.studies_dir, options.storage)
    storage = open_storage(url)
    try:
        study_id = storage.get_study_id_from_name(options.study)
    except KeyError:
        raise UserError(f"no study named '{options.study}' in {redact(url)}") from None
    app = optuna_dashboard.wsgi(
        storage, artifact_store=artifact_store(options.studies_dir / options.study / "artifacts")
    )
    server_class = _Server6 if ":" in options.host else _Server
    try:
        server = server_class((options.host, options.port), _QuietHandler)
    except (OSError, OverflowError) as error:
        raise UserError(f"cannot listen on {options.host}:{options.port}: {error}") from None
    server.set_app(host_guard(app, allowed_hosts(options.host, server.server_port)))
    host = f"[{options.host}]" if ":" in options.host else options.host
    return server, f"http://{host}:{server.server_port}/dashboard/studies/{study_id}"


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` header values a request to a server bound to ``host:port`` may carry.

    Why: optuna-dashboard's API changes the study (deletes, ``tell``) without authentication, and
    DNS rebinding lets any web page a browser on this machine opens send requests to 127.0.0.1 under
    its own name (``Host: evil.example:PORT``). Refusing unknown names closes that. The loopback names
    and the ``--host`` given are allowed, with or without the port; a wildcard ``--host`` (0.0.0.0,
    ::) adds this machine's name and addresses, since the network reaches it by those.
    """
    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    if host in ("0.0.0.0", "::", ""):
        machine = socket.gethostname()
        names |= {machine, socket.getfqdn()}
        with contextlib.suppress(OSError):
            names |= set(socket.gethostbyname_ex(machine)[2])
    names = {name.lower() for name in names if name}
    return frozenset(names | {f"{name}:{port}" for name in names})


def host_guard(app: Callable, allowed: frozenset[str]) -> Callable:
    """WSGI middleware: 403 for a request whose ``Host`` is not in ``allowed`` (see
    :func:`allowed_hosts`), before optuna-dashboard sees it."""

    def guarded(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("HTTP_HOST", "").lower() not in allowed:
            body = b"403 Forbidden: this dashboard answers only to the address it listens on\n"
            headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
            start_response("403 Forbidden", headers)
            return [body]
        return app(environ, start_response)

    return guarded


def serve(options: DashboardOptions) -> None:
    """Print the URL, serve until Ctrl-C or SIGTERM, then stop cleanly (the command exits 0).

    Call from the main thread (signal handlers can only be set there).
    """
    server, url = make_server(options)
    print(f"optuna-dashboard at {url} (no authentication; Ctrl-C stops it)", flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt

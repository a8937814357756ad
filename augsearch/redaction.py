"""Secrets in storage URLs: a database password never reaches a file, a log line or a command line.

A storage URL may carry a password (``postgresql://user:PASSWORD@host/db``). Everything augsearch
writes or prints shows the URL through :func:`redact`; worker processes get the URL through the
environment (:data:`STORAGE_ENV`), never through their command line, which ``ps`` shows to every user.
A user can keep the password out of their own command line too: a URL without one plus libpq's
``PGPASSWORD`` or ``~/.pgpass`` (psycopg reads both), or the whole URL in ``AUGSEARCH_STORAGE``.
"""

from __future__ import annotations

import os
import re

STORAGE_ENV = "AUGSEARCH_STORAGE"  # the storage URL, when --storage is not given

# scheme://user:password@ -> the password is everything between the first ':' after '//' and the last '@'
_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@]*:)(?P<secret>.*)(?P<tail>@[^@]*)$")


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: what may be shown or written anywhere."""
    match = _PASSWORD.match(url)
    if match is None or not match.group("secret"):
        return url
    return f"{match.group('head')}***{match.group('tail')}"


def redact_text(text: str, url: str) -> str:
    """``text`` (an error message, say) with ``url`` and its password redacted wherever they occur."""
    match = _PASSWORD.match(url)
    text = text.replace(url, redact(url))
    if match is not None and len(match.group("secret")) >= 4:  # a shorter one would mangle the text
        text = text.replace(match.group("secret"), "***")
    return text


def storage_option(given: str | None) -> str | None:
    """The storage URL a command uses: ``--storage``, else ``$AUGSEARCH_STORAGE``, else None (the
    study's own file)."""
    if given is not None:
        return given
    return os.environ.get(STORAGE_ENV) or None

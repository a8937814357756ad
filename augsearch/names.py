"""Names that become folder names: a study's name (``--study NAME``, a space's ``name:``).

Why a check: ``<studies>/<study>/`` holds the report, the journal and the retrain folder, so a name
such as ``/etc/x`` or ``../x`` would write them outside ``--studies-dir``. A name is therefore one
plain path component: a letter or digit, then up to 63 letters, digits, ``.``, ``_`` or ``-`` (so
never ``.``, ``..``, a slash, a space or a control character, on any file system).
"""

from __future__ import annotations

import re

from augsearch.errors import UserError

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
STUDY_NAME_RULE = "a letter or digit, then up to 63 letters, digits, '.', '_' or '-'"


def study_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a study's folder name, or None."""
    if isinstance(name, str) and STUDY_NAME.fullmatch(name):
        return None
    shown = repr(name) if not isinstance(name, str) or len(name) <= 80 else repr(name[:80]) + "..."
    return f"expected a study name ({STUDY_NAME_RULE}), got {shown}"


def check_study_name(name: object, where: str) -> str:
    """``name`` if it is a safe study name, else a one-line :class:`UserError` naming ``where``."""
    problem = study_name_problem(name)
    if problem:
        raise UserError(f"{where}: {problem}")
    return str(name)

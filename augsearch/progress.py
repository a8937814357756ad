"""Progress on a terminal, plain lines in a log.

tqdm redraws its bars with carriage returns: on a terminal that is one moving line, in a log file
(``augsearch run > run.log 2>&1``) it is thousands of lines. So the bars are drawn only when standard
error, where tqdm draws them, is a terminal; otherwise each finished epoch prints one plain line there
instead, and the lines that say how each trial and retrain run ended are printed either way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def interactive() -> bool:
    """Whether progress bars can redraw in place: standard error is a terminal."""
    return sys.stderr.isatty()


def bar(iterable: Iterable | None = None, **options: Any) -> tqdm:
    """A tqdm bar on a terminal; elsewhere a disabled one (its ``write`` still prints)."""
    return tqdm(iterable, disable=not interactive(), **options)


def line(text: str) -> None:
    """One plain line on standard error, where the bar would have been; only when no bar is drawn."""
    if not interactive():
        print(text, file=sys.stderr, flush=True)

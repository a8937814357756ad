"""Progress: bars on a terminal, one plain line per finished epoch in a log (augsearch/progress.py)."""

import io

from augsearch import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal_and_plain_lines_only_elsewhere(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    assert progress.bar(range(3)).disable
    progress.line("trial 0 epoch 1/1: train loss 1.0000")
    assert log.getvalue() == "trial 0 epoch 1/1: train loss 1.0000\n"

    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = progress.bar(range(3), file=terminal)
    assert not bar.disable
    bar.close()
    before = terminal.getvalue()
    progress.line("not printed: the bar shows it")
    assert terminal.getvalue() == before

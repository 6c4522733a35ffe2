"""The library's logger: `logging.getLogger("dcanas")`, silent until an application configures it."""
from __future__ import annotations

import logging
import sys

LOG = logging.getLogger("dcanas")
LOG.addHandler(logging.NullHandler())  # a library never prints unless asked (the logging HOWTO's advice)


class _StderrHandler(logging.Handler):
    """Bare messages on whatever sys.stderr is at the time (tests and notebooks replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never take the run down
            self.handleError(record)


def log_to_stderr(level: int = logging.INFO) -> None:
    """What the command line does: messages on stderr, so --json output on stdout stays clean."""
    if not any(isinstance(h, _StderrHandler) for h in LOG.handlers):
        LOG.addHandler(_StderrHandler())
    LOG.setLevel(level)
    LOG.propagate = False

"""Progress bars for the long steps (sample loading, Algorithm 1, Algorithm 2 rounds, stats).

One helper, ``progress(iterable, total=None, desc=None, enabled=False)``: with ``enabled`` it wraps
the iterable in a tqdm bar on stderr, otherwise (and when tqdm is missing) it returns the iterable
itself, untouched. Library code threads a ``progress: bool`` down to here; the CLI decides it
(off with ``--quiet`` or when stderr is not a terminal). Bars are transient (``leave=False``) so
they do not interleave with log lines. Only tqdm 4.x arguments that old releases (Debian
bullseye's 4.57) accept are used.

Log levels: the CLI logs ``magic_init``'s summary at INFO (the default), per-layer progress and
per-layer results at ``VERBOSE`` (``-v``, between INFO and DEBUG) and internals at DEBUG (``-vv``).
"""
from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

#: Per-layer progress and results (``-v``): which layer Algorithm 1 / Algorithm 2 is on, what it found.
VERBOSE = 15
logging.addLevelName(VERBOSE, "VERBOSE")


def _tqdm():
    """tqdm's class, or None when it is not installed (progress is then silently off)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but bars are optional
        log.debug("tqdm is not installed: no progress bars")
        return None
    return tqdm


def progress(iterable, total=None, desc=None, enabled=False, unit="it"):
    """``iterable`` with a progress bar on stderr when ``enabled``; the iterable unchanged otherwise.

    ``total`` defaults to ``len(iterable)`` where it has one (tqdm's own rule)."""
    if not enabled:
        return iterable
    bar = _tqdm()
    if bar is None:
        return iterable
    return bar(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
               dynamic_ncols=True, mininterval=0.2)


class BarSafeHandler(logging.StreamHandler):
    """A stderr log handler. With ``bars`` it prints through ``tqdm.write``, so log lines appear
    above an active bar instead of being cut into it (``tqdm.write`` exists in every tqdm 4.x).

    It writes to the ``sys.stderr`` of the moment, not the one it was made with, so that a stream
    swapped in later (click's CliRunner, pytest's capsys) gets the lines and a closed one is never
    written to."""

    def __init__(self, bars=True):
        super().__init__(sys.stderr)
        self.bars = bars

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ / setStream assign it: always sys.stderr
        pass

    def emit(self, record):
        bar = _tqdm() if self.bars else None
        if bar is None:
            super().emit(record)
            return
        try:
            bar.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise
            self.handleError(record)

"""Where a run's time goes: named spans of wall and CPU seconds, recorded only while ``recording()``.

The passes mark their parts with ``span("Algorithm 1", layer, "k-means")``; outside ``recording()``
a span costs one check. ``bench/profile_init.py`` records a CLI run and prints the table (issue 15's
time budget).
"""
from __future__ import annotations

import contextlib
import functools
import time

_records = None       # list of (path, wall seconds, CPU seconds) while recording, else None
_stack = []


@contextlib.contextmanager
def span(*names):
    """Time the body as the span ``names`` (nested under the spans open around it).

    Args:
        *names: the span's name parts, e.g. ("Algorithm 1", "conv1", "k-means").

    Returns:
        A context manager.
    """
    if _records is None:
        yield
        return
    _stack.append(" / ".join(str(n) for n in names))
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        _records.append((tuple(_stack), time.perf_counter() - wall, time.process_time() - cpu))
        _stack.pop()


def timed(*names):
    """Decorator: every call of the function is the span ``names``.

    Args:
        *names: the span's name parts.

    Returns:
        The decorator.
    """
    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with span(*names):
                return function(*args, **kwargs)
        return wrapper
    return decorate


@contextlib.contextmanager
def recording():
    """Record the spans of the body; yields the list of (path tuple, wall s, CPU s), innermost first.

    Returns:
        A context manager yielding that list (filled as the spans close).
    """
    global _records
    previous, _records = _records, []
    try:
        yield _records
    finally:
        _records = previous


@contextlib.contextmanager
def counting_passes():
    """Count the images each layer of the built-in engine runs forward and backward in the body.

    Yields a function ``passes(images) -> {"forward": f, "backward": b}``: the most any layer ran in
    each direction, divided by ``images`` (the sample size), so one pass over the sample is 1.

    Returns:
        A context manager yielding that function.
    """
    from collections import Counter

    from magic_init.engine.net import Net
    counts = Counter()
    forward, backward = Net._forward_layer, Net._backward_layer

    def count_forward(self, i, record):
        if self.layers[i].type != "Input":
            counts["forward", i] += self.blobs[self.layers[i].param.bottom[0]].shape[0]
        return forward(self, i, record)

    def count_backward(self, i):
        counts["backward", i] += self.blobs[self.layers[i].param.top[0]].shape[0]
        return backward(self, i)

    def passes(images):
        return {d: max((c for (direction, _), c in counts.items() if direction == d), default=0) / images
                for d in ("forward", "backward")}

    Net._forward_layer, Net._backward_layer = count_forward, count_backward
    try:
        yield passes
    finally:
        Net._forward_layer, Net._backward_layer = forward, backward


"""magic_init.timing: spans nest, record wall and CPU seconds only while recording, and a recorded
CLI run names the parts of issue 15's time budget."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from magic_init import timing

REPO = Path(__file__).resolve().parent.parent


def test_spans_nest_and_are_recorded_only_while_recording():
    with timing.span("outside"):
        pass
    with timing.recording() as records:
        with timing.span("a"):
            with timing.span("b", "c"):
                time.sleep(0.01)
    assert [path for path, _, _ in records] == [("a", "b / c"), ("a",)]
    assert records[0][1] >= 0.01 and records[1][1] >= records[0][1]
    with timing.span("after"):
        pass
    assert len(records) == 2


def test_timed_keeps_the_function_and_records_each_call():
    @timing.timed("work")
    def work(x):
        """Doubles."""
        return 2 * x
    assert work.__name__ == "work" and work.__doc__ == "Doubles."
    with timing.recording() as records:
        assert work(2) == 4 and work(3) == 6
    assert [path for path, _, _ in records] == [("work",), ("work",)]


def test_a_recorded_run_names_every_part_of_the_budget(tmp_path):
    pytest.importorskip("torch")
    from magic_init import cli
    with timing.recording() as records:
        try:
            cli.main([str(REPO / "models/tiny.prototxt"), str(tmp_path / "out.caffemodel"), "--data",
                      str(REPO / "examples/images/list.txt"), "--init", "kmeans", "--backend", "torch", "-q"])
        except SystemExit as error:
            assert not error.code
    paths = {path for path, _, _ in records}
    for part in [("building the net",), ("reading the sample",), ("writing the model",),
                 ("Algorithm 2 / round 1 / measuring (forward+backward)",)]:
        assert part in paths, part
    conv = [p for p in paths if p[0].startswith("Algorithm 1 / ") and "k-means" in p[-1]]
    assert conv, sorted(paths)

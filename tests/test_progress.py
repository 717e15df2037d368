"""magic_init.progress: bars on stderr when enabled, the iterable itself when not; threaded through the API."""
from __future__ import annotations

from pathlib import Path

import pytest

from magic_init.progress import progress

REPO = Path(__file__).resolve().parent.parent
BAR_MARKS = ("it/s", "s/it", "%|", "\r", "█")


def test_disabled_returns_the_iterable_itself_and_prints_nothing(capfd):
    items = iter([1, 2, 3])
    assert progress(items, total=3, desc="x", enabled=False) is items
    assert list(progress(range(5), desc="x")) == [0, 1, 2, 3, 4]
    assert capfd.readouterr().err == ""


def test_enabled_yields_every_item_and_draws_on_stderr(capfd):
    generator = (i * i for i in range(7))
    assert list(progress(generator, total=7, desc="squares", enabled=True)) == [0, 1, 4, 9, 16, 25, 36]
    out, err = capfd.readouterr()
    assert out == ""
    assert "squares" in err


def tiny_net_and_sample():
    pytest.importorskip("torch")
    import magic_init

    model = magic_init.read_model(str(REPO / "models" / "tiny.prototxt"))
    net = magic_init.build_net(model, backend="torch", batch_size=4)
    sample = magic_init.load_sample(net, model, data=str(REPO / "examples" / "images" / "list.txt"),
                                    num_images=8, batch_size=4, progress=True)
    return magic_init, net, sample.data


def test_api_draws_bars_for_sample_loading_algorithms_and_stats_only_when_asked(capfd):
    magic_init, net, x = tiny_net_and_sample()
    magic_init.initialize(net, x, batch_size=4, progress=True)
    from magic_init.measure_stat import measure

    measure(net, x, batch_size=4, progress=True)
    err = capfd.readouterr().err
    for label in ("loading sample", "Algorithm 1", "Algorithm 2, round 1/2", "stats: change rates"):
        assert label in err, err[-2000:]
    magic_init.rescale(net, x, batch_size=4, progress=False)
    measure(net, x, batch_size=4)
    err = capfd.readouterr().err
    assert not any(mark in err for mark in BAR_MARKS), err


def test_bar_safe_handler_prints_log_lines_whole_on_stderr(capfd):
    import logging

    from magic_init.progress import BarSafeHandler

    logger = logging.getLogger("magic_init.test_progress")
    handler = BarSafeHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for i in progress(range(2), desc="work", enabled=True):
            logger.warning("step %d of %s", i, "layer 'conv1'")
    finally:
        logger.removeHandler(handler)
    err = capfd.readouterr().err
    assert "WARNING step 0 of layer 'conv1'\n" in err and "WARNING step 1 of layer 'conv1'\n" in err

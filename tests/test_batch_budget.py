"""The batch size chosen from a memory budget (``magic_init.batch_budget``)."""
from __future__ import annotations

import pathlib

import pytest

pytest.importorskip("torch")

from magic_init import batch_budget, load  # noqa: E402

TINY = pathlib.Path(__file__).resolve().parents[1] / "models" / "tiny.prototxt"


def _net(batch_size="auto"):
    return load.build_net(load.read_model(str(TINY)), backend="torch", batch_size=batch_size)


def test_auto_builds_at_the_largest_auto_batch():
    net = _net()
    assert net.blobs[net.inputs[0]].shape[0] == batch_budget.MAX_AUTO_BATCH


def test_per_image_bytes_do_not_depend_on_the_built_batch():
    assert batch_budget.pass_bytes_per_image(_net(4)) == batch_budget.pass_bytes_per_image(_net(16))


def test_auto_batch_shrinks_with_a_small_budget():
    net = _net()
    per_image = batch_budget.pass_bytes_per_image(net)
    assert batch_budget.resolve_batch_size(net, "auto", 1024) == batch_budget.MAX_AUTO_BATCH
    budget_mb = 3 * per_image / 2 ** 20          # room for three images
    assert batch_budget.choose_batch_size(per_image, budget_mb) == 3
    assert batch_budget.choose_batch_size(per_image, per_image / 2 ** 20 / 10) == 1   # never below 1
    assert batch_budget.choose_batch_size(per_image, 1024, images=5) == 5             # nor above the sample


def test_the_weights_and_their_gradients_come_out_of_the_budget_down_to_a_quarter_of_it(monkeypatch):
    net = _net()
    per_image = batch_budget.pass_bytes_per_image(net)
    weights = batch_budget.weight_bytes(net)
    assert weights == 4 * sum(b.data.size for blobs in net.params.values() for b in blobs)
    mib = 2 ** 20
    assert 2 * weights < 9 * per_image              # (so that three images are more than a quarter below)
    assert batch_budget.resolve_batch_size(net, "auto", (2 * weights + 3.5 * per_image) / mib) == 3
    budget = 32 * per_image / mib                   # a quarter of it holds eight images
    monkeypatch.setattr(batch_budget, "weight_bytes", lambda net: 32 * per_image)    # weights fill it twice
    assert batch_budget.resolve_batch_size(net, "auto", budget) == 8


def test_an_explicit_batch_size_wins():
    net = _net()
    assert batch_budget.resolve_batch_size(net, 7, 0.001) == 7
    assert batch_budget.resolve_batch_size(net, 32, 1024) == 32


def test_the_api_takes_its_auto_batch_from_the_memory_limit_it_is_given(caplog):
    import logging

    import numpy as np

    import magic_init

    net = _net()
    per_image = batch_budget.pass_bytes_per_image(net)
    sample = np.random.default_rng(0).standard_normal((12,) + tuple(net.blobs[net.inputs[0]].shape[1:])).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="magic_init.batch_budget"):
        magic_init.initialize(net, sample, between_layer=False,
                              memory_limit_mb=(2 * batch_budget.weight_bytes(net) + 3 * per_image) / 2 ** 20)
    assert any(record.getMessage().startswith("batch size 3:") for record in caplog.records)

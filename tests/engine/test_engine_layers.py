"""Layer semantics that need no Caffe: phases, BatchNorm moving averages, loss weights, ties."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from google.protobuf import text_format  # noqa: E402

from magic_init.engine import Net  # noqa: E402
from magic_init.proto import caffe_pb2  # noqa: E402


def _net(body, shape=(4, 3, 5, 5), **kw):
    dims = " ".join("dim: %d" % d for d in shape)
    text = 'force_backward: true\nlayer { name: "data" type: "Input" top: "data" input_param { shape { %s } } }\n%s' % (
        dims, body)
    return Net(text_format.Merge(text, caffe_pb2.NetParameter()), seed=0, **kw)


DROPOUT = 'layer { name: "drop" type: "Dropout" bottom: "data" top: "out" dropout_param { dropout_ratio: 0.3 } }'


def test_dropout_is_identity_in_test_and_scaled_mask_in_train():
    x = np.random.default_rng(0).uniform(1, 2, (4, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(_net(DROPOUT).forward(data=x)["out"], x)
    big = np.ones((100, 100, 5, 5), np.float32)
    out = _net(DROPOUT, shape=big.shape, phase="train").forward(data=big)["out"]
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)


def test_dropout_backward_uses_the_same_mask():
    net = _net(DROPOUT, phase="train")
    out = net.forward(data=np.ones((4, 3, 5, 5), np.float32))["out"].copy()
    grads = net.backward(out=np.full((4, 3, 5, 5), 2.0, np.float32))
    np.testing.assert_allclose(grads["data"], 2 * out, rtol=1e-6)


BN = 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "out" }'


def test_batchnorm_train_uses_batch_stats_and_updates_blobs():
    x = np.random.default_rng(1).normal(3, 2, (4, 3, 5, 5)).astype(np.float32)
    net = _net(BN, phase="train")
    out = net.forward(data=x)["out"]
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, rtol=1e-3)   # biased variance
    mean, var, s = (b.data for b in net.params["bn"])
    m = x.size / 3
    assert s[0] == pytest.approx(1.0)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(var, x.var(axis=(0, 2, 3)) * m / (m - 1), rtol=1e-4)
    net.forward(data=x)
    assert net.params["bn"][2].data[0] == pytest.approx(0.999 + 1)


def test_batchnorm_test_uses_stored_stats_divided_by_scale():
    net = _net(BN)
    mean, var, s = net.params["bn"]
    mean.data[...], var.data[...], s.data[...] = [2, 4, 6], [8, 8, 8], 2
    x = np.ones((4, 3, 5, 5), np.float32)
    out = net.forward(data=x)["out"]
    np.testing.assert_allclose(out[0, :, 0, 0], (1 - np.array([1, 2, 3])) / np.sqrt(4 + 1e-5),
                               rtol=1e-5)
    s.data[...] = 0                                   # Caffe: scale 0 means statistics 0
    np.testing.assert_allclose(net.forward(data=x)["out"], 1 / np.sqrt(1e-5), rtol=1e-4)


def test_loss_weight_is_the_loss_top_diff():
    body = ('layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 4 dim: 75 } } }\n'
            'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "flat" bottom: "t" top: "loss" '
            'loss_weight: 3 }')
    net = _net(body)
    x = np.random.default_rng(2).standard_normal((4, 3, 5, 5)).astype(np.float32)
    t = np.zeros((4, 75), np.float32)
    loss = net.forward(data=x, t=t)["loss"]
    assert loss.shape == () and float(loss) == pytest.approx((x ** 2).sum() / 8, rel=1e-5)
    assert float(net.blobs["loss"].diff) == 3.0
    net.backward()
    np.testing.assert_allclose(net.blobs["flat"].diff, 3 * x.reshape(4, -1) / 4, rtol=1e-5)


def test_eltwise_max_ties_follow_caffe():
    body = ('layer { name: "s" type: "Split" bottom: "data" top: "a" top: "b" top: "c" }\n'
            'layer { name: "m" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "m" '
            'eltwise_param { operation: MAX } }')
    net = _net(body, shape=(1, 2))
    net.forward(data=np.array([[1.0, 2.0]], np.float32))
    net.backward(m=np.array([[1.0, 1.0]], np.float32))
    # every bottom ties: Caffe picks bottom 1 over 0, then keeps it against bottom 2
    np.testing.assert_array_equal(net.blobs["a"].diff, 0)
    np.testing.assert_array_equal(net.blobs["b"].diff, 1)
    np.testing.assert_array_equal(net.blobs["c"].diff, 0)


def test_accuracy_top_k_and_ignore_label():
    body = ('layer { name: "l" type: "Input" top: "label" input_param { shape { dim: 4 } } }\n'
            'layer { name: "acc" type: "Accuracy" bottom: "data" bottom: "label" top: "acc" '
            'accuracy_param { top_k: 2 ignore_label: 3 } }')
    net = _net(body, shape=(4, 3))
    scores = np.array([[3, 2, 1], [3, 2, 1], [3, 2, 1], [1, 1, 1]], np.float32)
    acc = net.forward(data=scores, label=np.array([1, 2, 3, 0], np.float32))["acc"]
    assert float(acc) == pytest.approx(1 / 3)    # label 1: top-2; label 2: not; 3 ignored; tie: no


@pytest.mark.parametrize("channels", [1, 2, 3, 8])
@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_lrn_channel_window_sum_is_the_zero_padded_window_sum(channels, size):
    """LRN's window over channels: entry c is Σ x[c'] over |c' - c| ≤ (size-1)/2, zero beyond the ends
    (also for windows wider than the channels)."""
    from magic_init.engine.layers.vision import _channel_window_sum

    x = torch.randn(2, channels, 3, 4, dtype=torch.float64)
    half = (size - 1) // 2
    expected = torch.stack([x[:, max(0, c - half):c + half + 1].sum(dim=1) for c in range(channels)], dim=1)
    torch.testing.assert_close(_channel_window_sum(x, size), expected)


@pytest.mark.parametrize("phase", ["train", "test"])
def test_dropout_backward_is_autograds_with_the_forwards_mask(phase):
    """Dropout's hand-written backward gives, bit for bit, what autograd gives for the same forward
    (the same mask: dy·mask/(1-p) in TRAIN, dy in TEST)."""
    from magic_init.engine.layers.neuron import Dropout

    param = text_format.Merge('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.3 }', caffe_pb2.LayerParameter())
    layer = Dropout(param, phase)
    layer.setup()
    x, dy = torch.randn(4, 50), torch.randn(4, 50)
    layer.generator = torch.Generator().manual_seed(5)
    tops, saved = layer.forward_for_backward([x], [])
    dx, = layer.backward([None], [], [None], saved, [dy], [True], [])
    leaf = x.clone().requires_grad_(True)
    layer.generator = torch.Generator().manual_seed(5)
    y = layer.forward([leaf], [])[0]
    expected, = torch.autograd.grad(y, [leaf], [dy])
    assert torch.equal(tops[0], y.detach()) and torch.equal(dx, expected)
    assert (phase == "train") == bool((dx == 0).any())

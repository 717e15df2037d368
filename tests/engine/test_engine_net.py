"""Net semantics (no Caffe needed): zero-copy blobs, diff accumulation, ranges, reshape, I/O."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from google.protobuf import text_format  # noqa: E402

from magic_init.engine import Net  # noqa: E402
from magic_init.errors import BackendError, NetDefinitionError  # noqa: E402
from magic_init.proto import caffe_pb2  # noqa: E402

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "a" type: "Power" bottom: "ip" top: "a" power_param { scale: 2 } }
layer { name: "b" type: "Power" bottom: "ip" top: "b" power_param { scale: -3 } }
"""


def make_net(**kw):
    return Net(text_format.Merge(NET, caffe_pb2.NetParameter()), seed=0, **kw)


def _input(net, seed=0):
    return np.random.default_rng(seed).standard_normal(net.blobs["data"].shape).astype(np.float32)


def test_structure_and_splits():
    net = make_net()
    assert net.layer_names == ["data", "conv", "relu", "pool", "ip", "ip_ip_0_split", "a", "b"]
    assert net.top_names["ip_ip_0_split"] == ["ip_ip_0_split_0", "ip_ip_0_split_1"]
    assert net.inputs == ["data"] and net.outputs == ["a", "b"]
    assert [b.shape for b in net.params["conv"]] == [(4, 3, 3, 3), (4,)]
    assert net.blobs["ip"].shape == (2, 5) and net.blobs["pool"].count == 2 * 4 * 4 * 4
    assert [layer.type for layer in net.layers][:3] == ["Input", "Convolution", "ReLU"]
    assert net.layers[1].blobs[0] is net.params["conv"][0]


def test_blob_data_is_writable_in_place():
    net = make_net()
    data = net.blobs["data"].data
    data[...] = _input(net)
    assert net.blobs["data"].tensor().data_ptr() == data.ctypes.data          # zero-copy
    weights = net.params["ip"][0].data
    weights[...] = 0
    out = net.forward()
    np.testing.assert_array_equal(out["a"], 0)
    net.params["ip"][0].data[0, 0] = 1.0                # parameter arrays stay the live storage
    assert net.params["ip"][0].tensor()[0, 0].item() == 1.0


def test_forward_matches_numpy_reference():
    net = make_net()
    x = _input(net)
    out = net.forward(data=x)
    w, b = net.params["conv"][0].data, net.params["conv"][1].data
    conv = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                      padding=1).numpy()
    pooled = np.maximum(conv, 0).reshape(2, 4, 4, 2, 4, 2).max(axis=(3, 5))
    ip = pooled.reshape(2, -1) @ net.params["ip"][0].data.T + net.params["ip"][1].data
    # float32 sums of terms up to ~40 in another order (numpy vs torch): round-off relative to the terms
    atol = 1e-6 * np.abs(pooled).sum(axis=1).max() * np.abs(net.params["ip"][0].data).max()
    np.testing.assert_allclose(out["a"], 2 * ip, rtol=1e-5, atol=2 * atol)
    np.testing.assert_allclose(out["b"], -3 * ip, rtol=1e-5, atol=3 * atol)


def test_split_diffs_add_and_param_diffs_accumulate():
    net = make_net()
    net.forward(data=_input(net))
    ones = np.ones((2, 5), np.float32)
    net.backward(a=ones, b=ones)
    # d(2 ip - 3 ip)/d ip = -1: the split summed both branches
    np.testing.assert_allclose(net.blobs["ip"].diff, -ones, rtol=1e-6)
    first = net.params["ip"][0].diff.copy()
    pooled = net.blobs["pool"].data.reshape(2, -1)
    np.testing.assert_allclose(first, -ones.T @ pooled, rtol=1e-5, atol=1e-6)
    net.backward(a=ones, b=ones)
    np.testing.assert_allclose(net.params["ip"][0].diff, 2 * first, rtol=1e-5)   # accumulated
    np.testing.assert_allclose(net.blobs["ip"].diff, -ones, rtol=1e-6)            # overwritten
    net.clear_param_diffs()
    assert not net.params["ip"][0].diff.any() and not net.params["conv"][1].diff.any()


def test_backward_reads_diffs_set_on_blobs():
    net = make_net()
    net.forward(data=_input(net))
    net.blobs["a"].diff[...] = 1.0
    net.blobs["b"].diff[...] = 0.0
    net.backward()
    np.testing.assert_allclose(net.blobs["ip"].diff, 2.0, rtol=1e-6)


def test_forward_start_end_ranges():
    net = make_net()
    net.forward(data=_input(net))
    full = net.blobs["a"].data.copy()
    out = net.forward(end="pool")
    assert list(out) == ["pool"]
    net.blobs["pool"].data[...] = 0
    out = net.forward(start="ip", end="a")
    np.testing.assert_allclose(out["a"], 2 * net.params["ip"][1].data[None].repeat(2, 0), atol=1e-6)
    assert not np.allclose(out["a"], full)
    with pytest.raises(NetDefinitionError):
        net.forward(start="nope")


def test_backward_start_end_and_return_values():
    net = make_net()
    net.forward(data=_input(net))
    net.blobs["ip"].diff[...] = 0
    grads = net.backward(start="b", end="b", b=np.ones((2, 5), np.float32))
    assert list(grads) == ["ip_ip_0_split_1"]
    np.testing.assert_allclose(grads["ip_ip_0_split_1"], -3.0)
    assert not net.blobs["ip"].diff.any()                  # layers below 'b' did not run


def test_reshape_to_another_batch():
    net = make_net()
    net.blobs["data"].reshape(5, 3, 8, 8)
    net.reshape()
    assert net.blobs["conv"].shape == (5, 4, 8, 8) and net.blobs["a"].shape == (5, 5)
    out = net.forward(data=np.zeros((5, 3, 8, 8), np.float32))
    assert out["a"].shape == (5, 5)
    net.blobs["data"].reshape(5, 3, 10, 10)                # ip would need other weights
    with pytest.raises(NetDefinitionError):
        net.reshape()


def test_wrong_input_shape_is_rejected():
    net = make_net()
    with pytest.raises(NetDefinitionError, match="'data'"):
        net.forward(data=np.zeros((3, 3, 8, 8), np.float32))


def test_no_grad_forward_then_backward_raises():
    net = make_net()
    with net.no_grad():
        net.forward(data=_input(net))
    with pytest.raises(BackendError, match="recorded"):
        net.backward(a=np.ones((2, 5)), b=np.ones((2, 5)))
    net.forward(data=_input(net), no_backward=True)
    with pytest.raises(BackendError):
        net.backward()


def test_save_and_copy_from_round_trip(tmp_path):
    net = make_net()
    path = tmp_path / "w.caffemodel"
    net.save(path)
    other = Net(text_format.Merge(NET, caffe_pb2.NetParameter()), seed=1)
    assert not np.allclose(other.params["conv"][0].data, net.params["conv"][0].data)
    other.copy_from(path)
    for name in net.params:
        for mine, theirs in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)
    loaded = Net(text_format.Merge(NET, caffe_pb2.NetParameter()), weights=str(path))
    np.testing.assert_array_equal(loaded.params["ip"][0].data, net.params["ip"][0].data)


def test_force_backward_gives_input_diffs():
    text = "force_backward: true\n" + NET
    net = Net(text_format.Merge(text, caffe_pb2.NetParameter()), seed=0)
    net.forward(data=_input(net))
    grads = net.backward(a=np.ones((2, 5)), b=np.ones((2, 5)))
    assert grads["data"].shape == (2, 3, 8, 8) and np.abs(grads["data"]).sum() > 0
    plain = make_net()
    plain.forward(data=_input(plain))
    plain.backward(a=np.ones((2, 5)), b=np.ones((2, 5)))
    assert not plain.blobs["data"].diff.any()          # Caffe: inputs need no diff by default


def test_unknown_bottom_is_reported():
    text = NET.replace('bottom: "pool" top: "ip"', 'bottom: "poool" top: "ip"')
    with pytest.raises(NetDefinitionError, match="poool"):
        Net(text_format.Merge(text, caffe_pb2.NetParameter()))


def test_backward_after_torch_overwrite_of_weights_asks_for_forward(tmp_path):
    net = make_net()
    path = tmp_path / "w.caffemodel"
    net.save(path)
    net.forward(data=_input(net))
    net.copy_from(path)                              # in-place torch copy into the weights
    with pytest.raises(BackendError, match="forward\\(\\) again"):
        net.backward(a=np.ones((2, 5)), b=np.ones((2, 5)))
    net.forward(data=_input(net))
    net.backward(a=np.ones((2, 5)), b=np.ones((2, 5)))


def test_forward_after_input_reshape_without_net_reshape():
    net = make_net()
    net.blobs["data"].reshape(3, 3, 8, 8)            # Caffe reshapes layers inside Forward
    assert net.forward()["a"].shape == (3, 5)
    net.blobs["data"].reshape(3, 3, 9, 9)            # the InnerProduct no longer fits
    with pytest.raises(NetDefinitionError, match="'ip'"):
        net.forward()

"""CUDA device: host mirrors synced like Caffe's SyncedMemory, results equal to the CPU's."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from google.protobuf import text_format  # noqa: E402

from magic_init.engine import Net  # noqa: E402
from magic_init.proto import caffe_pb2  # noqa: E402

from test_engine_net import NET  # noqa: E402


def _net(device):
    return Net(text_format.Merge("force_backward: true\n" + NET, caffe_pb2.NetParameter()),
               device=device, seed=0)


def test_cuda_matches_cpu_forward_and_backward(cuda_device):
    cpu, gpu = _net("cpu"), _net(cuda_device)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ones = np.ones((2, 5), np.float32)
    for net in (cpu, gpu):
        net.forward(data=x)
        net.backward(a=ones, b=ones)
    for name in ("conv", "ip", "a"):
        np.testing.assert_allclose(gpu.blobs[name].data, cpu.blobs[name].data, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu.blobs["data"].diff, cpu.blobs["data"].diff, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu.params["conv"][0].diff, cpu.params["conv"][0].diff,
                               rtol=1e-4, atol=1e-5)


def test_host_writes_reach_the_device(cuda_device):
    net = _net(cuda_device)
    net.params["ip"][0].data[...] = 0            # host write, pushed before the next use
    net.blobs["data"].data[...] = 1
    out = net.forward()
    np.testing.assert_array_equal(out["a"], 0)
    weights = net.params["ip"][0].data
    import torch
    net.params["ip"][0].copy_data_(torch.full(weights.shape, 2.0))    # device write ...
    assert (net.params["ip"][0].data == 2).all()  # ... refreshed into the same host buffer
    assert (weights == 2).all()

"""DirectWriter writes exactly the bytes given, past the page cache where the file system allows it
and with ordinary writes where it refuses O_DIRECT; an atomic direct write replaces the file whole."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from magic_init.io import atomic_write, read_caffemodel, write_caffemodel
from magic_init.io import direct
from magic_init.io.direct import BLOCK_BYTES, BUFFER_BYTES, DirectWriter
from magic_init.proto import caffe_pb2


def pieces(rng, sizes):
    return [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in sizes]


@pytest.mark.parametrize("sizes", [[], [1], [BLOCK_BYTES], [BUFFER_BYTES], [BUFFER_BYTES + 1],
                                   [3, BUFFER_BYTES - 2, 5, 2 * BUFFER_BYTES + 7, 0, 11]])
def test_the_file_holds_exactly_the_bytes_written(tmp_path, sizes):
    data = pieces(np.random.default_rng(len(sizes)), sizes)
    path = tmp_path / "out.bin"
    with atomic_write(path, direct=True) as f:
        for piece in data:
            assert f.write(piece) == len(piece)
    assert path.read_bytes() == b"".join(data)


def test_writes_refused_under_o_direct_fall_back_to_ordinary_writes(tmp_path, monkeypatch):
    """A file system that takes O_DIRECT on the descriptor but refuses its writes (EINVAL): the same bytes land."""
    real_write = os.write
    refused = []

    def write(fd, data):
        if writer.direct:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(direct, "_set_direct", lambda fd, on: on)     # O_DIRECT "set" even where unsupported
    monkeypatch.setattr(direct.os, "write", write)
    data = pieces(np.random.default_rng(0), [BUFFER_BYTES + 100, 17])
    path = tmp_path / "out.bin"
    with open(path, "wb") as f:
        writer = DirectWriter(f.fileno())
        for piece in data:
            writer.write(piece)
        writer.finish()
    assert refused == [BUFFER_BYTES] and not writer.direct
    assert path.read_bytes() == b"".join(data)


def test_other_write_errors_are_not_swallowed(tmp_path, monkeypatch):
    def write(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct.os, "write", write)
    with open(tmp_path / "out.bin", "wb") as f:
        writer = DirectWriter(f.fileno())
        writer.write(b"x" * 10)
        with pytest.raises(OSError) as raised:
            writer.finish()
    assert raised.value.errno == errno.ENOSPC


def test_a_caffemodel_written_direct_reads_back(tmp_path):
    net = caffe_pb2.NetParameter(name="n")
    net.layer.add(name="ip", type="InnerProduct")
    weights = {"ip": [np.random.default_rng(1).standard_normal((300, 4099)).astype(np.float32),
                      np.arange(300, dtype=np.float32)]}
    path = tmp_path / "m.caffemodel"
    write_caffemodel(path, net, weights)
    back = read_caffemodel(str(path)).weights["ip"]
    assert all(np.array_equal(a, b) for a, b in zip(back, weights["ip"]))
    assert os.path.getsize(path) % BLOCK_BYTES != 0          # the padding of the last block was cut off

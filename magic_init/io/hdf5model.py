"""Caffe's HDF5 weights layout (``Net::ToHDF5``): dataset ``/data/<layer name>/<blob index>``.

The file holds no net description, so the returned NetParameter is empty. h5py is optional:
without it, reading such a file is a clear ModelFileError.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from magic_init.errors import ModelFileError
from magic_init.proto import caffe_pb2


def read_hdf5_caffemodel(path: str):
    """Return (empty NetParameter, OrderedDict layer -> float32 arrays) from an HDF5 caffemodel."""
    try:
        import h5py
    except ImportError:
        raise ModelFileError("%s: is an HDF5 caffemodel; reading it needs h5py (pip install h5py)"
                             % path) from None
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise ModelFileError("%s: HDF5 file without a /data group, not a Caffe model" % path)
            weights = OrderedDict()
            for layer_name, group in f["data"].items():
                weights[layer_name] = _layer_arrays(group, path, layer_name)
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise ModelFileError("%s: truncated or not a Caffe model (%s)" % (path, error)) from None
    return caffe_pb2.NetParameter(), weights


def _layer_arrays(group, path: str, layer_name: str):
    """Datasets "0", "1", ... of one layer's group, in index order."""
    if not hasattr(group, "keys"):
        raise ModelFileError("%s: /data/%s is not a group of blobs" % (path, layer_name))
    names = sorted(group.keys(), key=lambda name: (not name.isdigit(), int(name) if name.isdigit() else 0, name))
    expected = [str(i) for i in range(len(names))]
    if names != expected:
        raise ModelFileError("%s: /data/%s holds %s, expected blobs named 0..%d"
                             % (path, layer_name, names, len(names) - 1))
    return [np.asarray(group[name][()], dtype=np.float32) for name in names]

"""BlobProto <-> numpy array. The only place that knows Caffe's legacy 4-D blob shape.

Caffe's ``Blob::FromProto`` rule: if any of the legacy fields num/channels/height/width is
set, the blob is 4-D ``(num, channels, height, width)`` (right-aligned, so an InnerProduct
weight (M, K) is stored as 1x1xMxK); otherwise its shape is ``shape.dim``. Values come from
``double_data`` when present, else ``data``; we always return float32 (Caffe's float nets cast
doubles the same way).
"""
from __future__ import annotations

import numpy as np

from magic_init.errors import ModelFileError
from magic_init.proto import caffe_pb2

_LEGACY_FIELDS = ("num", "channels", "height", "width")


def has_legacy_shape(blob) -> bool:
    """True when the blob uses the legacy num/channels/height/width fields."""
    return any(blob.HasField(name) for name in _LEGACY_FIELDS)


def blob_shape(blob, where: str = "blob") -> tuple:
    """The stored shape of a BlobProto: legacy 4-D if any legacy field is set, else ``shape.dim``."""
    if has_legacy_shape(blob):
        return tuple(int(getattr(blob, name)) for name in _LEGACY_FIELDS)
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    raise ModelFileError("%s: blob has neither a shape nor legacy num/channels/height/width" % where)


def shape_count(shape) -> int:
    """Number of elements of a shape; 1 for the scalar shape ()."""
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def shaped_array(values: np.ndarray, shape: tuple, where: str = "blob") -> np.ndarray:
    """Reshape flat ``values`` to ``shape`` as float32, or raise ModelFileError on a count mismatch."""
    if any(dim < 0 for dim in shape):
        raise ModelFileError("%s: negative dimension in blob shape %s" % (where, shape))
    if values.size != shape_count(shape):
        raise ModelFileError("%s: blob shape %s needs %d values but the file holds %d"
                             % (where, shape, shape_count(shape), values.size))
    return values.astype(np.float32, copy=False).reshape(shape)


def blob_to_array(blob, where: str = "blob") -> np.ndarray:
    """Return the values of a BlobProto as a float32 array of its stored shape."""
    shape = blob_shape(blob, where)
    if len(blob.double_data):
        values = np.asarray(blob.double_data, dtype=np.float64)
    else:
        values = np.asarray(blob.data, dtype=np.float32)
    return shaped_array(values, shape, where)


def array_to_blob(array) -> "caffe_pb2.BlobProto":
    """Return a current-format BlobProto (``shape`` + float32 ``data``) holding ``array``."""
    array = np.asarray(array, dtype=np.float32)
    blob = caffe_pb2.BlobProto()
    blob.shape.SetInParent()  # present even for the scalar shape ()
    blob.shape.dim.extend(int(d) for d in array.shape)
    blob.data.extend(array.ravel().tolist())
    return blob


def shape_proto_bytes(shape) -> bytes:
    """Serialized ``BlobShape`` for ``shape``."""
    message = caffe_pb2.BlobShape()
    message.dim.extend(int(d) for d in shape)
    return message.SerializeToString()

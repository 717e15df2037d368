"""Mean images stored as a BlobProto (.binaryproto), as Caffe's ``mean_file`` reads them."""
from __future__ import annotations

import os

import numpy as np
from google.protobuf.message import DecodeError

from magic_init.errors import ModelFileError
from magic_init.io.blobs import blob_to_array
from magic_init.proto import caffe_pb2


def read_mean_file(path) -> np.ndarray:
    """The mean image in ``path`` as a (C, H, W) float32 array.

    Caffe's DataTransformer takes the blob's (channels, height, width) and requires num == 1,
    so a (1, C, H, W) blob (legacy or not) loses its leading axis; a 3-D blob is kept."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ModelFileError("%s: cannot read (%s)" % (path, error.strerror or error)) from None
    try:
        blob = caffe_pb2.BlobProto.FromString(data)
    except (DecodeError, RecursionError) as error:
        raise ModelFileError("%s: truncated or not a binaryproto mean (%s)" % (path, error)) from None
    mean = blob_to_array(blob, path)
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 3:
        raise ModelFileError("%s: mean blob has shape %s, expected (1, C, H, W) or (C, H, W)"
                             % (path, mean.shape))
    return mean

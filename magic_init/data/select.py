"""Which images and which transform a run uses (the ``--data`` / data-layer decision).

- ``data`` given (list file, folder, glob, LMDB): that source, with Caffe's ImageNet convention
  (BGR, mean (104, 117, 123), scale 1) resized to the net input's H x W; a 1-channel input reads gray.
- no ``data``: the prototxt's own ImageData/Data layer active in ``phase``, with its transform_param.
- ``mean``, ``scale``, ``size`` options override either (``size`` = resize to (H, W)).
"""
from __future__ import annotations

import os

from magic_init.data.layer import DATA_LAYER_TYPES, source_from_layer
from magic_init.data.sources import LmdbDatums, image_channels, open_source
from magic_init.data.transform import Transform
from magic_init.errors import DataError


def choose_source(data=None, net_param=None, input_shape=None, root=None, mean=None, scale=None,
                  size=None, base_dir=None, phase="test"):
    """(source, Transform) for a run; ``input_shape`` is the net's image input (N, C, H, W) if known."""
    if data is not None:
        source, transform = _from_spec(data, root, input_shape)
    else:
        layer = find_data_layer(net_param, phase) if net_param is not None else None
        if layer is None:
            raise DataError("no sample images: give --data (list file, folder, glob or LMDB) or add an "
                            "ImageData/Data layer to the prototxt")
        source, transform = source_from_layer(layer, base_dir=base_dir, phase=phase)
    return source, transform.with_options(mean=mean, scale=scale, size=size)


def data_channels(data=None, layer=None, root=None, base_dir=None, phase="test"):
    """The channel count the sample data gives ``layer`` (``image_channels``), or None if unknown.

    ``data`` (a ``--data`` spec) when given, else ``layer``'s own source (ImageData list, Data
    LMDB). None when there is none or it cannot be opened (the sample's reader reports that)."""
    try:
        if data is not None:
            source = open_source(os.fspath(data), root=root)
        elif layer is not None and layer.type in DATA_LAYER_TYPES:
            source, _ = source_from_layer(layer, base_dir=base_dir, phase=phase)
        else:
            return None
        return image_channels(source)
    except DataError:
        return None


def _from_spec(data, root, input_shape):
    channels, hw = _channels_and_size(input_shape)
    is_color = channels != 1
    source = open_source(os.fspath(data), root=root, is_color=is_color)
    if isinstance(source, LmdbDatums):
        source.is_color = is_color
    return source, Transform.imagenet(size=hw, is_color=is_color)


def _channels_and_size(input_shape):
    """(C, (H, W)) of an (N, C, H, W) input shape; (3, None) when unknown or not 4-D."""
    if input_shape is None or len(input_shape) != 4:
        return 3, None
    return int(input_shape[1]), (int(input_shape[2]), int(input_shape[3]))


def find_data_layer(net_param, phase="test"):
    """The first ImageData/Data layer that exists in ``phase`` (include/exclude phase rules only)."""
    for layer in net_param.layer:
        if layer.type in DATA_LAYER_TYPES and _in_phase(layer, phase):
            return layer
    return None


def _in_phase(layer, phase):
    wanted = 1 if phase == "test" else 0  # caffe_pb2.Phase: TRAIN = 0, TEST = 1
    if layer.include:
        return any(not rule.HasField("phase") or rule.phase == wanted for rule in layer.include)
    return not any(rule.HasField("phase") and rule.phase == wanted for rule in layer.exclude)

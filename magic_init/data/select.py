"""Which images and which transform a run uses (the ``--data`` / data-layer decision).

- ``data`` given (list file, folder, glob, LMDB): that source, with Caffe's ImageNet convention
  (BGR, mean (104, 117, 123), scale 1) resized to the net input's H x W; a 1-channel input reads gray.
- no ``data``: the prototxt's own ImageData/Data layer that the net has in ``phase``, ``level`` and
  ``stages`` (``netgraph.data_layers``: Caffe's include/exclude rules, the net's own ``state``), with
  its transform_param: the same layer the net is instantiated from.
- ``mean``, ``scale``, ``size`` options override either (``size`` = resize to (H, W)).
"""
from __future__ import annotations

import os

from magic_init import netgraph
from magic_init.data.layer import DATA_LAYER_TYPES, source_from_layer
from magic_init.data.sources import LmdbDatums, image_channels, open_source
from magic_init.data.transform import Transform
from magic_init.errors import DataError


def choose_source(data=None, net_param=None, input_shape=None, root=None, mean=None, scale=None,
                  size=None, base_dir=None, phase="test", level=0, stages=()):
    """(source, Transform) for a run.

    Args:
        data: A --data spec (list file, folder, glob, LMDB), or None (the default): the data layer
            of ``net_param`` that the net has in ``phase``, ``level``, ``stages`` (``find_data_layer``).
        net_param: The net's NetParameter (as read, not instantiated), or None.
        input_shape: The net's image input (N, C, H, W) if known, or None (the default).
        root: Folder that relative paths of ``data``'s list are resolved against, or None.
        mean, scale, size: Overrides of the transform's mean, scale and resize size (None: keep).
        base_dir: The prototxt's folder (relative paths in the data layer fall back to it), or None.
        phase: "test" (the default), "train" (any case) or a ``caffe_pb2`` Phase value.
        level: The NetState level (default 0).
        stages: NetState stages, added to the net's own ``state`` (default none).

    Returns:
        ``(source, Transform)``; DataError when there is neither ``data`` nor a data layer.
    """
    if data is not None:
        source, transform = _from_spec(data, root, input_shape)
    else:
        layer = find_data_layer(net_param, phase, level, stages) if net_param is not None else None
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


def find_data_layer(net_param, phase="test", level=0, stages=()):
    """The data layer samples are read from: the first ImageData/Data layer the net has in this state.

    Args:
        net_param: The net's NetParameter.
        phase: "test" (the default), "train" (any case) or a ``caffe_pb2`` Phase value.
        level: The NetState level (default 0).
        stages: NetState stages, added to the net's own ``state`` (default none).

    Returns:
        The layer (a copy, its ``phase`` set), or None when the net has none in that state. The
        layers come from ``netgraph.data_layers``, the rules the net is instantiated by.
    """
    for layer in netgraph.data_layers(net_param, phase, level, stages):
        if layer.type in DATA_LAYER_TYPES:
            return layer
    return None

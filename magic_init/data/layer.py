"""Samples from the prototxt's own data layer (what users of the original did with ``-d`` nets).

- ``ImageData``: ``image_data_param.source`` (list file), ``root_folder`` (prepended as a string, as
  Caffe does), ``new_height``/``new_width`` (resize when both > 0), ``is_color``; ``transform_param``.
- ``Data``: ``data_param.source``, an LMDB of Datums (``backend: LEVELDB`` is refused); encoded
  datums honour ``transform_param.force_color``/``force_gray``.

Relative paths are taken as Caffe takes them (relative to the working directory); when that does not
exist, relative to ``base_dir`` (normally the prototxt's folder): ``paths.layer_path``.
"""
from __future__ import annotations

from magic_init import netgraph
from magic_init.data.paths import layer_path
from magic_init.data.sources import ImageFiles, LmdbDatums, parse_image_list
from magic_init.data.transform import Transform
from magic_init.errors import DataError


def source_from_layer(layer, base_dir: str | None = None, phase="test"):
    """(source, Transform) for a ``caffe_pb2.LayerParameter`` of type ImageData or Data.

    Args:
        layer: The data layer.
        base_dir: The prototxt's folder (relative paths fall back to it), or None (the default).
        phase: "test" (the default) or "train" (any case), or a ``caffe_pb2`` Phase value: the
            transform's crop and mirror follow it.

    Returns:
        ``(source, Transform)``; DataError for a layer type samples cannot be read from.
    """
    reader = _READERS.get(layer.type)
    if reader is None:
        raise DataError("layer %r: cannot read samples from a %s layer (supported: %s)"
                        % (layer.name, layer.type, ", ".join(DATA_LAYER_TYPES)))
    return reader(layer, base_dir, netgraph.phase_name(phase))


def _image_data(layer, base_dir, phase):
    param = layer.image_data_param
    if not param.source:
        raise DataError("layer %r: image_data_param.source is not set" % layer.name)
    list_path = layer_path(param.source, base_dir)
    names, labels = parse_image_list(list_path)
    paths = [layer_path(param.root_folder + name, base_dir) for name in names]
    files = ImageFiles(paths, labels, name="layer %r (%s)" % (layer.name, list_path), is_color=param.is_color)
    transform = Transform.from_proto(layer.transform_param, resize=(param.new_height, param.new_width),
                                     is_color=param.is_color, phase=phase, base_dir=base_dir)
    return files, transform


def _lmdb_data(layer, base_dir, phase):
    param = layer.data_param
    if param.backend != param.LMDB:
        raise DataError("layer %r: only LMDB data sources are supported, not LEVELDB" % layer.name)
    if not param.source:
        raise DataError("layer %r: data_param.source is not set" % layer.name)
    is_color = netgraph.forced_color(layer)     # Caffe's DataTransformer: force_color / force_gray
    source = LmdbDatums(layer_path(param.source, base_dir), is_color=is_color)
    transform = Transform.from_proto(layer.transform_param, is_color=is_color, phase=phase, base_dir=base_dir)
    return source, transform


#: The data layers samples can be read from: a subset of the types with role ``data`` in
#: ``magic_init.layer_facts`` (a test checks it), each with its reader.
_READERS = {"ImageData": _image_data, "Data": _lmdb_data}
DATA_LAYER_TYPES = tuple(_READERS)


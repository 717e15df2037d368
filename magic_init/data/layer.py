"""Samples from the prototxt's own data layer (what users of the original did with ``-d`` nets).

- ``ImageData``: ``image_data_param.source`` (list file), ``root_folder`` (prepended as a string, as
  Caffe does), ``new_height``/``new_width`` (resize when both > 0), ``is_color``; ``transform_param``.
- ``Data``: ``data_param.source``, an LMDB of Datums (``backend: LEVELDB`` is refused); encoded
  datums honour ``transform_param.force_color``/``force_gray``.

Relative paths are taken as Caffe takes them (relative to the working directory); when that does not
exist, relative to ``base_dir`` (normally the prototxt's folder).
"""
from __future__ import annotations

import os

from magic_init.data.sources import ImageFiles, LmdbDatums, parse_image_list
from magic_init.data.transform import Transform
from magic_init.errors import DataError


def source_from_layer(layer, base_dir: str | None = None, phase: str = "test"):
    """(source, Transform) for a ``caffe_pb2.LayerParameter`` of type ImageData or Data."""
    reader = _READERS.get(layer.type)
    if reader is None:
        raise DataError("layer %r: cannot read samples from a %s layer (supported: %s)"
                        % (layer.name, layer.type, ", ".join(DATA_LAYER_TYPES)))
    return reader(layer, base_dir, phase)


def _image_data(layer, base_dir, phase):
    param = layer.image_data_param
    if not param.source:
        raise DataError("layer %r: image_data_param.source is not set" % layer.name)
    list_path = _resolve(param.source, base_dir)
    names, labels = parse_image_list(list_path)
    paths = [_resolve(param.root_folder + name, base_dir) for name in names]
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
    tp = layer.transform_param
    if tp.force_color and tp.force_gray:
        raise DataError("layer %r: force_color and force_gray cannot both be set" % layer.name)
    is_color = True if tp.force_color else (False if tp.force_gray else None)
    source = LmdbDatums(_resolve(param.source, base_dir), is_color=is_color)
    transform = Transform.from_proto(tp, is_color=is_color, phase=phase, base_dir=base_dir)
    return source, transform


#: The data layers samples can be read from: a subset of the types with role ``data`` in
#: ``magic_init.layer_facts`` (a test checks it), each with its reader.
_READERS = {"ImageData": _image_data, "Data": _lmdb_data}
DATA_LAYER_TYPES = tuple(_READERS)


def _resolve(path: str, base_dir) -> str:
    """Caffe resolves against the working directory; fall back to ``base_dir`` when that is absent."""
    if base_dir and not os.path.isabs(path) and not os.path.exists(path):
        candidate = os.path.join(base_dir, path)
        if os.path.exists(candidate):
            return candidate
    return path

"""Read and write .caffemodel files: binary or text-format NetParameter, or Caffe's HDF5 layout.

The kind is decided by content, as Caffe does for HDF5 (and as users expect from misnamed
files): the HDF5 signature, else text when the head is printable, else binary protobuf. Binary
files are scanned at the wire level (``model_scan``) so a 528 MB VGG-16 loads in seconds.
Weights are returned per layer name in file order, float32, in their stored shapes (legacy
4-D kept); layers without blobs map to ``[]`` (Caffe checks blob counts against them too).
"""
from __future__ import annotations

import mmap
import os
from collections import OrderedDict
from typing import Dict, List, NamedTuple

import numpy as np
from google.protobuf.message import DecodeError

from magic_init.errors import ModelFileError, NetDefinitionError
from magic_init.io import blobs as blob_io
from magic_init.io.atomic import atomic_write
from magic_init.io.model_scan import read_blob_values, scan_net
from magic_init.io.prototxt import parse_text_message, read_text, upgrade_in_file
from magic_init.io.upgrade import upgrade_net
from magic_init.io.wire import WireError, length_delimited_header
from magic_init.proto import caffe_pb2

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_TEXT_BYTES = frozenset(range(32, 127)) | frozenset(b"\t\n\r")
_LAYER_FIELD, _LAYER_BLOBS_FIELD, _BLOB_SHAPE_FIELD, _BLOB_DATA_FIELD = 100, 7, 7, 5


class CaffeModel(NamedTuple):
    """``net``: the upgraded NetParameter without blobs; ``weights``: layer name -> arrays."""

    net: "caffe_pb2.NetParameter"
    weights: "OrderedDict[str, List[np.ndarray]]"


def read_caffemodel(path) -> CaffeModel:
    """Read a caffemodel (binary, text or HDF5, by content); ModelFileError if it is not one."""
    path = os.fspath(path)
    head = _read_head(path)
    if head.startswith(HDF5_SIGNATURE):
        from magic_init.io.hdf5model import read_hdf5_caffemodel
        net, weights = read_hdf5_caffemodel(path)
        return CaffeModel(net, weights)
    if head.strip() and all(byte in _TEXT_BYTES for byte in head):
        return _read_text_caffemodel(path)
    return _read_binary_caffemodel(path)


def _read_head(path: str, size: int = 256) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(size)
    except OSError as error:
        raise ModelFileError("%s: cannot read (%s)" % (path, error.strerror or error))
    if not head:
        raise ModelFileError("%s: empty file, not a Caffe model" % path)
    return head


def _corrupt(path: str, detail: str) -> ModelFileError:
    return ModelFileError("%s: truncated or not a Caffe model (%s)" % (path, detail))


def _read_binary_caffemodel(path: str) -> CaffeModel:
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            scanned = scan_net(mm)
            skeleton = caffe_pb2.NetParameter.FromString(scanned.skeleton)
            weights = OrderedDict()
            for name, refs in _named_blob_refs(skeleton, scanned):
                weights[name] = [_load_blob(f, ref, "%s: layer '%s' blob %d" % (path, name, i))
                                 for i, ref in enumerate(refs)]
    except (WireError, DecodeError) as error:
        raise _corrupt(path, str(error) or type(error).__name__) from None
    except RecursionError:
        raise _corrupt(path, "messages nested too deeply") from None
    except (OSError, ValueError) as error:  # mmap of an empty or special file
        raise ModelFileError("%s: cannot read (%s)" % (path, getattr(error, "strerror", None) or error)) from None
    return CaffeModel(upgrade_in_file(skeleton, path), weights)


def _named_blob_refs(net, scanned):
    """Pair each layer's name with its scanned blob references (current, then V1/V0 layers)."""
    for layer, refs in zip(net.layer, scanned.layer_blobs):
        yield layer.name, refs
    for entry, refs in zip(net.layers, scanned.v1_layer_blobs):
        yield (entry.layer.name if entry.HasField("layer") else entry.name), refs


def _load_blob(f, ref, where: str) -> np.ndarray:
    try:
        meta = caffe_pb2.BlobProto.FromString(ref.meta)
    except DecodeError as error:
        raise WireError("%s: bad blob header (%s)" % (where, error)) from None
    values = read_blob_values(f, ref.chunks)
    return blob_io.shaped_array(values, blob_io.blob_shape(meta, where), where)


def _read_text_caffemodel(path: str) -> CaffeModel:
    net = parse_text_message(read_text(path), caffe_pb2.NetParameter(), path)
    weights = OrderedDict()
    for name, layer_blobs in _layer_blob_fields(net):
        weights[name] = [blob_io.blob_to_array(b, "%s: layer '%s' blob %d" % (path, name, i))
                         for i, b in enumerate(layer_blobs)]
        del layer_blobs[:]
    return CaffeModel(upgrade_in_file(net, path), weights)


def _layer_blob_fields(net):
    """(layer name, its repeated blobs field) for every layer of any format."""
    for layer in net.layer:
        yield layer.name, layer.blobs
    for entry in net.layers:
        if entry.HasField("layer"):
            yield entry.layer.name, entry.layer.blobs
        else:
            yield entry.name, entry.blobs


def write_caffemodel(path, net, weights: Dict[str, List[np.ndarray]]) -> None:
    """Write ``net`` with ``weights`` as a current-format binary caffemodel, atomically.

    Layers are written as ``layer`` (field 100) entries, their blobs with ``shape`` and float32
    ``data``; a layer absent from ``weights`` is written without blobs. Weights for a layer
    the net does not have are an error (they would be silently lost)."""
    path = os.fspath(path)
    if len(net.layers) or len(net.input):
        net = upgrade_net(net)
    _check_weight_names(net, weights, path)
    try:
        with atomic_write(path, direct=True) as f:
            f.write(_net_without_layers(net))
            for layer in net.layer:
                _write_layer(f, layer, weights.get(layer.name, ()))
    except OSError as error:
        raise ModelFileError("%s: cannot write (%s)" % (path, error.strerror or error)) from None


def _check_weight_names(net, weights, path: str) -> None:
    missing = set(weights) - {layer.name for layer in net.layer}
    if missing:
        raise NetDefinitionError("%s: weights given for layer '%s', which the net does not have"
                                 % (path, sorted(missing)[0]))


def _net_without_layers(net) -> bytes:
    header = caffe_pb2.NetParameter()
    header.CopyFrom(net)
    header.ClearField("layer")
    return header.SerializeToString()


def _write_layer(f, layer, arrays) -> None:
    """One ``layer`` field: the LayerParameter without blobs, then each blob streamed."""
    bare = caffe_pb2.LayerParameter()
    bare.CopyFrom(layer)
    bare.ClearField("blobs")
    body = bare.SerializeToString()
    arrays = [np.ascontiguousarray(a, dtype="<f4") for a in arrays]
    blob_heads = [_blob_head(a) for a in arrays]
    blob_sizes = [len(head) + a.nbytes for head, a in zip(blob_heads, arrays)]
    layer_size = len(body) + sum(len(length_delimited_header(_LAYER_BLOBS_FIELD, n)) + n
                                 for n in blob_sizes)
    f.write(length_delimited_header(_LAYER_FIELD, layer_size))
    f.write(body)
    for head, array, size in zip(blob_heads, arrays, blob_sizes):
        f.write(length_delimited_header(_LAYER_BLOBS_FIELD, size))
        f.write(head)
        if array.nbytes:
            f.write(memoryview(array.reshape(-1)).cast("B"))


def _blob_head(array: np.ndarray) -> bytes:
    """A BlobProto up to its values: the ``shape`` field and the ``data`` field's header."""
    shape = blob_io.shape_proto_bytes(array.shape)
    head = length_delimited_header(_BLOB_SHAPE_FIELD, len(shape)) + shape
    if array.nbytes:
        head += length_delimited_header(_BLOB_DATA_FIELD, array.nbytes)
    return head

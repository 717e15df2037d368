"""Split a binary NetParameter into a small skeleton and references to its blob payloads.

The skeleton is the NetParameter with every blob's float payload removed (shapes kept): it is
small, so python protobuf parses it quickly. Each payload is described by byte ranges that
``read_blob_values`` later reads straight into numpy arrays, without per-float Python objects.

Where blobs live (field numbers from caffe.proto):
    NetParameter.layer (100) -> LayerParameter.blobs (7)                       current
    NetParameter.layers (2)  -> V1LayerParameter.blobs (6)                     V1
    NetParameter.layers (2)  -> V1LayerParameter.layer (1) -> V0.blobs (50)    V0
    BlobProto: data (5, float), double_data (8, double); diff (6) and double_diff (9) dropped.
"""
from __future__ import annotations

from typing import List, NamedTuple, Tuple

import numpy as np

from magic_init.io.wire import (FIXED32, FIXED64, LENGTH_DELIMITED, WireError, iter_fields,
                                length_delimited_header)

NET_LAYER, NET_V1_LAYERS = 100, 2
_LAYER_BLOBS, _V1_BLOBS, _V1_NESTED_V0, _V0_BLOBS = 7, 6, 1, 50
_BLOB_DATA, _BLOB_DIFF, _BLOB_DOUBLE_DATA, _BLOB_DOUBLE_DIFF = 5, 6, 8, 9

_FLOAT = np.dtype("<f4")
_DOUBLE = np.dtype("<f8")


class Chunk(NamedTuple):
    """``nbytes`` bytes at file ``offset`` holding little-endian values of ``dtype``."""

    offset: int
    nbytes: int
    dtype: np.dtype


class BlobRef(NamedTuple):
    """A blob: its metadata (BlobProto bytes without values) and where its values are."""

    meta: bytes
    chunks: List[Chunk]


class ScannedNet(NamedTuple):
    """``skeleton``: NetParameter bytes without blob values; blobs per layer, in file order."""

    skeleton: bytes
    layer_blobs: List[List[BlobRef]]      # one list per NetParameter.layer entry
    v1_layer_blobs: List[List[BlobRef]]   # one list per NetParameter.layers entry (V1 or V0)


def scan_net(buf) -> ScannedNet:
    """Scan a binary NetParameter in ``buf`` (bytes, mmap...); raise WireError if malformed."""
    pieces: List[bytes] = []
    layer_blobs: List[List[BlobRef]] = []
    v1_layer_blobs: List[List[BlobRef]] = []
    for field in iter_fields(buf):
        if field.number == NET_LAYER and field.wire_type == LENGTH_DELIMITED:
            body, blobs = _strip_blobs(buf, field, _LAYER_BLOBS, nested=None)
            layer_blobs.append(blobs)
        elif field.number == NET_V1_LAYERS and field.wire_type == LENGTH_DELIMITED:
            body, blobs = _strip_blobs(buf, field, _V1_BLOBS, nested=_V1_NESTED_V0)
            v1_layer_blobs.append(blobs)
        else:
            pieces.append(bytes(buf[field.start:field.end]))
            continue
        pieces.append(length_delimited_header(field.number, len(body)) + body)
    return ScannedNet(b"".join(pieces), layer_blobs, v1_layer_blobs)


def _strip_blobs(buf, message_field, blob_number: int, nested) -> Tuple[bytes, List[BlobRef]]:
    """The message in ``message_field`` without its blob fields, and those blobs' references.

    ``nested`` names a sub-message field (the V0 layer inside a V1 entry) stripped the same way
    of its own blobs (field 50)."""
    kept: List[bytes] = []
    blobs: List[BlobRef] = []
    for field in iter_fields(buf, message_field.value_start, message_field.end):
        if field.number == blob_number and field.wire_type == LENGTH_DELIMITED:
            blobs.append(scan_blob(buf, field.value_start, field.end))
        elif field.number == nested and field.wire_type == LENGTH_DELIMITED:
            body, inner = _strip_blobs(buf, field, _V0_BLOBS, nested=None)
            blobs.extend(inner)
            kept.append(length_delimited_header(field.number, len(body)) + body)
        else:
            kept.append(bytes(buf[field.start:field.end]))
    return b"".join(kept), blobs


def scan_blob(buf, start: int, end: int) -> BlobRef:
    """Reference to the BlobProto in ``buf[start:end]``: float or double values, never both."""
    meta: List[bytes] = []
    floats: List[Chunk] = []
    doubles: List[Chunk] = []
    for field in iter_fields(buf, start, end):
        if field.number == _BLOB_DATA:
            floats.append(_value_chunk(field, _FLOAT, FIXED32))
        elif field.number == _BLOB_DOUBLE_DATA:
            doubles.append(_value_chunk(field, _DOUBLE, FIXED64))
        elif field.number not in (_BLOB_DIFF, _BLOB_DOUBLE_DIFF):
            meta.append(bytes(buf[field.start:field.end]))
    # Caffe's Blob::FromProto reads double_data when it is non-empty, else data.
    chunks = doubles if any(chunk.nbytes for chunk in doubles) else floats
    return BlobRef(b"".join(meta), chunks)


def _value_chunk(field, dtype: np.dtype, unpacked_wire_type: int) -> Chunk:
    if field.wire_type == LENGTH_DELIMITED:
        nbytes = field.end - field.value_start
        if nbytes % dtype.itemsize:
            raise WireError("packed %s values of %d bytes at byte %d" % (dtype.name, nbytes, field.start))
        return Chunk(field.value_start, nbytes, dtype)
    if field.wire_type == unpacked_wire_type:
        return Chunk(field.value_start, dtype.itemsize, dtype)
    raise WireError("blob values with wire type %d at byte %d" % (field.wire_type, field.start))


def read_blob_values(f, chunks: List[Chunk]) -> np.ndarray:
    """Read a blob's values from open binary file ``f`` into one new array (float32 or float64)."""
    if not chunks:
        return np.empty(0, _FLOAT)
    dtype = chunks[0].dtype
    total = sum(chunk.nbytes for chunk in chunks)
    values = np.empty(total // dtype.itemsize, dtype)
    target = memoryview(values).cast("B")
    filled = 0
    for chunk in chunks:
        f.seek(chunk.offset)
        got = f.readinto(target[filled:filled + chunk.nbytes])
        if got != chunk.nbytes:
            raise WireError("file ended inside a blob at byte %d" % (chunk.offset + (got or 0)))
        filled += chunk.nbytes
    return values

"""A minimal protobuf wire-format scanner and encoder, for the bulk float payloads of model files.

Python protobuf turns a packed ``repeated float`` into a container of Python floats, which is
far too slow and memory-hungry for a 138M-parameter caffemodel. Here we walk the wire format
ourselves: every field is ``tag = (number << 3) | wire_type`` (a varint) followed by a varint
(wire type 0), 8 bytes (1), a varint length and that many bytes (2), or 4 bytes (5). Groups
(3, 4) are not used by caffe.proto and are treated as corruption. Payload bytes are never copied
here: the scanner returns offsets into the buffer it is given.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message (the caller names the file)."""


class Field(NamedTuple):
    """One field occurrence: ``buf[start:end]`` is the whole field (tag included);
    for wire type 2, ``buf[value_start:end]`` is its payload, otherwise ``value`` is the integer."""

    number: int
    wire_type: int
    start: int
    value_start: int
    end: int
    value: int


def read_varint(buf, pos: int, end: int):
    """Decode a base-128 varint at ``pos``; return (value, position after it)."""
    result = 0
    shift = 0
    limit = min(end, pos + _MAX_VARINT_BYTES)
    while pos < limit:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise WireError("truncated varint at byte %d" % pos)


def iter_fields(buf, start: int = 0, end: int | None = None) -> Iterator[Field]:
    """Yield the fields of the message in ``buf[start:end]``; raise WireError if malformed."""
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        field_start = pos
        tag, pos = read_varint(buf, pos, end)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise WireError("field number 0 at byte %d" % field_start)
        value = 0
        if wire_type == VARINT:
            value, pos = read_varint(buf, pos, end)
            value_start = pos
        elif wire_type == LENGTH_DELIMITED:
            value, value_start = read_varint(buf, pos, end)
            pos = value_start + value
        elif wire_type == FIXED32:
            value_start, pos = pos, pos + 4
        elif wire_type == FIXED64:
            value_start, pos = pos, pos + 8
        else:
            raise WireError("unsupported wire type %d at byte %d" % (wire_type, field_start))
        if pos > end:
            raise WireError("field %d at byte %d runs past the end of its message" % (number, field_start))
        yield Field(number, wire_type, field_start, value_start, pos, value)


def encode_varint(value: int) -> bytes:
    """Encode a non-negative integer as a base-128 varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited_header(number: int, length: int) -> bytes:
    """Tag and length of a wire-type-2 field of ``length`` payload bytes."""
    return encode_varint((number << 3) | LENGTH_DELIMITED) + encode_varint(length)

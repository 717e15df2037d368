"""Read text-format NetParameters (.prototxt) and upgrade them to the current format."""
from __future__ import annotations

import logging
import os
import re

from google.protobuf import text_format

from magic_init.errors import ModelFileError, NetDefinitionError, ProtoParseError
from magic_init.io import fork_fields
from magic_init.io.upgrade import upgrade_net
from magic_init.proto import caffe_pb2

log = logging.getLogger(__name__)

# protobuf's ParseError text starts with "line:column : " (sometimes after a "filename:").
_POSITION_PREFIX = re.compile(r"^\s*(?:\S+?:)?(\d+):(\d+)\s*:\s*")


def read_prototxt(path) -> "caffe_pb2.NetParameter":
    """Parse the prototxt at ``path`` and return it upgraded (see ``upgrade_net``)."""
    path = os.fspath(path)
    return parse_prototxt(read_text(path), filename=path)


def read_text(path: str) -> str:
    """The UTF-8 text of ``path``; ModelFileError if it is missing, unreadable or not text."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ModelFileError("%s: cannot read (%s)" % (path, error.strerror or error))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ProtoParseError("%s:%d: not UTF-8 text (byte 0x%02x)" % (path, line, data[error.start]))


def parse_prototxt(text: str, filename: str = "<string>") -> "caffe_pb2.NetParameter":
    """Parse a text-format NetParameter; ProtoParseError("file:line: message") on bad syntax."""
    net = parse_text_message(text, caffe_pb2.NetParameter(), filename)
    return upgrade_in_file(net, filename)


def upgrade_in_file(net, filename: str):
    """``upgrade_net(net)``, with the file named in any NetDefinitionError."""
    try:
        return upgrade_net(net)
    except NetDefinitionError as error:
        raise NetDefinitionError("%s: %s" % (filename, error)) from None


def parse_text_message(text: str, message, filename: str):
    """Parse ``text`` into ``message`` (any message type), reporting errors as file:line.

    Fields of Caffe forks that the schema lacks (``io.fork_fields``) are read where they mean a
    BVLC field and skipped otherwise, each layer that had some named in one warning."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        if "has no field named" not in str(error):
            raise ProtoParseError(_located_message(error, filename)) from None
        _parse_with_fork_fields(text, message, filename, error)
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise ProtoParseError("%s: %s" % (filename, _one_line(str(error)))) from None
    return message


def _parse_with_fork_fields(text: str, message, filename: str, first_error):
    """Parse ``text`` keeping the fork fields we can read and skipping the others (see above)."""
    try:
        unknown = fork_fields.scan(text, message.DESCRIPTOR)
    except text_format.ParseError as error:  # a syntax error as well: say where
        raise ProtoParseError(_located_message(error, filename)) from None
    text, rewritten = fork_fields.rewrite_aliases(text, unknown)
    message.Clear()
    try:
        text_format.Parse(text, message, allow_unknown_field=True)
    except text_format.ParseError as error:
        raise ProtoParseError(_located_message(error, filename)) from None
    by_name = {}
    for field in unknown:
        by_name.setdefault(field.name, []).append(field)
    for name, fields in by_name.items():
        layers = sorted({"%s (%s)" % (f.layer_name, f.layer_type) for f in fields if f.layer_name or f.layer_type})
        shown = ", ".join(layers[:3]) + (" and %d more" % (len(layers) - 3) if len(layers) > 3 else "")
        what = "read as round_mode" if fields[0] in rewritten else "ignored"
        log.warning("%s:%d: field '%s' of a Caffe fork (not in BVLC Caffe)%s: %s", filename, fields[0].line,
                    name, " in layer%s %s" % ("s" if len(layers) > 1 else "", shown) if layers else "", what)


def _located_message(error, filename: str) -> str:
    text = _one_line(str(error))
    line = error.GetLine() if hasattr(error, "GetLine") else None
    match = _POSITION_PREFIX.match(text)
    if match:
        line = line or int(match.group(1))
        text = text[match.end():]
    if line:
        return "%s:%d: %s" % (filename, line, text)
    return "%s: %s" % (filename, text)


def _one_line(text: str) -> str:
    return " ".join(text.split())

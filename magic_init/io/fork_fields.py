"""Fields of Caffe forks in a prototxt: find them, read the ones we know, skip the rest.

Prototxts published with Caffe forks (Faster R-CNN, SSD, SegNet, DenseNet-Caffe, ...) carry
fields BVLC's ``caffe.proto`` lacks (``roi_pooling_param``, ``bn_param``, ``permute_param``,
``pooling_param { ceil_mode: false }``). protobuf's parser stops at the first one, before the
user learns which layer is the problem. ``scan`` walks the text with protobuf's own tokenizer
against the schema and lists each unknown field with its line and the layer it sits in;
``rewrite_aliases`` turns the fork spellings that mean a BVLC field into that field, so that the
parse that skips the rest keeps their meaning:

* ``pooling_param { ceil_mode: false }`` (OpenCV's and several forks' spelling) is BVLC's
  ``round_mode: FLOOR`` (output size ⌊(H + 2p − k)/s⌋ + 1); ``ceil_mode: true`` is ``CEIL``.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from google.protobuf import text_format

_LAYER_FIELDS = ("layer", "layers")
_CLOSE = {"{": "}", "<": ">"}
_CEIL_MODE = re.compile(r"\bceil_mode\s*:\s*(\w+)")
_TRUE = ("true", "True", "t", "1")
_NOT_A_VALUE = (":", "{", "}", "<", ">", "[", "]", ",", ";", "")


class UnknownField(NamedTuple):
    """A field the schema lacks: its 1-based line, its name, the message path and its layer."""
    line: int
    name: str
    path: str
    layer_name: str
    layer_type: str


def scan(text: str, descriptor) -> list:
    """The fields of ``text`` (a text-format message of type ``descriptor``) the schema lacks.

    Raises text_format.ParseError where the text is not valid text format at all."""
    tokenizer = text_format.Tokenizer(text.split("\n"))
    found = []
    _scan_message(tokenizer, descriptor, "", found, None)
    if not tokenizer.AtEnd():
        raise text_format.ParseError("unbalanced '%s'" % tokenizer.token, tokenizer._line + 1, 0)
    return found


def _scan_message(tokenizer, descriptor, path, found, layer):
    """Scan fields until the end or a closing brace; ``layer`` collects a layer's name and type."""
    while not tokenizer.AtEnd() and tokenizer.token not in ("}", ">"):
        line = tokenizer._line + 1
        name = tokenizer.ConsumeIdentifierOrNumber() if hasattr(tokenizer, "ConsumeIdentifierOrNumber") \
            else tokenizer.ConsumeIdentifier()
        field = descriptor.fields_by_name.get(name) if descriptor is not None else None
        tokenizer.TryConsume(":")
        if tokenizer.token in _CLOSE:
            close = _CLOSE[tokenizer.token]
            tokenizer.NextToken()
            inner = field.message_type if field is not None else None
            inner_layer = {"name": "", "type": "", "unknown": []} \
                if layer is None and name in _LAYER_FIELDS and inner is not None else layer
            _scan_message(tokenizer, inner, path + "." + name if path else name, found, inner_layer)
            tokenizer.Consume(close)
            if inner_layer is not layer:
                found.extend(u._replace(layer_name=inner_layer["name"], layer_type=inner_layer["type"])
                             for u in inner_layer["unknown"])
        else:
            value = _skip_scalar(tokenizer)
            if layer is not None and descriptor is not None and descriptor.name.endswith("LayerParameter") \
                    and name in ("name", "type") and not layer[name]:
                layer[name] = value.strip("\"'")
        if field is None and descriptor is not None:
            unknown = UnknownField(line, name, path, "", "")
            (layer["unknown"] if layer is not None else found).append(unknown)
        tokenizer.TryConsume(",") or tokenizer.TryConsume(";")


def _skip_scalar(tokenizer) -> str:
    """Consume a scalar value or a ``[a, b]`` list; return the first token's text."""
    if tokenizer.TryConsume("["):
        first = ""
        while not tokenizer.TryConsume("]"):
            first = first or tokenizer.token
            tokenizer.NextToken()
        return first
    first = tokenizer.token
    if first in _NOT_A_VALUE:
        raise text_format.ParseError("Expected a value, got %r" % first, tokenizer._line + 1, tokenizer._column + 1)
    tokenizer.NextToken()
    while tokenizer.token[:1] in ("'", '"') and first[:1] in ("'", '"'):  # adjacent strings concatenate
        tokenizer.NextToken()
    return first


def rewrite_aliases(text: str, unknown: list) -> tuple:
    """``text`` with the fork fields that mean a BVLC field spelled as that field.

    Returns (new text, the UnknownFields rewritten)."""
    lines = text.split("\n")
    rewritten = []
    for field in unknown:
        if field.name == "ceil_mode" and field.path.endswith("pooling_param"):
            index = field.line - 1

            def to_round_mode(match):
                return "round_mode: " + ("CEIL" if match.group(1) in _TRUE else "FLOOR")

            lines[index] = _CEIL_MODE.sub(to_round_mode, lines[index], count=1)
            rewritten.append(field)
    return "\n".join(lines), rewritten

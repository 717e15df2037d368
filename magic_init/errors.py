"""Exceptions raised by magic_init.

Library code raises these; the CLI turns each into one line on stderr and a non-zero exit
code (see ``magic_init.cli``). Messages name the file, line, layer or blob concerned.
"""


class MagicInitError(Exception):
    """Base class of every error magic_init reports to the user."""


class ProtoParseError(MagicInitError):
    """A prototxt or caffemodel could not be parsed (message is ``file:line: what``)."""


class ModelFileError(MagicInitError):
    """A model file is missing, unreadable, truncated or not a Caffe model."""


class ShapeMismatchError(MagicInitError):
    """A weight blob does not fit the layer it is copied into."""


class UnsupportedLayerError(MagicInitError):
    """The net uses a layer type the chosen backend cannot execute."""


class NetDefinitionError(MagicInitError):
    """The net is inconsistent: unknown bottoms, missing input shapes, bad parameters."""


class DataError(MagicInitError):
    """The sample data source is missing, empty or unreadable."""


class BackendError(MagicInitError):
    """The requested backend or device is not available."""


def first_line(error) -> str:
    """The first line of a foreign exception's message (its class name when it has none), for a
    one-line error of ours that wraps it."""
    return str(error).strip().split("\n")[0] or type(error).__name__

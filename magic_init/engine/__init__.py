"""The built-in PyTorch engine: ``Net`` and ``Blob`` with pycaffe's interface, and the Caffe
layer registry (``magic_init.engine.layers``). Only this package imports torch."""
from .blob import Blob
from .layers import supported_types
from .net import Net

__all__ = ["Blob", "Net", "supported_types"]

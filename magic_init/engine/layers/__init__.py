"""Caffe layer types of the built-in engine, registered by their exact type string."""
from . import loss, neuron, normalization, structure, vision  # noqa: F401  (register the types)
from .base import LAYER_TYPES, Layer, check_supported, create_layer, register, supported_types

__all__ = ["LAYER_TYPES", "Layer", "check_supported", "create_layer", "register", "supported_types"]

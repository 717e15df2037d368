"""magic_init: data-dependent initialization of Caffe models.

Krähenbühl, Doersch, Donahue & Darrell, "Data-dependent Initializations of Convolutional Neural
Networks", ICLR 2016. The public API is imported lazily so that ``import magic_init`` needs
neither PyTorch nor pycaffe::

    net = magic_init.Net("models/caffenet.prototxt")        # built-in PyTorch engine
    net = magic_init.get_net("model.prototxt", backend="auto")  # pycaffe when it imports
"""
__version__ = "0.1.0"

_LAZY = {
    "Net": ("magic_init.engine", "Net"),
    "get_net": ("magic_init.backends", "get_net"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError("module 'magic_init' has no attribute %r" % name)


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

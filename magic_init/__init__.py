"""magic_init: data-dependent initialization of Caffe models.

Krähenbühl, Doersch, Donahue & Darrell, "Data-dependent Initializations of Convolutional Neural
Networks", ICLR 2016. The public API is imported lazily so that ``import magic_init`` needs
neither PyTorch nor pycaffe::

    net = magic_init.Net("models/caffenet.prototxt")        # built-in PyTorch engine
    net = magic_init.get_net("model.prototxt", backend="auto")  # pycaffe when it imports

The CLI's steps, as functions (see README.md, "Python API")::

    model = magic_init.read_model("model.prototxt", "pretrained.caffemodel")   # weights optional
    net = magic_init.build_net(model, backend="torch", device="cpu", batch_size=16)
    sample = magic_init.load_sample(net, model, data="voc_train.txt", num_images=160)
    plan = magic_init.plan_initialization(model, net)         # the layers the model does not provide
    magic_init.initialize(net, sample.batches, init="kmeans", layers=plan.initialize)
    # or, when the model provides every layer: magic_init.rescale(net, sample.batches)
    stats = magic_init.measure(net, sample.batches)
    magic_init.save_model("out.caffemodel", model, net)
"""
__version__ = "0.1.0"

_LAZY = {
    "Net": ("magic_init.engine", "Net"),
    "get_net": ("magic_init.backends", "get_net"),
    "read_model": ("magic_init.load", "read_model"),
    "build_net": ("magic_init.load", "build_net"),
    "load_sample": ("magic_init.load", "load_sample"),
    "save_model": ("magic_init.load", "save_model"),
    "plan_initialization": ("magic_init.load", "plan_initialization"),
    "initialize": ("magic_init.algorithm", "initialize"),
    "rescale": ("magic_init.algorithm", "rescale"),
    "measure": ("magic_init.measure_stat", "measure"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError("module 'magic_init' has no attribute %r" % name)


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

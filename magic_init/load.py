"""Build the net and the sample a run needs (the original research code's load.py).

``read_model`` reads the prototxt and optional caffemodel (legacy formats upgraded),
``build_net`` instantiates it on a backend with the sample's batch size and input size,
``load_sample`` reads and preprocesses the images, ``save_model`` writes the result.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from magic_init.algorithm.netinfo import AFFINE_TYPES
from magic_init.errors import ModelFileError, NetDefinitionError
from magic_init.io import copy_weights, read_caffemodel, read_prototxt, write_caffemodel
from magic_init.netgraph import instantiate

log = logging.getLogger(__name__)


@dataclass
class Model:
    """A net definition and, with --load, its weights ``{layer: [array, ...]}``."""

    prototxt: str
    net: object
    weights: dict = field(default_factory=dict)
    weights_path: str = None


def read_model(prototxt, weights_path=None):
    net = read_prototxt(prototxt)
    weights = read_caffemodel(weights_path).weights if weights_path else {}
    return Model(prototxt, net, dict(weights), weights_path)


def input_blob(net_param):
    """Name of the image input: the first top of the first Input layer after instantiation."""
    for layer in net_param.layer:
        if layer.type == "Input" and layer.top:
            return layer.top[0]
    raise NetDefinitionError("the net has no input: add an Input layer, input/input_shape, or a data layer")


def _input_shapes(model, batch_size, size):
    """Shapes for every Input top: the image blob gets (batch, C, H, W), other tops (batch, ...)."""
    try:
        probe = instantiate(model.net, phase="test")
    except NetDefinitionError:
        if size is None:
            raise
        probe = instantiate(model.net, phase="test", input_shapes=_guess_shapes(model.net, batch_size, size))
    shapes = {}
    image_top = input_blob(probe)
    for layer in probe.layer:
        if layer.type != "Input":
            continue
        for i, top in enumerate(layer.top):
            dims = list(layer.input_param.shape[min(i, len(layer.input_param.shape) - 1)].dim) \
                if layer.input_param.shape else [batch_size]
            dims[0] = batch_size
            if top == image_top and size is not None:
                if len(dims) != 4:
                    raise NetDefinitionError("--size needs a 4-D image input, '%s' is %s" % (top, tuple(dims)))
                dims[2:] = size
            shapes[top] = tuple(dims)
    return shapes


def _guess_shapes(net_param, batch_size, size):
    """Shapes for data layers whose size only the data knows: 3 x H x W images, (batch,) labels."""
    shapes = {}
    for layer in net_param.layer:
        if layer.type.endswith("Data") and layer.top:
            shapes[layer.top[0]] = (batch_size, 3) + tuple(size)
            for top in layer.top[1:]:
                shapes[top] = (batch_size,)
    return shapes


def build_net(model, backend="auto", device="cpu", batch_size=16, size=None):
    """Instantiate the model in TEST phase on a backend, with the loaded weights copied in."""
    from magic_init.backends import get_net

    net = get_net(model.net, backend=backend, device=device, phase="test",
                  input_shapes=_input_shapes(model, batch_size, size))
    reset_unloaded_layers(net, {name for name, arrays in model.weights.items() if arrays})
    if model.weights:
        copy_weights(model.weights, net.params, source_name=model.weights_path)
    return net


def reset_unloaded_layers(net, loaded):
    """Zero the affine layers the caffemodel does not provide, so that Algorithm 1 initializes them
    (it initializes exactly the all-zero layers), and make unloaded BatchNorm layers the identity in
    TEST phase (running mean 0, variance 1, scale factor 1) instead of dividing by sqrt(eps)."""
    for name, kind in zip(net.layer_names, net.layer_types):
        if name in loaded or name not in net.params:
            continue
        blobs = net.params[name]
        if kind in AFFINE_TYPES:
            for blob in blobs:
                blob.data[...] = 0
        elif kind == "BatchNorm" and len(blobs) == 3:
            blobs[0].data[...] = 0
            blobs[1].data[...] = 1
            blobs[2].data[...] = 1


def check_writable(path):
    """Fail early (before any work) when ``path`` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ModelFileError("%s: is a folder, not a file" % path)
    if not os.path.isdir(folder):
        raise ModelFileError("%s: folder %s does not exist" % (path, folder))
    if not os.access(folder, os.W_OK):
        raise ModelFileError("%s: folder %s is not writable" % (path, folder))


def save_model(path, model, net):
    """Write the prototxt's layers with the net's current weights (and loaded ones it lacks).

    Loaded layers that the prototxt does not have are dropped, as Caffe's copy_from ignores them."""
    names = {layer.name for layer in model.net.layer}
    weights = {name: arrays for name, arrays in model.weights.items() if name in names and arrays}
    for name, blobs in net.params.items():
        weights[name] = [b.data.copy() for b in blobs]
    write_caffemodel(path, model.net, weights)


def load_sample(net, model, data=None, root=None, num_images=160, batch_size=16, mean=None, scale=None,
                size=None, seed=0, progress=False):
    """Read and preprocess the sample for ``net``'s image input: a ``magic_init.data.Sample``.

    ``data`` is a list file, folder, glob or LMDB; None or 'prototxt' reads the net's own data layer.
    ``progress``: a progress bar over the batches read (magic_init.progress).
    """
    from magic_init.data import choose_source
    from magic_init.data import load_sample as read_sample

    image_blob = input_blob(net.net_param)  # both backends keep their instantiated NetParameter
    source, transform = choose_source(None if data in (None, "prototxt") else data, model.net,
                                      input_shape=net.blobs[image_blob].data.shape, root=root, mean=mean,
                                      scale=scale, size=size,
                                      base_dir=os.path.dirname(os.path.abspath(model.prototxt)))
    sample = read_sample(source, transform, num_images=num_images, seed=seed, batch_size=batch_size,
                         progress=progress)
    log.info("sample: %d images from %s (%d skipped as unreadable)", len(sample.data), data or "the data layer",
             len(sample.skipped))
    return sample

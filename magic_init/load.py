"""Build the net and the sample a run needs (the original research code's load.py).

``read_model`` reads the prototxt and optional caffemodel (legacy formats upgraded),
``build_net`` instantiates it on a backend with the sample's batch size and input size,
``load_sample`` reads and preprocesses the images, ``save_model`` writes the result.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from magic_init import batch_budget, layer_facts, netgraph
from magic_init.algorithm.description import describe
from magic_init.errors import MagicInitError, ModelFileError, NetDefinitionError
from magic_init.io import copy_weights, read_caffemodel, read_prototxt, write_caffemodel
from magic_init.timing import timed
from magic_init.weight_guard import check_finite, check_no_zero_affine

log = logging.getLogger(__name__)

#: The Caffe types of affine layers (``layer_facts``).
AFFINE_TYPES = layer_facts.types(role=layer_facts.AFFINE)


@dataclass
class Model:
    """A net definition and, with --load, its weights ``{layer: [array, ...]}``."""

    prototxt: str
    net: object
    weights: dict = field(default_factory=dict)
    weights_path: str = None


def read_model(prototxt, weights_path=None):
    """The prototxt and, with ``weights_path``, its weights; a non-finite loaded value is an error.

    Args:
        prototxt: Path of the net definition (a prototxt; legacy formats are upgraded).
        weights_path: Path of a caffemodel (binary, text or HDF5) whose weights to load, or None
            (the default) for no weights.

    Returns:
        A ``Model``: ``prototxt`` (the path as given), ``net`` (the upgraded NetParameter), ``weights``
        (``{layer: [array, ...]}``, empty without ``weights_path``) and ``weights_path``.

    Raises:
        ModelFileError: a file cannot be read or is not a Caffe model, or a loaded weight is NaN or Inf.
        ProtoParseError: the prototxt does not parse.
    """
    net = read_prototxt(prototxt)
    weights = read_caffemodel(weights_path).weights if weights_path else {}
    check_finite(weights, weights_path)
    return Model(prototxt, net, dict(weights), weights_path)


def affine_layer_names(net):
    """Names of ``net``'s affine layers (what the algorithm works on); NetDefinitionError if none."""
    affine = [net.layer_names[i] for i in describe(net).affine_layers()]
    if not affine:
        raise NetDefinitionError("the net has no %s layer: nothing to initialize or measure"
                                 % "/".join(AFFINE_TYPES))
    return affine


@dataclass
class InitPlan:
    """Which affine layers Algorithm 1 initializes, decided once from the user's request."""

    initialize: list      # affine layers Algorithm 1 initializes, in net order
    loaded: list          # affine layers whose weights the --load model provides
    new: list             # affine layers the --load model does not provide (initialized by necessity)
    unmatched: list       # layers of the --load model that the net does not have


def plan_initialization(model, net, zero_all=False, zero_from=None):
    """The affine layers to initialize: without a loaded model all of them; with one, those it does
    not provide, plus every layer (``zero_all``) or every affine layer from ``zero_from`` on.

    A loaded layer keeps its weights even when they are all zero (e.g. a zero-initialized last
    residual layer). Raises NetDefinitionError when ``zero_from`` names no layer of the net."""
    position = {name: i for i, name in enumerate(net.layer_names)}
    affine = affine_layer_names(net)
    provided = {name for name, arrays in model.weights.items() if arrays}
    loaded = [name for name in affine if name in provided]
    new = [name for name in affine if name not in provided]
    chosen = set(new)
    if zero_all:
        chosen = set(affine)
    if zero_from is not None:
        if zero_from not in position:
            raise NetDefinitionError("--zero-from: the net has no layer named '%s'" % zero_from)
        chosen |= {name for name in affine if position[name] >= position[zero_from]}
    unmatched = sorted(set(model.weights) - set(position))
    return InitPlan([name for name in affine if name in chosen], loaded, new, unmatched)


def input_blob(net_param):
    """Name of the image input: the first top of the first Input layer after instantiation
    (``netgraph.image_input``)."""
    return netgraph.image_input(net_param)


def instantiate_for_run(model, batch_size, size=None, data=None, root=None, level=0, stages=()):
    """The NetParameter a run builds, in TEST phase: instantiated once, here, for both backends.

    netgraph decides the input shapes (``netgraph.decide_input_shapes``): every input gets
    ``batch_size`` images, the image input and every data layer H x W = ``size``; the channel count
    of a data layer that leaves it to its data is read from the data (``data_channels``).

    Args:
        model: The ``Model`` from ``read_model``.
        batch_size: The first axis of every input.
        size: ``(H, W)``, or None (the default) for the sizes the prototxt gives.
        data: The run's --data source, or None (the default): tells data layers' channel counts.
        root: Folder that relative paths of ``data``'s list are resolved against, or None.
        level: NetState level (default 0).
        stages: NetState stages, added to the prototxt's own ``state`` (default none).

    Returns:
        The instantiated NetParameter (``netgraph.instantiate``).
    """
    base_dir = _prototxt_dir(model)
    stripped = _without_guessed_label_readers(model.net, size, level, stages)
    return netgraph.instantiate(stripped, "test", level, stages, batch_size=batch_size, size=size,
                                channels=lambda layer: _data_given_channels(layer, data, root, base_dir))


def _prototxt_dir(model):
    """The folder of the model's prototxt: where the paths in its data layers are resolved."""
    return os.path.dirname(os.path.abspath(model.prototxt))


def data_channels(layer, data=None, root=None, base_dir=None):
    """The channel count of data ``layer``'s images: what the layer fixes
    (``netgraph.data_layer_channels``: ImageData ``is_color``, force_gray, ...), else what the data
    gives (1 for gray images or 1-channel Datums, else 3), else 3 when there is no data to read
    (a Python layer without --data, a missing LMDB).

    Args:
        layer: A data ``caffe_pb2.LayerParameter``.
        data: The run's --data source, or None (the default): the layer's own source.
        root: Folder that relative paths of ``data``'s list are resolved against, or None.
        base_dir: Folder that relative paths in the layer are resolved against (the prototxt's).

    Returns:
        The channel count (int).
    """
    return netgraph.data_image_channels(layer, lambda own: _data_given_channels(own, data, root, base_dir))


def _data_given_channels(layer, data, root, base_dir):
    """The channel count the sample data gives ``layer``, or None (``magic_init.data.data_channels``)."""
    from magic_init.data import data_channels as channels_of_data

    return channels_of_data(None if data == "prototxt" else data, layer, root=root, base_dir=base_dir)


def _without_guessed_label_readers(net_param, size, level=0, stages=()):
    """``net_param`` without the losses/Accuracy reading a label whose shape only the data knows.

    A data layer without shapes of its own (a database or Python layer, run with ``size``) gets a
    guessed label shape (batch,), which is wrong for segmentation nets' (N, 1, H, W) labels; the
    algorithm never runs those layers (Algorithm 2 puts its random linear loss below them)."""
    if size is None:
        return net_param
    labels = {top for layer in netgraph.data_layers(net_param, "test", level, stages)
              if netgraph.own_image_shape(layer) is None for top in layer.top[1:]}
    kept = [layer for layer in net_param.layer
            if not (layer_facts.scale(layer.type) == layer_facts.STRIPS and labels & set(layer.bottom))]
    if len(kept) == len(net_param.layer):
        return net_param
    stripped = type(net_param)()
    stripped.CopyFrom(net_param)
    del stripped.layer[:]
    stripped.layer.extend(kept)
    return stripped


@timed("building the net")
def build_net(model, backend="auto", device="cpu", batch_size=16, size=None, data=None, root=None,
              fillers=False, seed=0, level=0, stages=()):
    """Instantiate the model in TEST phase on a backend, with the loaded weights copied in.

    The affine layers the model does not provide are zeroed for Algorithm 1, or, with ``fillers``,
    keep the values the prototxt's fillers give them as ``caffe train`` starts (drawn with ``seed``:
    the engine's generator, or Caffe's ``set_random_seed``; a layer without a ``weight_filler`` gets
    Caffe's default, constant 0, see ``zero_filled_layers``). This is what ``stats`` measures.

    On the built-in engine every layer type is checked first, so that a net with a layer the
    engine cannot run fails naming that layer, before anything about its shapes is asked.
    The net is instantiated once (``instantiate_for_run``: netgraph decides the input shapes) and
    both backends build that NetParameter as it is. ``data``/``root`` (the run's --data source)
    tell data layers that leave their channel count to the data how many channels it has.

    Args:
        model: The ``Model`` from ``read_model``; its loaded weights are copied into the net.
        backend: "auto" (the default: pycaffe when it imports, else the built-in PyTorch engine),
            "caffe" or "torch".
        device: "cpu" (the default), "cuda" or "cuda:N".
        batch_size: The batch size of the net's inputs (default 16), or "auto"
            (``batch_budget.AUTO``): built with ``batch_budget.MAX_AUTO_BATCH``, for
            ``batch_budget.resolve_batch_size`` to choose the run's batch from its blob shapes.
        size: ``(H, W)`` of the image input and of every data layer's images, or None (the default)
            for the sizes the prototxt gives.
        data: The run's --data source (list file, folder, glob or LMDB), or None (the default); only
            used to tell a data layer's channel count.
        root: Folder that relative paths of ``data``'s list are resolved against, or None (the default).
        fillers: If True, the affine layers the model does not provide keep their filler values
            instead of being zeroed (default False).
        seed: Seed of the fillers' random draws (default 0); used only with ``fillers``.
        level: The NetState level that selects layers (default 0).
        stages: NetState stages that select layers, added to the prototxt's own ``state`` (default
            none); ``load_sample`` reads the data layer of the same state.

    Returns:
        The net, in TEST phase: a ``magic_init.engine.Net`` on the "torch" backend, a
        ``magic_init.backends.pycaffe.PycaffeNet`` on "caffe" (both with pycaffe's ``blobs``, ``params``,
        ``layer_names``... and the instantiated ``net_param``).
    """
    from magic_init.backends import get_net, resolve_backend

    chosen = resolve_backend(backend)
    if chosen == "torch":
        from magic_init.engine.layers import check_supported
        check_supported(netgraph.filter_net(model.net, netgraph.net_state("test", level, stages, model.net)).layer)
    net_param = instantiate_for_run(model, batch_budget.build_batch(batch_size), size, data, root, level, stages)
    loaded = {name for name, arrays in model.weights.items() if arrays}
    extra = {}
    if chosen == "torch" and not fillers:      # zeroed below: drawing their fillers is wasted time
        extra["unfilled"] = [layer.name for layer in net_param.layer
                             if layer.type in AFFINE_TYPES and layer.name not in loaded]
    net = get_net(net_param, backend=chosen, device=device, phase="test", instantiated=True,
                  seed=seed if fillers else None, **extra)
    reset_unloaded_layers(net, loaded, keep_affine=fillers)
    if model.weights:
        copy_weights(model.weights, net.params, source_name=model.weights_path)
    return net


def zero_filled_layers(model, net):
    """``[(layer, reason)]``: the affine layers of ``net`` that the model does not provide and whose
    weights are all zero, reason "no weight_filler" (Caffe's default filler is constant 0) or
    "its weight_filler gives all zeros"; for a net built with ``fillers=True``."""
    loaded = {name for name, arrays in model.weights.items() if arrays}
    specs = {layer.name: layer for layer in net.net_param.layer}
    found = []
    for name in affine_layer_names(net):
        if name in loaded or np.any(net.params[name][0].data):
            continue
        spec = specs.get(name)
        param = None
        if spec is not None:
            param = spec.inner_product_param if spec.type == "InnerProduct" else spec.convolution_param
        named = param is not None and param.HasField("weight_filler")
        found.append((name, "its weight_filler gives all zeros" if named else "no weight_filler"))
    return found


def size_change(model, net, size, data=None, root=None):
    """Whether ``size`` made ``net``'s weights unfit for the prototxt: the first layer whose
    parameter shapes differ from those the prototxt gives at its own input size, as
    ``(name, type, own shapes, net's shapes)``; None when they all fit, without ``size``, or when
    the prototxt has no size of its own (a data layer that takes it from the data)."""
    if size is None:
        return None
    try:
        from magic_init.engine import building
        from magic_init.engine.layers import create_layer

        state = net.net_param.state
        own = instantiate_for_run(model, 1, None, data, root, state.level, tuple(state.stage))
        blobs = {}
        for param in own.layer:
            layer = create_layer(param, "test")
            if param.type == "Input":
                blobs.update(zip(param.top, layer.top_shapes()))
                continue
            bottoms = [blobs[b] for b in param.bottom]
            shapes = [tuple(int(d) for d in s) for s in layer.param_shapes(bottoms)]
            if param.name in net.params:
                current = [tuple(b.data.shape) for b in net.params[param.name]]
                if current != shapes:
                    return param.name, param.type, shapes, current
            blobs.update(zip(param.top, building.top_shapes(layer, bottoms, shapes)))
    except (ImportError, MagicInitError) as error:
        log.debug("cannot tell whether --size changed the parameter shapes: %s", error)
    return None


def sized_net_param(net_param, size, image_top):
    """A copy of ``net_param`` whose inputs are H x W = ``size``: the ``image_top`` of an Input
    layer, and every data layer that states a size (crop_size, ImageData new_height/new_width,
    MemoryData, DummyData); NetDefinitionError when one cannot state it (a square crop_size and a
    non-square size). Data layers that take their size from the data are left as they are."""
    height, width = size
    out = type(net_param)()
    out.CopyFrom(net_param)
    for layer in out.layer:
        if layer.type == "Input":
            shapes = layer.input_param.shape
            for i, top in enumerate(layer.top):
                index = min(i, len(shapes) - 1)
                if top == image_top and index >= 0 and len(shapes[index].dim) == 4:
                    shapes[index].dim[2], shapes[index].dim[3] = height, width
        elif layer_facts.is_data_layer(layer):
            _size_data_layer(layer, height, width)
    return out


def _size_data_layer(layer, height, width):
    def square(param, field):
        if height != width:
            raise NetDefinitionError("layer '%s': %s is square, it cannot state %dx%d"
                                     % (layer.name, field, height, width))
        setattr(param, field, height)

    if layer.transform_param.crop_size:
        square(layer.transform_param, "crop_size")
    elif layer.type == "ImageData":
        layer.image_data_param.new_height, layer.image_data_param.new_width = height, width
    elif layer.type == "MemoryData":
        layer.memory_data_param.height, layer.memory_data_param.width = height, width
    elif layer.type == "WindowData" and layer.window_data_param.crop_size:
        square(layer.window_data_param, "crop_size")
    elif layer.type == "DummyData":
        p = layer.dummy_data_param
        if p.shape and len(p.shape[0].dim) == 4:
            p.shape[0].dim[2], p.shape[0].dim[3] = height, width
        elif p.height and p.width:
            p.height[0], p.width[0] = height, width


def reset_unloaded_layers(net, loaded, keep_affine=False):
    """Zero the affine layers the caffemodel does not provide, so that Algorithm 1 initializes them
    (unless ``keep_affine``: their filler values stay), and make unloaded BatchNorm layers the
    identity in TEST phase (running mean 0, variance 1, scale factor 1) instead of dividing by sqrt(eps)."""
    for name, kind in zip(net.layer_names, net.layer_types):
        if name in loaded or name not in net.params:
            continue
        blobs = net.params[name]
        if kind in AFFINE_TYPES and not keep_affine:
            for blob in blobs:
                blob.data[...] = 0
        elif kind == "BatchNorm" and len(blobs) == 3:
            blobs[0].data[...] = 0
            blobs[1].data[...] = 1
            blobs[2].data[...] = 1


@timed("writing the model")
def save_model(path, model, net):
    """Write the prototxt's layers with the net's current weights (and loaded ones it lacks).

    Loaded layers that the prototxt does not have are dropped, as Caffe's copy_from ignores them.
    Nothing is written (ModelFileError) when a weight is NaN or Inf, or when an affine layer's
    weights are all zero and were not loaded that way: such a model fails at training step 0.

    Args:
        path: Path of the caffemodel to write (a current-format binary caffemodel, written atomically).
        model: The ``Model`` from ``read_model``: its prototxt's layers are written, with its loaded
            weights for those of them the net has no parameters for.
        net: The net (from ``build_net``) whose current parameters are written.

    Returns:
        None.

    Raises:
        ModelFileError: a weight is NaN or Inf, or an affine layer's weights are all zero and were
            not loaded so.
    """
    names = {layer.name for layer in model.net.layer}
    weights = {name: arrays for name, arrays in model.weights.items() if name in names and arrays}
    for name, blobs in net.params.items():
        weights[name] = [b.data for b in blobs]
    check_before_saving(path, model, net, weights)
    write_caffemodel(path, model.net, weights)


def check_before_saving(path, model, net, weights):
    """Refuse to write non-finite weights or an affine layer left all zero that was not loaded so."""
    check_finite(weights, "refusing to write %s" % path)
    loaded_zero = {name for name, arrays in model.weights.items() if arrays and not np.any(arrays[0])}
    check_no_zero_affine(path, {name: (kind, weights[name][0]) for name, kind in zip(net.layer_names, net.layer_types)
                                if kind in AFFINE_TYPES and name in weights}, allowed=loaded_zero)


@timed("reading the sample")
def load_sample(net, model, data=None, root=None, num_images=160, batch_size=16, mean=None, scale=None,
                size=None, seed=0, progress=False):
    """Read and preprocess the sample for ``net``'s image input: a ``magic_init.data.Sample``.

    ``data`` is a list file, folder, glob or LMDB; None or 'prototxt' reads the net's own data layer.
    ``progress``: a progress bar over the batches read (magic_init.progress).

    Args:
        net: The net (from ``build_net``); its image input's (N, C, H, W) shape sets the channel
            count and, for a --data source, the image size.
        model: The ``Model`` from ``read_model``: its net's data layer is read when ``data`` is None or
            'prototxt', and relative paths in the prototxt are resolved against its folder.
        data: List file, folder, glob or LMDB; None (the default) or 'prototxt' for the net's own
            data layer.
        root: Folder that relative list paths are resolved against, or None (the default).
        num_images: Images in the sample (default 160); when the source has more items, they are
            picked in a random order drawn with ``seed``.
        batch_size: Images read per batch (default 16).
        mean: Mean to subtract, overriding the transform's: values (e.g. B, G, R) or a .binaryproto
            path; None (the default) keeps the source's.
        scale: Factor the pixels are multiplied by after mean subtraction; None (the default) keeps
            the source's.
        size: Resize size, ``(H, W)`` or an int for a square; None (the default) keeps the source's.
        seed: Seed of the order the images are picked in (default 0).
        progress: If True, a progress bar over the batches read (default False).

    Returns:
        A ``magic_init.data.Sample``: ``batches`` (a ``BatchStore`` of ``{input blob: images}``, what
        ``initialize``/``rescale``/``measure`` take without joining them), ``data`` (n, C, H, W)
        float32 images joined into one array, ``labels`` (n,) int64 or
        None, ``names`` (the items' names), ``skipped`` (list of (item name, reason) for unreadable
        items), ``source_size`` (items in the source) and ``used`` (n).
    """
    from magic_init.data import choose_source
    from magic_init.data import load_sample as read_sample

    image_blob = input_blob(net.net_param)  # both backends keep their instantiated NetParameter
    shape = tuple(net.blobs[image_blob].data.shape)
    if len(shape) != 4:
        raise NetDefinitionError("input '%s' has shape %s: the sample is images, which need a 4-axis "
                                 "(N, C, H, W) input" % (image_blob, shape))
    state = net.net_param.state       # the data layer of the state the net was built in
    source, transform = choose_source(None if data in (None, "prototxt") else data, model.net,
                                      input_shape=net.blobs[image_blob].data.shape, root=root, mean=mean,
                                      scale=scale, size=size, base_dir=_prototxt_dir(model),
                                      phase=state.phase, level=state.level, stages=tuple(state.stage))
    sample = read_sample(source, transform, num_images=num_images, seed=seed, batch_size=batch_size,
                         progress=progress, key=image_blob)
    log.info("sample: %d images from %s (%d skipped as unreadable)", sample.used, data or "the data layer",
             len(sample.skipped))
    return sample

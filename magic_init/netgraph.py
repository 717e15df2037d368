"""Instantiate a net the way Caffe's ``Net::Init`` does before it creates any layer.

``instantiate`` returns a new NetParameter holding exactly the layers Caffe would run:

0. the net is upgraded (``magic_init.io.upgrade_net``: legacy formats, net-level ``input`` fields
   -> an Input layer), so a raw NetParameter and a read prototxt give the same result;
1. ``filter_net``: include/exclude NetStateRules (Caffe ``Net::FilterNet``/``StateMeetsRule``);
   every kept layer gets ``phase`` set to the net's phase unless it sets its own.
2. ``replace_data_layers``: data layers (Data, ImageData, ...) become ``Input`` layers with the
   same name and tops; their shapes come from ``input_shapes`` or the layer's own parameters, and,
   with ``batch_size``/``size``, the run's batch size and image size (``decide_input_shapes``: the
   one place the input shape of a run is decided).
3. ``insert_splits``: Caffe's ``InsertSplits`` (src/caffe/util/insert_splits.cpp): a top read by
   more than one bottom (or by a bottom and its own nonzero ``loss_weight``) gets a ``Split``
   layer ``<blob>_<layer>_<topidx>_split`` with tops ``<blob>_<layer>_<topidx>_split_<j>``.

Both backends build from the result (``net_to_build``), so layer and blob names agree between them;
``data_layers`` tells the data code which data layers a phase, level and stages select, by the same
rules.
"""
from __future__ import annotations

import logging
import os

from magic_init import layer_facts
from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2

log = logging.getLogger(__name__)

#: The types with role ``data`` in ``magic_init.layer_facts`` (replaced by Input layers).
DATA_LAYER_TYPES = layer_facts.types(role=layer_facts.DATA)
_PHASES = {"train": caffe_pb2.TRAIN, "test": caffe_pb2.TEST}
_PHASE_NAMES = {value: name for name, value in _PHASES.items()}

#: The parameter message holding each data layer type's ``batch_size``.
_BATCH_PARAMS = {"Data": "data_param", "ImageData": "image_data_param", "HDF5Data": "hdf5_data_param",
                 "MemoryData": "memory_data_param", "WindowData": "window_data_param"}


def phase_value(phase) -> int:
    """Map "train"/"test" (any case) or a caffe_pb2 Phase value to the Phase enum value."""
    if isinstance(phase, str):
        try:
            return _PHASES[phase.lower()]
        except KeyError:
            raise NetDefinitionError("unknown phase %r: use 'train' or 'test'" % phase) from None
    if int(phase) not in _PHASE_NAMES:
        raise NetDefinitionError("unknown phase %r: use 'train' or 'test'" % (phase,))
    return int(phase)


def phase_name(phase) -> str:
    """The phase as the backends name it: "train" or "test".

    Args:
        phase: "train"/"test" in any case, or a ``caffe_pb2`` Phase value (TRAIN, TEST).

    Returns:
        "train" or "test"; NetDefinitionError for anything else.
    """
    return _PHASE_NAMES[phase_value(phase)]


def net_state(phase="test", level=0, stages=(), net=None):
    """The NetState a net is instantiated in, as Caffe's ``Net(file, phase, level, stages)`` sets it.

    ``net``'s own ``state`` is the start: phase and level are set, ``stages`` are added to the
    stages the prototxt's ``state`` already names (Caffe adds them; it never removes one)."""
    result = caffe_pb2.NetState()
    if net is not None:
        result.CopyFrom(net.state)
    result.phase = phase_value(phase)
    result.level = int(level)
    result.stage.extend(stage for stage in stages if stage not in result.stage)
    return result


def instantiate(net, phase="test", level=0, stages=(), input_shapes=None, batch_size=None, size=None,
                channels=None):
    """Return the NetParameter Caffe's ``Net::Init`` would run (``net`` is not modified).

    Args:
        net: A ``caffe_pb2.NetParameter`` (upgraded here if it is of a legacy format).
        phase: "test" (the default), "train" (any case) or a ``caffe_pb2`` Phase value.
        level: The NetState level (default 0).
        stages: NetState stages added to those of ``net.state`` (default none).
        input_shapes: ``{top of an Input or data layer: shape}``; overrides the shapes an Input
            layer declares and supplies those a data layer cannot infer; these tops are taken as
            given (``batch_size`` and ``size`` do not change them). None (the default): none.
        batch_size: The first axis of every other input top, or None (the default) for the
            declared one. See ``decide_input_shapes``.
        size: ``(H, W)`` of the image input and of every data layer's images, or None (the default)
            for the declared sizes.
        channels: A function ``layer -> channel count or None`` for data layers whose parameters
            leave the channel count to the data (``data_layer_channels`` None); used only with
            ``batch_size`` or ``size``. None (the default): 3.

    Returns:
        A new NetParameter: the layers of that state, data layers turned into Input layers, Caffe's
        Split layers inserted; its ``state`` is the state it was instantiated in.
    """
    filtered = filter_net(_upgraded(net), net_state(phase, level, stages, net))
    _check_unique_names(filtered)
    given = dict(input_shapes or {})
    _check_input_names(filtered, given)
    if batch_size is None and size is None:
        replace_data_layers(filtered, given)
    else:
        decide_input_shapes(filtered, given, batch_size, size, channels)
    return insert_splits(filtered)


def net_to_build(net, phase="test", level=0, stages=(), input_shapes=None, instantiated=False):
    """The NetParameter a backend builds (``magic_init.engine.Net`` and ``PycaffeNet`` both call it).

    Args:
        net: A prototxt path or a ``caffe_pb2.NetParameter``; with ``instantiated``, the result of
            ``instantiate`` (then it is only copied: nothing is instantiated twice).
        phase, level, stages, input_shapes: As for ``instantiate``; with ``instantiated`` the phase
            must be the one ``net`` was instantiated in, and level, stages, input_shapes must be left out.
        instantiated: Whether ``net`` is already instantiated (default False).

    Returns:
        A new instantiated NetParameter.
    """
    if not instantiated:
        if isinstance(net, (str, os.PathLike)):
            from magic_init.io import read_prototxt
            net = read_prototxt(os.fspath(net))
        return instantiate(net, phase, level, stages, input_shapes)
    if not isinstance(net, caffe_pb2.NetParameter):
        raise NetDefinitionError("instantiated=True needs the NetParameter netgraph.instantiate returned, "
                                 "not %s" % type(net).__name__)
    if phase_value(phase) != net.state.phase:
        raise NetDefinitionError("net '%s' was instantiated in phase %s, not %s"
                                 % (net.name, phase_name(net.state.phase).upper(), phase_name(phase).upper()))
    if level or tuple(stages) or input_shapes:
        raise NetDefinitionError("net '%s' is already instantiated: level, stages and input_shapes were "
                                 "given to netgraph.instantiate, not here" % net.name)
    copy = caffe_pb2.NetParameter()
    copy.CopyFrom(net)
    return copy


def data_layers(net, phase="test", level=0, stages=()):
    """The data layers (with tops) that ``instantiate`` turns into Input layers, in net order.

    Args:
        net: A ``caffe_pb2.NetParameter`` (upgraded here if it is of a legacy format).
        phase, level, stages: The state, as for ``instantiate`` (Caffe's NetStateRules decide).

    Returns:
        A list of ``caffe_pb2.LayerParameter`` (copies).
    """
    kept = filter_net(_upgraded(net), net_state(phase, level, stages, net))
    return [layer for layer in kept.layer if layer_facts.is_data_layer(layer) and layer.top]


def image_input(net_param) -> str:
    """Name of the image input of an instantiated net: the first top of its first Input layer.

    Raises NetDefinitionError when the net has no input."""
    for layer in net_param.layer:
        if layer.type == "Input" and layer.top:
            return layer.top[0]
    raise NetDefinitionError("the net has no input: add an Input layer, input/input_shape, or a data layer")


def _upgraded(net):
    """``net`` in the current format (Caffe's UpgradeNetAsNeeded; the one legacy ``input`` upgrade)."""
    from magic_init.io.upgrade import upgrade_net
    return upgrade_net(net)


def _check_unique_names(net) -> None:
    """Layer names must be unique in the phase that runs: weights are stored and loaded by name."""
    seen = set()
    for layer in net.layer:
        if layer.name in seen:
            raise NetDefinitionError("two layers are named '%s' (weights are stored by layer name; rename one)"
                                     % layer.name)
        seen.add(layer.name)


def _check_input_names(net, input_shapes) -> None:
    """Every name in ``input_shapes`` must be a top of an Input or data layer."""
    known = [top for layer in net.layer if layer_facts.is_input(layer.type) for top in layer.top]
    unknown = sorted(set(input_shapes) - set(known))
    if unknown:
        raise NetDefinitionError("input_shapes names %s, but the net's inputs are %s"
                                 % (", ".join(map(repr, unknown)), ", ".join(map(repr, known))))


def state_meets_rule(state, rule) -> bool:
    """Caffe's ``Net::StateMeetsRule``: phase equal, level in [min, max], all stages, no not_stage."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(stage not in state.stage for stage in rule.stage):
        return False
    return not any(stage in state.stage for stage in rule.not_stage)


def layer_included(layer, state) -> bool:
    """Caffe's ``Net::FilterNet`` rule: included by default unless it has include rules;
    a met exclude rule drops it, a met include rule keeps it."""
    if layer.include and layer.exclude:
        raise NetDefinitionError("layer %r: specify either include rules or exclude rules, not both"
                                 % layer.name)
    included = not layer.include
    if any(state_meets_rule(state, rule) for rule in layer.exclude):
        included = False
    if any(state_meets_rule(state, rule) for rule in layer.include):
        included = True
    return included


def filter_net(net, state):
    """Copy of ``net`` with the layers ``state`` selects; each kept layer's ``phase`` is set."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    out.state.CopyFrom(state)
    del out.layer[:]
    for layer in net.layer:
        if layer_included(layer, state):
            kept = out.layer.add()
            kept.CopyFrom(layer)
            if not kept.HasField("phase"):
                kept.phase = state.phase
    return out


# ----------------------------------------------------------------------------- data layers

def replace_data_layers(net, input_shapes) -> None:
    """Replace data layers by Input layers (same name, tops), in place; apply ``input_shapes``."""
    for layer in net.layer:
        if layer_facts.is_data_layer(layer):
            shapes = data_layer_shapes(layer, input_shapes)
            _make_input_layer(layer, shapes)
        elif layer.type == "Input" and any(top in input_shapes for top in layer.top):
            declared = list(layer.input_param.shape)
            shapes = []
            for i, top in enumerate(layer.top):
                fallback = declared[i if len(declared) > 1 else 0].dim if declared else None
                shape = input_shapes.get(top, fallback)
                if shape is None:
                    raise NetDefinitionError("Input layer %r: no shape for top %r; pass it in "
                                             "input_shapes" % (layer.name, top))
                shapes.append(tuple(shape))
            _make_input_layer(layer, shapes)


def _make_input_layer(layer, shapes) -> None:
    name, tops, phase = layer.name, list(layer.top), layer.phase
    layer.Clear()
    layer.name, layer.type, layer.phase = name, "Input", phase
    layer.top.extend(tops)
    for shape in shapes:
        layer.input_param.shape.add().dim.extend(int(d) for d in shape)


def data_layer_shapes(layer, input_shapes) -> list:
    """Shapes of a data layer's tops: ``input_shapes`` first, else what the layer's params say.

    The first top is the image blob (N, C, H, W); further tops (labels) get shape (N,)."""
    shapes = []
    for i, top in enumerate(layer.top):
        if top in input_shapes:
            shapes.append(tuple(int(d) for d in input_shapes[top]))
        elif i == 0:
            shapes.append(_own_data_shape(layer))
        else:
            shapes.append((shapes[0][0],))
    return shapes


def decide_input_shapes(net, input_shapes=None, batch_size=None, size=None, channels=None) -> None:
    """Turn a filtered net's data layers into Input layers and size every input for a run, in place.

    This is where a run's input shape is decided (``instantiate`` calls it with ``batch_size`` or
    ``size``). Tops named in ``input_shapes`` keep the shape given there. Every other input top:

    - a data layer's image top (its first) is ``(N, C, H, W)``: H x W from ``size``, else the layer's
      own (crop_size, new_height/new_width, ...); C what the layer fixes (``data_layer_channels``),
      else ``channels(layer)``, else 3; a data layer with neither a size of its own nor ``size``
      is left to ``data_layer_shapes``, which names it;
    - every Input top gets ``batch_size`` as its first axis, and the image input (``image_input``)
      gets H x W = ``size`` (NetDefinitionError when it is not 4-D).

    Args:
        net: A filtered NetParameter (``filter_net``), changed in place.
        input_shapes: ``{top: shape}`` taken as given, or None (the default).
        batch_size: First axis of the other input tops, or None (the default): as declared.
        size: ``(H, W)``, or None (the default): as declared.
        channels: ``layer -> channel count or None`` for data layers that leave it to the data, or
            None (the default).

    Returns:
        None.
    """
    given = dict(input_shapes or {})
    shapes = _data_image_shapes(net, batch_size, size, channels)
    shapes.update(given)
    replace_data_layers(net, shapes)
    image = image_input(net)
    sized = {}
    for layer in net.layer:
        if layer.type != "Input":
            continue
        for i, top in enumerate(layer.top):
            shape = None if top in given else _run_shape(layer, i, top == image, batch_size, size)
            if shape is not None:
                sized[top] = shape
    replace_data_layers(net, sized)


def _data_image_shapes(net, batch_size, size, channels) -> dict:
    """``{image top: (N, C, H, W)}`` of the data layers of a filtered net (see ``decide_input_shapes``)."""
    shapes = {}
    for layer in net.layer:
        if not (layer_facts.is_data_layer(layer) and layer.top):
            continue
        own = own_image_shape(layer)
        if (own is None and size is None) or (own is not None and len(own) != 4):
            continue
        height_width = tuple(size) if size is not None else tuple(own[2:])
        count = batch_size if batch_size is not None else (own[0] if own is not None else _declared_batch(layer))
        shapes[layer.top[0]] = (count, data_image_channels(layer, channels)) + height_width
    return shapes


def own_image_shape(layer):
    """The image shape (N, C, H, W) data ``layer`` states itself (crop_size, new_height/new_width,
    ...), or None when only its data knows it."""
    try:
        return data_layer_shapes(layer, {})[0]
    except NetDefinitionError:
        return None


def data_image_channels(layer, channels=None) -> int:
    """The channel count of data ``layer``'s images.

    Args:
        layer: A data ``caffe_pb2.LayerParameter``.
        channels: ``layer -> channel count or None`` (what its data gives), or None (the default).

    Returns:
        What the layer fixes (``data_layer_channels``), else ``channels(layer)``, else 3.
    """
    declared = data_layer_channels(layer)
    if declared:
        return declared
    found = channels(layer) if channels is not None else None
    if found is None:
        log.debug("data layer '%s': no data to tell its channel count; assuming 3", layer.name)
        return 3
    return found


def _declared_batch(layer) -> int:
    """The ``batch_size`` a data layer's parameters give (1 when its type has none)."""
    name = _BATCH_PARAMS.get(layer.type)
    return int(getattr(layer, name).batch_size) if name else 1


def _run_shape(layer, index, is_image, batch_size, size):
    """Top ``index`` of Input ``layer`` with ``batch_size`` first and, for the image input, H x W = ``size``."""
    declared = layer.input_param.shape
    if declared:
        dims = list(declared[min(index, len(declared) - 1)].dim)
    elif batch_size is not None:
        dims = [batch_size]
    else:
        return None
    if dims and batch_size is not None:
        dims[0] = batch_size
    if is_image and size is not None:
        if len(dims) != 4:
            raise NetDefinitionError("--size needs a 4-D image input, '%s' is %s" % (layer.top[index], tuple(dims)))
        dims[2:] = size
    return tuple(dims)


def forced_color(layer):
    """How Caffe's DataTransformer decodes ``layer``'s encoded images: True (``force_color``: 3
    channels), False (``force_gray``: 1), None (each image's own channels).

    Args:
        layer: A data ``caffe_pb2.LayerParameter``; its ``transform_param`` decides.

    Returns:
        True, False or None; NetDefinitionError when both are set (Caffe refuses it too).
    """
    param = layer.transform_param
    if param.force_color and param.force_gray:
        raise NetDefinitionError("layer %r: force_color and force_gray cannot both be set" % layer.name)
    if param.force_color:
        return True
    return False if param.force_gray else None


def data_layer_channels(layer):
    """The channel count a data layer's parameters fix, or None when only its data knows it.

    MemoryData ``channels``, a 4-D DummyData shape, ImageData ``is_color`` (3 or 1), WindowData 3;
    any other data layer (Data, Python, HDF5Data, forks' layers) only through
    ``transform_param.force_gray`` (1) / ``force_color`` (3): a Data layer's Datums or a Python
    layer's arrays decide otherwise (``magic_init.load`` reads them)."""
    kind = layer.type
    if kind == "MemoryData":
        return layer.memory_data_param.channels
    if kind == "DummyData":
        try:
            shape = _dummy_data_shape(layer)
        except NetDefinitionError:
            return None
        return shape[1] if len(shape) == 4 else None
    if kind == "ImageData":
        return 3 if layer.image_data_param.is_color else 1
    if kind == "WindowData":
        return 3
    color = forced_color(layer)
    return None if color is None else (3 if color else 1)


def _own_data_shape(layer) -> tuple:
    """(N, C, H, W) a data layer produces, from its parameters; NetDefinitionError if unknown.

    Channels the layer does not fix (``data_layer_channels`` None) are taken as 3 here; callers
    that know the data pass the image top's shape in ``input_shapes`` instead."""
    kind = layer.type
    crop = layer.transform_param.crop_size
    channels = data_layer_channels(layer) or 3
    if kind == "MemoryData":
        p = layer.memory_data_param
        return (p.batch_size, p.channels, crop or p.height, crop or p.width)
    if kind == "DummyData":
        return _dummy_data_shape(layer)
    if kind == "ImageData":
        p = layer.image_data_param
        height, width = (crop, crop) if crop else (p.new_height, p.new_width)
        if height and width:
            return (p.batch_size, channels, height, width)
    elif kind == "Data" and crop:
        return (layer.data_param.batch_size, channels, crop, crop)
    elif kind == "WindowData" and layer.window_data_param.crop_size:
        size = layer.window_data_param.crop_size
        return (layer.window_data_param.batch_size, channels, size, size)
    raise NetDefinitionError(
        "%s layer %r: cannot tell the shape of top %r from the prototxt; pass it explicitly "
        "(input_shapes={%r: (N, C, H, W)}, or --size H,W on the command line)"
        % (kind, layer.name, layer.top[0], layer.top[0]))


def _dummy_data_shape(layer) -> tuple:
    p = layer.dummy_data_param
    if p.shape:
        return tuple(p.shape[0].dim)
    if p.num:
        return (p.num[0], p.channels[0], p.height[0], p.width[0])
    raise NetDefinitionError("DummyData layer %r has no shape" % layer.name)


# ----------------------------------------------------------------------------- splits

def split_layer_name(blob: str, layer: str, top_index: int) -> str:
    """Caffe's ``SplitLayerName``: ``<blob>_<layer>_<topidx>_split``."""
    return "%s_%s_%d_split" % (blob, layer, top_index)


def split_blob_name(blob: str, layer: str, top_index: int, split_index: int) -> str:
    """Caffe's ``SplitBlobName``: ``<blob>_<layer>_<topidx>_split_<j>``."""
    return "%s_%s_%d_split_%d" % (blob, layer, top_index, split_index)


def _count_consumers(net):
    """For each bottom, its source top (layer index, top index); for each top, its reader count."""
    last_top, source, readers, loss_weight = {}, {}, {}, {}
    for i, layer in enumerate(net.layer):
        for j, blob in enumerate(layer.bottom):
            if blob not in last_top:
                raise NetDefinitionError("layer %r: unknown bottom blob %r (bottom index %d)"
                                         % (layer.name, blob, j))
            source[i, j] = last_top[blob]
            readers[last_top[blob]] = readers.get(last_top[blob], 0) + 1
        for j, blob in enumerate(layer.top):
            last_top[blob] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            top = last_top[layer.top[j]]
            loss_weight[top] = layer.loss_weight[j]
            if layer.loss_weight[j]:
                readers[top] = readers.get(top, 0) + 1
    return source, readers, loss_weight


def insert_splits(net):
    """Caffe's ``InsertSplits``: a new NetParameter with Split layers for fanned-out tops."""
    source, readers, loss_weight = _count_consumers(net)
    next_split = {}
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    for i, original in enumerate(net.layer):
        layer = out.layer.add()
        layer.CopyFrom(original)
        for j, blob in enumerate(layer.bottom):
            top = source[i, j]
            if readers[top] > 1:
                k = next_split.get(top, 0)
                next_split[top] = k + 1
                layer.bottom[j] = split_blob_name(blob, net.layer[top[0]].name, top[1], k)
        for j, blob in enumerate(layer.top):
            count = readers.get((i, j), 0)
            if count > 1:
                weight = loss_weight.get((i, j), 0.0)
                _add_split_layer(out, layer.name, blob, j, count, weight, layer.phase)
                if weight:
                    del layer.loss_weight[:]
                    next_split[i, j] = next_split.get((i, j), 0) + 1
    return out


def _add_split_layer(net, layer_name, blob, top_index, count, loss_weight, phase) -> None:
    """Caffe's ``ConfigureSplitLayer`` (the first split top carries the loss weight)."""
    split = net.layer.add(name=split_layer_name(blob, layer_name, top_index), type="Split")
    split.bottom.append(blob)
    split.phase = phase
    for k in range(count):
        split.top.append(split_blob_name(blob, layer_name, top_index, k))
        if loss_weight:
            split.loss_weight.append(loss_weight if k == 0 else 0.0)

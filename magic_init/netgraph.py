"""Instantiate a net the way Caffe's ``Net::Init`` does before it creates any layer.

``instantiate`` returns a new NetParameter holding exactly the layers Caffe would run:

1. ``filter_net``: include/exclude NetStateRules (Caffe ``Net::FilterNet``/``StateMeetsRule``);
   every kept layer gets ``phase`` set to the net's phase unless it sets its own.
2. ``replace_data_layers``: data layers (Data, ImageData, ...) become ``Input`` layers with the
   same name and tops; their shapes come from ``input_shapes`` or the layer's own parameters.
3. ``insert_splits``: Caffe's ``InsertSplits`` (src/caffe/util/insert_splits.cpp): a top read by
   more than one bottom (or by a bottom and its own nonzero ``loss_weight``) gets a ``Split``
   layer ``<blob>_<layer>_<topidx>_split`` with tops ``<blob>_<layer>_<topidx>_split_<j>``.

Both backends build from the result, so layer and blob names agree between them.
"""
from __future__ import annotations

import logging

from magic_init import layer_facts
from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2

log = logging.getLogger(__name__)

#: The types with role ``data`` in ``magic_init.layer_facts`` (replaced by Input layers).
DATA_LAYER_TYPES = layer_facts.types(role=layer_facts.DATA)
_PHASES = {"train": caffe_pb2.TRAIN, "test": caffe_pb2.TEST}


def phase_value(phase) -> int:
    """Map "train"/"test" (any case) or a caffe_pb2 Phase value to the Phase enum value."""
    if isinstance(phase, str):
        try:
            return _PHASES[phase.lower()]
        except KeyError:
            raise NetDefinitionError("unknown phase %r: use 'train' or 'test'" % phase) from None
    return int(phase)


def net_state(phase="test", level=0, stages=(), net=None):
    """The NetState a net is instantiated in (``net``'s own state with these fields set)."""
    result = caffe_pb2.NetState()
    if net is not None:
        result.CopyFrom(net.state)
    result.phase = phase_value(phase)
    result.level = int(level)
    del result.stage[:]
    result.stage.extend(stages)
    return result


def instantiate(net, phase="test", level=0, stages=(), input_shapes=None):
    """Return the NetParameter Caffe's ``Net::Init`` would run (``net`` is not modified).

    ``input_shapes`` maps top blob names of data/Input layers to shapes; it overrides the shapes
    an Input layer declares and supplies those a data layer cannot infer.
    """
    filtered = filter_net(_with_input_layer(net), net_state(phase, level, stages, net))
    _check_unique_names(filtered)
    input_shapes = dict(input_shapes or {})
    _check_input_names(filtered, input_shapes)
    replace_data_layers(filtered, input_shapes)
    return insert_splits(filtered)


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


def _with_input_layer(net):
    """Turn the legacy net-level ``input``/``input_shape``/``input_dim`` fields into an Input layer."""
    if not net.input:
        return net
    upgraded = caffe_pb2.NetParameter()
    upgraded.CopyFrom(net)
    del upgraded.input[:], upgraded.input_shape[:], upgraded.input_dim[:]
    del upgraded.layer[:]
    layer = upgraded.layer.add(name="input", type="Input")
    for i, name in enumerate(net.input):
        layer.top.append(name)
        shape = layer.input_param.shape.add()
        if len(net.input_shape) > i:
            shape.CopyFrom(net.input_shape[i])
        elif len(net.input_dim) >= 4 * (i + 1):
            shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        else:
            raise NetDefinitionError("net input %r has no input_shape or input_dim" % name)
    upgraded.layer.extend(net.layer)
    return upgraded


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
    if layer.transform_param.force_gray:
        return 1
    return 3 if layer.transform_param.force_color else None


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

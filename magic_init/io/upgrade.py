"""Bring a NetParameter of any Caffe vintage to the current format (Caffe's UpgradeNetAsNeeded).

The steps, in Caffe's order:
1. V0 -> V1: nested ``layer`` entries become V1 layers (see ``upgrade_v0``).
2. Data transformation: V1 Data/ImageData/WindowData layers move ``scale``, ``mean_file``,
   ``crop_size`` and ``mirror`` from their own ``*_param`` into ``transform_param``.
3. V1 -> current: ``layers`` (field 2, enum types) become ``layer`` (field 100, type strings);
   ``param`` names, ``blob_share_mode``, ``blobs_lr`` and ``weight_decay`` become ParamSpec
   ``name``/``share_mode``/``lr_mult``/``decay_mult`` (index by index); blobs are kept as they
   are (legacy 4-D shapes included).
4. Net inputs: ``input`` with ``input_shape`` or ``input_dim`` (4 per input) becomes one Input
   layer named "input", placed first; ``input`` without shapes (old caffemodels) is dropped.
5. BatchNorm layers declaring three ParamSpecs (the old way of freezing their statistics) get
   ``lr_mult: 0`` and ``decay_mult: 0`` on each, other ParamSpec fields kept. This is what Caffe
   1.0 (Debian's build, checked by tests/io/test_io_against_caffe.py) does; later BVLC master
   clears the ParamSpecs instead. Either way the statistics are not learned.
A net with both ``layer`` and ``layers`` is refused: Caffe would silently drop ``layer``.
"""
from __future__ import annotations

from magic_init.errors import NetDefinitionError
from magic_init.io.upgrade_v0 import needs_v0_upgrade, upgrade_v0_net
from magic_init.proto import caffe_pb2

V1 = caffe_pb2.V1LayerParameter

V1_TYPE_NAMES = {
    V1.NONE: "", V1.ABSVAL: "AbsVal", V1.ACCURACY: "Accuracy", V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL", V1.CONCAT: "Concat", V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution", V1.DECONVOLUTION: "Deconvolution", V1.DATA: "Data",
    V1.DROPOUT: "Dropout", V1.DUMMY_DATA: "DummyData", V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise", V1.EXP: "Exp", V1.FLATTEN: "Flatten", V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output", V1.HINGE_LOSS: "HingeLoss", V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData", V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct", V1.LRN: "LRN", V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss", V1.MVN: "MVN",
    V1.POOLING: "Pooling", V1.POWER: "Power", V1.RELU: "ReLU", V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax", V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.SPLIT: "Split",
    V1.SLICE: "Slice", V1.TANH: "TanH", V1.WINDOW_DATA: "WindowData", V1.THRESHOLD: "Threshold",
}

_TRANSFORM_OWNERS = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param",
                     V1.WINDOW_DATA: "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")
_V1_PARAM_MESSAGES = tuple(f.name for f in V1.DESCRIPTOR.fields if f.name.endswith("_param"))


def upgrade_net(net) -> "caffe_pb2.NetParameter":
    """Return an upgraded copy of ``net`` (current format), as Caffe's UpgradeNetAsNeeded."""
    if len(net.layer) and len(net.layers):
        raise NetDefinitionError("net '%s' mixes 'layer' and legacy 'layers' entries; use one form"
                                 % net.name)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    if needs_v0_upgrade(out):
        upgrade_v0_net(out)
    upgrade_data_transformation(out)
    if len(out.layers):
        upgrade_v1_layers(out)
    if len(out.input):
        upgrade_net_input(out)
    upgrade_batch_norm(out)
    return out


def upgrade_data_transformation(net) -> None:
    """Move V1 data layers' scale/mean_file/crop_size/mirror into ``transform_param``."""
    for layer in net.layers:
        owner = _TRANSFORM_OWNERS.get(layer.type)
        if owner is None or not layer.HasField(owner):
            continue
        param = getattr(layer, owner)
        for field in _TRANSFORM_FIELDS:
            if param.HasField(field):
                setattr(layer.transform_param, field, getattr(param, field))
                param.ClearField(field)


def upgrade_v1_layers(net) -> None:
    """Replace the V1 ``layers`` of ``net`` by current ``layer`` entries."""
    v1_layers = list(net.layers)
    new_layers = [upgrade_v1_layer(v1) for v1 in v1_layers]
    net.ClearField("layers")
    net.layer.extend(new_layers)


def upgrade_v1_layer(v1) -> "caffe_pb2.LayerParameter":
    """One V1LayerParameter as a LayerParameter (Caffe's UpgradeV1LayerParameter)."""
    layer = caffe_pb2.LayerParameter()
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        if v1.type not in V1_TYPE_NAMES:
            raise NetDefinitionError("layer '%s': unknown V1 layer type %d" % (v1.name, v1.type))
        layer.type = V1_TYPE_NAMES[v1.type]
    layer.blobs.extend(v1.blobs)
    _fill_param_specs(v1, layer)
    layer.loss_weight.extend(v1.loss_weight)
    for name in _V1_PARAM_MESSAGES:
        if v1.HasField(name):
            getattr(layer, name).CopyFrom(getattr(v1, name))
    if v1.HasField("layer"):
        raise NetDefinitionError("layer '%s': a V0 'layer' is nested in a V1 net" % v1.name)
    return layer


def _fill_param_specs(v1, layer) -> None:
    """ParamSpec i gets name/share_mode/lr_mult/decay_mult from the V1 lists' entry i."""
    lists = (("name", v1.param), ("share_mode", v1.blob_share_mode),
             ("lr_mult", v1.blobs_lr), ("decay_mult", v1.weight_decay))
    for field, values in lists:
        for i, value in enumerate(values):
            while len(layer.param) <= i:
                layer.param.add()
            setattr(layer.param[i], field, value)


def upgrade_net_input(net) -> None:
    """Turn ``input`` + ``input_shape``/``input_dim`` into a leading Input layer named "input"."""
    names = list(net.input)
    shapes = _input_shapes(net, names)
    if shapes is not None:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        layer.top.extend(names)
        for shape in shapes:
            layer.input_param.shape.add().dim.extend(shape)
        old_layers = list(net.layer)
        net.ClearField("layer")
        net.layer.extend([layer] + old_layers)
    for field in ("input", "input_shape", "input_dim"):
        net.ClearField(field)


def _input_shapes(net, names):
    """The shape of each input, or None when the net gives none (a legacy caffemodel)."""
    if len(net.input_shape):
        if len(net.input_shape) < len(names):
            raise NetDefinitionError("net '%s': %d inputs but only %d input_shape entries"
                                     % (net.name, len(names), len(net.input_shape)))
        return [list(shape.dim) for shape in net.input_shape[:len(names)]]
    if len(net.input_dim):
        dims = list(net.input_dim)
        if len(dims) < 4 * len(names):
            raise NetDefinitionError("net '%s': %d inputs need %d input_dim values, got %d"
                                     % (net.name, len(names), 4 * len(names), len(dims)))
        return [dims[4 * i:4 * i + 4] for i in range(len(names))]
    return None


def upgrade_batch_norm(net) -> None:
    """Zero lr_mult/decay_mult of the three ParamSpecs old BatchNorm definitions carried."""
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0

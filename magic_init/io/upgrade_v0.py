"""V0 -> V1 net upgrade (Caffe's UpgradeV0Net, re-implemented).

A V0 net is a V1 ``layers`` list whose entries nest a ``layer`` (V0LayerParameter) holding
the name, a lowercase type string ("conv", "innerproduct", ...) and every parameter flat.
Upgrading (1) folds "padding" layers into the conv/pool layer that reads them (its ``pad``),
then (2) moves each flat field into the V1 ``*_param`` message its type reads. Fields that do
not belong to the layer's type are dropped with a warning, as Caffe does.
"""
from __future__ import annotations

import logging

from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2

log = logging.getLogger(__name__)

V1 = caffe_pb2.V1LayerParameter

V0_TYPES = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION,
    "data": V1.DATA, "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN, "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL, "images": V1.IMAGE_DATA, "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING,
    "relu": V1.RELU, "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS, "split": V1.SPLIT, "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

_CONV_IP = {"conv": "convolution_param", "innerproduct": "inner_product_param"}
_CONV_POOL = {"conv": "convolution_param", "pool": "pooling_param"}
_SOURCES = {"data": "data_param", "hdf5_data": "hdf5_data_param", "images": "image_data_param",
            "window_data": "window_data_param", "infogain_loss": "infogain_loss_param"}
_BATCHES = {"data": "data_param", "hdf5_data": "hdf5_data_param", "images": "image_data_param",
            "window_data": "window_data_param"}
_ANY_TYPE = None  # marks fields that go to transform_param whatever the layer type

# V0 field -> (target field in the *_param message, {v0 type: *_param field}).
# A target name ending in "[]" is appended to when the target field is repeated (convolution's
# pad/kernel_size/stride) and set when it is not (pooling's); "{}" is a message (copied).
_FIELD_MOVES = {
    "num_output": ("num_output", _CONV_IP),
    "biasterm": ("bias_term", _CONV_IP),
    "weight_filler": ("weight_filler{}", _CONV_IP),
    "bias_filler": ("bias_filler{}", _CONV_IP),
    "pad": ("pad[]", _CONV_POOL),
    "kernelsize": ("kernel_size[]", _CONV_POOL),
    "group": ("group", {"conv": "convolution_param"}),
    "stride": ("stride[]", _CONV_POOL),
    "pool": ("pool", {"pool": "pooling_param"}),
    "dropout_ratio": ("dropout_ratio", {"dropout": "dropout_param"}),
    "local_size": ("local_size", {"lrn": "lrn_param"}),
    "alpha": ("alpha", {"lrn": "lrn_param"}),
    "beta": ("beta", {"lrn": "lrn_param"}),
    "k": ("k", {"lrn": "lrn_param"}),
    "source": ("source", _SOURCES),
    "scale": ("scale", _ANY_TYPE),
    "meanfile": ("mean_file", _ANY_TYPE),
    "batchsize": ("batch_size", _BATCHES),
    "cropsize": ("crop_size", _ANY_TYPE),
    "mirror": ("mirror", _ANY_TYPE),
    "rand_skip": ("rand_skip", {"data": "data_param", "images": "image_data_param"}),
    "shuffle_images": ("shuffle", {"images": "image_data_param"}),
    "new_height": ("new_height", {"images": "image_data_param"}),
    "new_width": ("new_width", {"images": "image_data_param"}),
    "concat_dim": ("concat_dim", {"concat": "concat_param"}),
    "det_fg_threshold": ("fg_threshold", {"window_data": "window_data_param"}),
    "det_bg_threshold": ("bg_threshold", {"window_data": "window_data_param"}),
    "det_fg_fraction": ("fg_fraction", {"window_data": "window_data_param"}),
    "det_context_pad": ("context_pad", {"window_data": "window_data_param"}),
    "det_crop_mode": ("crop_mode", {"window_data": "window_data_param"}),
}


def needs_v0_upgrade(net) -> bool:
    """True when any V1 ``layers`` entry nests a V0 ``layer``."""
    return any(entry.HasField("layer") for entry in net.layers)


def upgrade_v0_net(net) -> None:
    """Rewrite a V0 net in place into a V1 net (``layers`` with enum types and *_param messages)."""
    entries = fold_padding_layers(net)
    del net.layers[:]
    for entry in entries:
        upgrade_v0_layer(entry, net.layers.add())


def fold_padding_layers(net) -> list:
    """Drop V0 "padding" layers, moving their ``pad`` into the conv/pool layer reading them."""
    last_writer = {name: None for name in net.input}
    kept = []
    for index, entry in enumerate(net.layers):
        layer_name = entry.layer.name or "#%d" % index
        if entry.layer.type != "padding":
            kept.append(_copy(entry))
        for j, bottom in enumerate(entry.bottom):
            if bottom not in last_writer:
                raise NetDefinitionError("layer '%s': unknown bottom blob '%s'" % (layer_name, bottom))
            source = last_writer[bottom]
            if source is not None and source.layer.type == "padding":
                _check_padding_reader(entry, source, layer_name)
                kept[-1].layer.pad = source.layer.pad
                kept[-1].bottom[j] = source.bottom[0]
        for top in entry.top:
            last_writer[top] = entry
    return kept


def _check_padding_reader(reader, padding, layer_name: str) -> None:
    if reader.layer.type not in ("conv", "pool"):
        raise NetDefinitionError("layer '%s': a padding layer feeds a '%s' layer (only conv/pool allowed)"
                                 % (layer_name, reader.layer.type))
    if len(reader.bottom) != 1 or len(padding.bottom) != 1 or len(padding.top) != 1:
        raise NetDefinitionError("layer '%s': padding layers need exactly one bottom and one top" % layer_name)


def upgrade_v0_layer(entry, out) -> None:
    """Fill V1 layer ``out`` from the V0 ``entry`` (bottoms/tops outside, flat ``layer`` inside)."""
    out.bottom.extend(entry.bottom)
    out.top.extend(entry.top)
    if not entry.HasField("layer"):
        return
    v0 = entry.layer
    if v0.HasField("name"):
        out.name = v0.name
    if v0.HasField("type"):
        if v0.type not in V0_TYPES:
            raise NetDefinitionError("layer '%s': unknown V0 layer type '%s'" % (v0.name, v0.type))
        out.type = V0_TYPES[v0.type]
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for v0_field, (target, by_type) in _FIELD_MOVES.items():
        if v0.HasField(v0_field):
            _move_field(v0, v0_field, out, target, by_type)
    if v0.HasField("hdf5_output_param"):
        if v0.type == "hdf5_output":
            out.hdf5_output_param.CopyFrom(v0.hdf5_output_param)
        else:
            log.warning("layer '%s': dropping hdf5_output_param of a '%s' layer", v0.name, v0.type)


def _move_field(v0, v0_field: str, out, target: str, by_type) -> None:
    if by_type is _ANY_TYPE:
        param = out.transform_param
    elif v0.type in by_type:
        param = getattr(out, by_type[v0.type])
    else:
        log.warning("layer '%s': dropping V0 field %s of a '%s' layer", v0.name, v0_field, v0.type)
        return
    value = getattr(v0, v0_field)
    if target.endswith("[]"):
        name = target[:-2]
        if hasattr(getattr(param, name), "append"):
            getattr(param, name).append(value)
        else:
            setattr(param, name, value)
    elif target.endswith("{}"):
        getattr(param, target[:-2]).CopyFrom(value)
    else:
        setattr(param, target, value)


def _copy(message):
    clone = type(message)()
    clone.CopyFrom(message)
    return clone

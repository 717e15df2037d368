"""Fold TEST-phase BatchNorm (and Scale) layers into the affine layer before them.

``fold_batchnorm`` rewrites a NetParameter and its weights so that the net computes the same
function in TEST phase without the BatchNorm layers it can fold; ``fold_bn_files`` is the
``magic_init fold-bn`` command (read, fold, write both outputs atomically). No PyTorch needed.

The math, per output channel c of a Convolution / InnerProduct / Deconvolution (W, b) followed by
BatchNorm (blobs m, v, f and ``batch_norm_param.eps`` ε) and optionally Scale (γ, β)::

    s   = 0 if f == 0 else 1 / f          (Caffe's batch_norm_layer.cpp, TEST phase)
    μ   = s·m,   σ² = s·v
    k   = γ / √(σ² + ε)
    W'  = k·W           (the filters of output channel c)
    b'  = k·(b − μ) + β

with b = 0 for an affine layer without bias (it gets ``bias_term: true`` and a bias blob),
γ = 1, β = 0 without a Scale layer and β = 0 for a Scale without ``bias_term``.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from magic_init import layer_facts
from magic_init.errors import ModelFileError, NetDefinitionError, ShapeMismatchError
from magic_init.proto import caffe_pb2
from magic_init.weight_guard import check_finite

log = logging.getLogger(__name__)

AFFINE_TYPES = layer_facts.types(role=layer_facts.AFFINE)


@dataclass
class Fold:
    """One folded group: the affine layer, the BatchNorm it absorbed and the Scale (or None)."""

    affine: str
    batchnorm: str
    scale: Optional[str] = None


@dataclass
class FoldResult:
    """The BatchNorm-free net and its weights, what was folded and what was kept (and why)."""

    net: "caffe_pb2.NetParameter"
    weights: "OrderedDict[str, List[np.ndarray]]"
    folded: List[Fold] = field(default_factory=list)
    kept: List[tuple] = field(default_factory=list)   # (BatchNorm layer name, reason)


class _Keep(Exception):
    """This BatchNorm cannot be folded; the message says why."""


def fold_batchnorm(net, weights: Dict[str, List[np.ndarray]]) -> FoldResult:
    """Fold every BatchNorm that directly follows an affine layer into it (TEST-phase function kept).

    A BatchNorm is folded when its single bottom is the single top of a Convolution, InnerProduct
    or Deconvolution layer that no other layer reads (the BatchNorm may work in place or write a new
    blob). A Scale layer that is the only reader of the BatchNorm's output (one bottom, per-channel
    γ on axis 1) is folded too. The affine layer then writes the blob name the last folded layer
    wrote, so every later layer reads the right blob. The formulas are in the module docstring.

    BatchNorm layers that cannot be folded (input not from an affine layer, the affine output read
    by other layers, ``use_global_stats: false``, shared affine weights, phase rules, ...) are kept
    with their Scale, and listed in ``FoldResult.kept`` with the reason.

    Args:
        net: the (upgraded) ``caffe_pb2.NetParameter``; not modified.
        weights: layer name -> list of arrays (``read_caffemodel(...).weights``); not modified.
            Weights of layers the net does not have are dropped.

    Returns:
        ``FoldResult`` with the new NetParameter, the new weights (float32, layer name -> arrays,
        net order), ``folded`` (list of ``Fold``) and ``kept`` (list of (BatchNorm name, reason)).

    Raises:
        ModelFileError: a layer to fold has no weights in ``weights``, or a folded value is not finite.
        ShapeMismatchError: a blob of a layer to fold does not have the channel count it should.
        NetDefinitionError: the net still has legacy V1 ``layers`` (upgrade it first).
    """
    if len(net.layers):
        raise NetDefinitionError("fold-bn needs an upgraded net (current 'layer' entries, not V1 'layers')")
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    names = {layer.name for layer in out.layer}
    new_weights = OrderedDict((name, [np.array(a, dtype=np.float32) for a in arrays])
                              for name, arrays in weights.items() if name in names)
    result = FoldResult(out, new_weights)
    layers = list(out.layer)
    index = 0
    while index < len(layers):
        layer = layers[index]
        if layer.type != "BatchNorm":
            index += 1
            continue
        try:
            plan = _plan(layers, index)
        except _Keep as reason:
            result.kept.append((layer.name, str(reason)))
            log.warning("BatchNorm '%s' kept: %s", layer.name, reason)
            index += 1
            continue
        affine_at, scale_at = plan
        fold = _apply(layers, affine_at, index, scale_at, new_weights)
        result.folded.append(fold)
        log.debug("folded %s into '%s'", ", ".join("'%s'" % n for n in (fold.batchnorm, fold.scale) if n),
                  fold.affine)
        removed = {index} | ({scale_at} if scale_at is not None else set())
        layers = [item for i, item in enumerate(layers) if i not in removed]
        # the next layer to look at is now at ``index`` (the BatchNorm's place)
    del out.layer[:]
    out.layer.extend(layers)
    result.weights = OrderedDict((layer.name, new_weights[layer.name]) for layer in layers
                                 if layer.name in new_weights)
    check_finite(result.weights, "refusing to write the folded model",
                 cause=" after folding (negative BatchNorm variance?)")
    return result


# ----------------------------------------------------------------------------- planning

def _producer(layers, before: int, blob: str) -> Optional[int]:
    """Index of the last layer before ``before`` that writes ``blob`` (None: a net input)."""
    for i in range(before - 1, -1, -1):
        if blob in layers[i].top:
            return i
    return None


def _readers(layers, producer: int, blob: str) -> List[int]:
    """Layers reading the version of ``blob`` that layer ``producer`` writes (until it is rewritten)."""
    readers = []
    for i in range(producer + 1, len(layers)):
        if blob in layers[i].bottom:
            readers.append(i)
        if blob in layers[i].top:
            break
    return readers


def _plan(layers, bn_at: int):
    """(affine index, Scale index or None) for the BatchNorm at ``bn_at``; raises _Keep."""
    bn = layers[bn_at]
    if len(bn.bottom) != 1 or len(bn.top) != 1:
        raise _Keep("it has %d bottoms and %d tops, not one each" % (len(bn.bottom), len(bn.top)))
    if bn.batch_norm_param.HasField("use_global_stats") and not bn.batch_norm_param.use_global_stats:
        raise _Keep("use_global_stats is false: it normalizes with batch statistics in TEST phase too")
    _check_plain(bn, "it")
    blob = bn.bottom[0]
    affine_at = _producer(layers, bn_at, blob)
    if affine_at is None:
        raise _Keep("its input '%s' is a net input, not the output of an affine layer" % blob)
    affine = layers[affine_at]
    if affine.type not in AFFINE_TYPES:
        raise _Keep("its input '%s' comes from layer '%s' (%s), not from a %s layer"
                    % (blob, affine.name, affine.type, "/".join(AFFINE_TYPES)))
    readers = _readers(layers, affine_at, blob)
    if readers != [bn_at]:
        others = [layers[i].name for i in readers if i != bn_at]
        raise _Keep("the output '%s' of '%s' is also read by %s" % (blob, affine.name,
                                                                   ", ".join("'%s'" % n for n in others)))
    if len(affine.top) != 1 or len(affine.bottom) != 1:
        raise _Keep("'%s' has %d bottoms and %d tops, not one each" % (affine.name, len(affine.bottom),
                                                                       len(affine.top)))
    _check_plain(affine, "'%s'" % affine.name)
    if any(spec.name for spec in affine.param):
        raise _Keep("'%s' shares its weights (param name), which folding would change elsewhere" % affine.name)
    _check_channel_axis(affine)
    if _name_count(layers, affine.name) != 1 or _name_count(layers, bn.name) != 1:
        raise _Keep("its layer name or '%s' is not unique in the net" % affine.name)
    scale_at = _scale_after(layers, bn_at)
    last = scale_at if scale_at is not None else bn_at
    final = layers[last].top[0]
    if final != blob:      # the affine layer will write ``final``: nothing in between may use that name
        for i in range(affine_at + 1, last):
            if i != bn_at and (final in layers[i].bottom or final in layers[i].top):
                raise _Keep("layer '%s' between '%s' and it uses the blob name '%s'"
                            % (layers[i].name, affine.name, final))
    return affine_at, scale_at


def _check_plain(layer, what: str) -> None:
    """Phase rules would make the folded net differ between phases: refuse them."""
    if len(layer.include) or len(layer.exclude):
        raise _Keep("%s has include/exclude rules" % what)


def _check_channel_axis(affine) -> None:
    """BatchNorm normalizes axis 1: the affine layer's output channels must be there."""
    if affine.type == "InnerProduct":
        axis = affine.inner_product_param.axis
        if axis != 1:
            raise _Keep("'%s' has inner_product_param.axis %d: its outputs are not on BatchNorm's axis 1"
                        % (affine.name, axis))
    else:
        axis = affine.convolution_param.axis
        if axis != 1:
            raise _Keep("'%s' has convolution_param.axis %d: its channels are not on BatchNorm's axis 1"
                        % (affine.name, axis))


def _name_count(layers, name: str) -> int:
    return sum(1 for layer in layers if layer.name == name)


def _scale_after(layers, bn_at: int) -> Optional[int]:
    """Index of a Scale layer that can be folded with the BatchNorm at ``bn_at``, or None."""
    blob = layers[bn_at].top[0]
    readers = _readers(layers, bn_at, blob)
    if len(readers) != 1:
        return None
    scale = layers[readers[0]]
    if scale.type != "Scale" or len(scale.bottom) != 1 or len(scale.top) != 1:
        return None
    if len(scale.include) or len(scale.exclude) or any(spec.name for spec in scale.param):
        return None
    if scale.scale_param.axis != 1 or scale.scale_param.num_axes not in (0, 1):
        return None
    if _name_count(layers, scale.name) != 1:
        return None
    return readers[0]


# ----------------------------------------------------------------------------- folding

def _apply(layers, affine_at: int, bn_at: int, scale_at: Optional[int], weights) -> Fold:
    """Fold the BatchNorm (and Scale) into the affine layer: new weights, rewired top."""
    affine, bn = layers[affine_at], layers[bn_at]
    scale = layers[scale_at] if scale_at is not None else None
    channels = _num_output(affine)
    mean, var, factor = _blobs(weights, bn, 3, "BatchNorm")
    _check_size(mean, channels, bn.name, 0)
    _check_size(var, channels, bn.name, 1)
    if factor.size != 1:
        raise ShapeMismatchError("layer '%s' blob 2 (moving-average factor) has %d values, not 1"
                                 % (bn.name, factor.size))
    f = float(factor.reshape(-1)[0])
    s = 0.0 if f == 0 else 1.0 / f
    mu = mean.reshape(-1).astype(np.float64) * s
    sigma2 = var.reshape(-1).astype(np.float64) * s
    eps = float(bn.batch_norm_param.eps)
    k = 1.0 / np.sqrt(sigma2 + eps)
    beta = np.zeros(channels)
    if scale is not None:
        count = 2 if scale.scale_param.bias_term else 1
        arrays = _blobs(weights, scale, count, "Scale")
        gamma = arrays[0].reshape(-1).astype(np.float64)
        if gamma.size == 1 and scale.scale_param.num_axes == 0:
            gamma = np.full(channels, gamma[0])
        _check_size(gamma, channels, scale.name, 0)
        k = k * gamma
        if count == 2:
            beta = arrays[1].reshape(-1).astype(np.float64)
            if beta.size == 1 and scale.scale_param.num_axes == 0:
                beta = np.full(channels, beta[0])
            _check_size(beta, channels, scale.name, 1)
    old = weights.get(affine.name) or []
    if not old:
        raise ModelFileError("MODEL has no weights for layer '%s' (%s): cannot fold '%s' into it"
                             % (affine.name, affine.type, bn.name))
    w = _scaled_filters(affine, old[0], k, channels)
    param = affine.inner_product_param if affine.type == "InnerProduct" else affine.convolution_param
    if param.bias_term and len(old) > 1:
        b = old[1].reshape(-1).astype(np.float64)
        _check_size(b, channels, affine.name, 1)
        bias_shape = old[1].shape
    else:
        b, bias_shape = np.zeros(channels), (channels,)
    bias = (k * (b - mu) + beta).astype(np.float32).reshape(bias_shape)
    param.bias_term = True
    weights[affine.name] = [w, bias]
    weights.pop(bn.name, None)
    if scale is not None:
        weights.pop(scale.name, None)
    del affine.top[:]
    affine.top.append((scale if scale is not None else bn).top[0])
    return Fold(affine.name, bn.name, scale.name if scale is not None else None)


def _num_output(affine) -> int:
    param = affine.inner_product_param if affine.type == "InnerProduct" else affine.convolution_param
    return int(param.num_output)


def _blobs(weights, layer, count: int, kind: str) -> List[np.ndarray]:
    arrays = weights.get(layer.name) or []
    if not arrays:
        raise ModelFileError("MODEL has no weights for layer '%s' (%s): cannot fold it" % (layer.name, kind))
    if len(arrays) < count:
        raise ShapeMismatchError("MODEL: layer '%s' (%s) has %d blobs, expected %d"
                                 % (layer.name, kind, len(arrays), count))
    return arrays[:count]


def _check_size(array, channels: int, layer: str, index: int) -> None:
    if np.size(array) != channels:
        raise ShapeMismatchError("MODEL: layer '%s' blob %d has %d values, but the affine layer before it "
                                 "has %d output channels" % (layer, index, np.size(array), channels))


def _scaled_filters(affine, w: np.ndarray, k: np.ndarray, channels: int) -> np.ndarray:
    """``w`` with the filters of output channel c multiplied by k[c] (float32, stored shape kept)."""
    shape = w.shape
    w64 = w.astype(np.float64)
    if w.size % channels:
        raise ShapeMismatchError("MODEL: layer '%s' weights of shape %s do not fit %d output channels"
                                 % (affine.name, shape, channels))
    if affine.type == "Convolution" or (affine.type == "InnerProduct" and not affine.inner_product_param.transpose):
        scaled = w64.reshape(channels, -1) * k[:, None]
    elif affine.type == "InnerProduct":                       # transpose: weights are (K, N)
        scaled = w64.reshape(-1, channels) * k[None, :]
    else:                                                     # Deconvolution: (C_in, C_out / g, kh, kw)
        group = int(affine.convolution_param.group) or 1
        per_group = channels // group
        if len(shape) < 2 or channels % group or shape[1] != per_group or shape[0] % group:
            raise ShapeMismatchError("MODEL: layer '%s' weights of shape %s do not fit %d output channels in "
                                     "%d groups" % (affine.name, shape, channels, group))
        scaled = w64.reshape(group, shape[0] // group, per_group, -1) * k.reshape(group, 1, per_group, 1)
    return scaled.astype(np.float32).reshape(shape)


# ----------------------------------------------------------------------------- files

def fold_bn_files(net_path, model_path, out_net, out_model) -> FoldResult:
    """``magic_init fold-bn``: read NET and MODEL, fold, write OUT_NET (prototxt) and OUT_MODEL.

    Args:
        net_path: the prototxt (any Caffe format; written back upgraded).
        model_path: the caffemodel (binary, text or HDF5).
        out_net: where the BatchNorm-free prototxt goes (text format).
        out_model: where its weights go (binary caffemodel).

    Returns:
        The ``FoldResult`` (what was folded, what was kept and why).

    Raises:
        ModelFileError: an output is an input or not writable, or the inputs are unreadable;
        the errors of ``fold_batchnorm`` and of reading the files. Both outputs are written
        atomically, only after everything was read and folded.
    """
    from google.protobuf import text_format

    from magic_init.io import atomic_write, check_output, read_caffemodel, read_prototxt, same_file, write_caffemodel

    inputs = {"NET": net_path, "MODEL": model_path}
    check_output(out_net, inputs, what="OUT_NET")
    check_output(out_model, inputs, what="OUT_MODEL")
    if same_file(out_net, out_model):
        raise ModelFileError("OUT_NET and OUT_MODEL are the same file %s" % out_net)
    net = read_prototxt(net_path)
    weights = read_caffemodel(model_path).weights
    result = fold_batchnorm(net, weights)
    log.info("folded %d BatchNorm layer(s) (%d Scale), kept %d", len(result.folded),
             sum(1 for f in result.folded if f.scale), len(result.kept))
    text = text_format.MessageToString(result.net)
    model_existed = os.path.lexists(out_model)
    write_caffemodel(out_model, result.net, result.weights)
    try:
        with atomic_write(out_net) as f:
            f.write(text.encode())
    except OSError as error:
        if not model_existed:       # not half a result: the model without its prototxt
            os.unlink(out_model)
        raise ModelFileError("%s: cannot write (%s)" % (out_net, error.strerror or error)) from None
    log.info("wrote %s and %s", out_net, out_model)
    return result

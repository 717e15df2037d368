"""The Caffe adapter: a Caffe net (built-in engine or pycaffe) described for the algorithm.

``describe(net)`` reads the net's layer types (``net.layer_types``, through the one table of Caffe
layer facts, ``magic_init.layer_facts``) and its instantiated NetParameter (``net.net_param``:
pycaffe's ``caffe.Net`` has no other way to report pad/stride/dilation, axes, Eltwise operations or
shared parameters) and returns the neutral ``algorithm.description.NetDescription``. It is the only
place where the algorithm's inputs come from Caffe type strings or layer parameters. Convolution
geometry is resolved by ``magic_init.conv_geometry`` exactly as Caffe does.
"""
from __future__ import annotations

from magic_init import conv_geometry, layer_facts as facts
from magic_init.algorithm import description as d
from magic_init.errors import NetDefinitionError

#: Caffe affine layer types and the neutral kind of each.
AFFINE_KINDS = {"Convolution": d.CONV, "Deconvolution": d.DECONV, "InnerProduct": d.LINEAR}
#: Types that add training-time noise (the identity in TEST phase).
NOISE_TYPES = ("Dropout",)
#: Caffe's EltwiseParameter.operation values.
ELTWISE_PROD, ELTWISE_SUM = 0, 1

_RULES = {facts.PASSES: d.PASSES, facts.APPROX: d.APPROX, facts.RESHAPES: d.RESHAPES, facts.STRIPS: d.STRIPS}


def describe(net):
    """The ``NetDescription`` of a Caffe net with the Net interface (``layer_names``, ``layer_types``,
    ``bottom_names``, ``top_names``, ``inputs``, ``blobs``, ``params`` and, where the backend has
    it, ``net_param``).

    Raises NetDefinitionError for parameter sharing between affine layers of different types, blob
    positions or shapes."""
    params = _layer_params(net)
    shared = shared_params(net, params)
    ops = [_op(net, i, name, kind, params.get(name), shared)
           for i, (name, kind) in enumerate(zip(net.layer_names, net.layer_types))]
    return d.NetDescription(ops, net.inputs, net.bottom_names, net.top_names, shared)


def _layer_params(net):
    """``{layer name: LayerParameter}`` from ``net.net_param`` (empty when the backend has none)."""
    net_param = getattr(net, "net_param", None)
    return {} if net_param is None else {layer.name: layer for layer in net_param.layer}


def _op(net, index, name, kind, param, shared):
    row = facts.facts(kind)
    why = d.NOT_HOMOGENEOUS if row.nonhomogeneous else d.NOT_KNOWN_HOMOGENEOUS
    label, noise = kind, kind in NOISE_TYPES
    if kind in AFFINE_KINDS and name in net.params:
        return d.Op(index, name, label, d.AFFINE, _affine(net, name, kind, param), why, noise)
    if kind == "Scale":
        problem = scale_layer_problem(net, name, param, shared)
        if problem is None:
            diagonal = d.AffineLayer(d.DIAGONAL, groups=int(net.params[name][0].data.size))
            return d.Op(index, name, label, d.AFFINE, diagonal, why, noise)
        return d.Op(index, name, label, d.BLOCKS, None, problem, noise)
    if facts.is_input(kind):
        rule = d.INPUT
    elif row.scale == facts.CONCATENATES:
        rule = d.CONCATENATES if (int(param.concat_param.axis) if param is not None else 1) == 1 else d.BLOCKS
    elif row.scale == facts.TIES:
        operation = int(param.eltwise_param.operation) if param is not None else ELTWISE_SUM
        rule = d.TIES if operation != ELTWISE_PROD else d.BLOCKS
        label = kind if rule == d.TIES else "%s PROD" % kind
    else:
        rule = _RULES.get(row.scale, d.BLOCKS)
    return d.Op(index, name, label, rule, None, why, noise)


def _affine(net, name, kind, param):
    """The ``AffineLayer`` of Convolution, Deconvolution or InnerProduct layer ``name``."""
    weight = net.params[name][0].data
    if kind == "InnerProduct":
        axis = int(param.inner_product_param.axis) if param is not None else 1
        transposed = bool(param.inner_product_param.transpose) if param is not None else False
        return d.AffineLayer(d.LINEAR, groups=1, axis=axis, transposed=transposed)
    if param is not None:
        groups = int(param.convolution_param.group)
    elif kind == "Convolution":
        groups = max(1, tuple(net.blobs[net.bottom_names[name][0]].shape)[1] // weight.shape[1])
    else:
        groups = max(1, tuple(net.blobs[net.top_names[name][0]].shape)[1] // weight.shape[1])
    geometry, error = None, None
    if param is None:
        error = "layer '%s': convolution geometry unknown (the net exposes no net_param)" % name
    else:
        geometry = convolution_geometry(name, param, tuple(weight.shape))
    return d.AffineLayer(AFFINE_KINDS[kind], groups=groups, geometry=geometry, geometry_error=error)


def convolution_geometry(name, param, weight_shape):
    """Kernel, pad, stride, dilation and group of a (de)convolution from ``convolution_param``, over the
    weight blob's spatial axes; the kernel must match the weight blob (out, in/group, *kernel)."""
    where = "layer '%s' (%s)" % (name, param.type)
    result = conv_geometry.convolution(param.convolution_param, len(weight_shape) - 2, where)
    if result.kernel != weight_shape[2:]:
        raise NetDefinitionError("%s: kernel %s does not match the weight blob %s"
                                 % (where, result.kernel, weight_shape))
    return result


def scale_layer_problem(net, name, param, shared):
    """Why Scale layer ``name`` cannot be rescaled by Algorithm 2 (a phrase), or None when it can.

    A Scale y_c = γ_c·x_c (+ β_c) with one bottom and a learned per-channel γ over axis 1 is affine
    per channel with a diagonal weight: multiplying γ and β by Δ multiplies its output by Δ, like an
    affine layer's. It cannot when γ comes from a second bottom (y = x·s is of degree 2), covers
    other axes than the channels, is not learned (``lr_mult: 0``), or a blob of it is shared with
    another layer (scaling it would change that layer too)."""
    bottoms = net.bottom_names[name]
    if len(bottoms) != 1 or name not in net.params or not len(net.params[name]):
        return "not homogeneous: its scale is a second bottom, y = x·s"
    shape = tuple(net.blobs[bottoms[0]].shape)   # the shape only: reading .data would allocate the blob
    gamma = net.params[name][0].data
    axis = int(param.scale_param.axis) if param is not None else 1
    if len(shape) < 2 or (axis if axis >= 0 else axis + len(shape)) != 1 or gamma.shape != (shape[1],):
        return "not rescalable: its γ is not one value per channel (axis 1)"
    if param is not None and len(param.param) and param.param[0].lr_mult == 0:
        return "not rescalable: its γ is not learned (lr_mult: 0)"
    if any(name in (layer, owner) for (layer, j), (owner, _) in shared.items()):
        return "not rescalable: it shares a parameter blob with another layer"
    return None


def shared_params(net, params=None):
    """``{(layer, j): (owner, j)}`` for every parameter blob j that ``layer`` shares with an earlier layer.

    Caffe's rule (Net::AppendParam): a blob whose ``param { name: ... }`` is set is owned by the first
    layer naming it; later layers with that name share its data (and diff). Sharing between affine
    layers of different types, blob positions or shapes (PERMISSIVE mode) is refused with
    NetDefinitionError: their weight columns would not mean the same thing."""
    params = _layer_params(net) if params is None else params
    types = dict(zip(net.layer_names, net.layer_types))
    owners, shared = {}, {}
    for layer in params.values():
        for j, spec in enumerate(layer.param[:len(net.params.get(layer.name, ()))]):
            if not spec.name:
                continue
            owner = owners.setdefault(spec.name, (layer.name, j))
            if owner != (layer.name, j):
                _check_sharing(net, types, owner, (layer.name, j), spec.name)
                shared[(layer.name, j)] = owner
    return shared


def _check_sharing(net, types, owner, user, param_name):
    if types[owner[0]] not in AFFINE_KINDS and types[user[0]] not in AFFINE_KINDS:
        return
    owner_shape = net.params[owner[0]][owner[1]].data.shape
    user_shape = net.params[user[0]][user[1]].data.shape
    if types[owner[0]] != types[user[0]] or owner[1] != user[1] or owner_shape != user_shape:
        raise NetDefinitionError(
            "layers '%s' (%s, blob %d, shape %s) and '%s' (%s, blob %d, shape %s) share parameter '%s': "
            "weights can only be initialized when shared between layers of one type, blob and shape"
            % (owner[0], types[owner[0]], owner[1], owner_shape, user[0], types[user[0]], user[1], user_shape,
               param_name))

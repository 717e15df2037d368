"""What the algorithm needs to know about a net, read through the Net interface only.

Layer kinds (affine, loss to strip), blob liveness, the layer range that carries the sample
forward, and convolution geometry (from the instantiated NetParameter the backends expose as
``net.net_param``; pycaffe's ``caffe.Net`` has no other way to report pad/stride/dilation). Layer
types are read from ``magic_init.layer_facts``, geometry from ``magic_init.conv_geometry``.
"""
from __future__ import annotations

from magic_init import conv_geometry as geometry, layer_facts
from magic_init.errors import NetDefinitionError

#: Read from ``magic_init.layer_facts`` (the one table of layer types).
AFFINE_TYPES = layer_facts.types(role=layer_facts.AFFINE)
#: Layers after the last of which the random linear loss is applied (paper §3, eq. 1).
STRIP_TYPES = layer_facts.types(scale=layer_facts.STRIPS)
INPUT_TYPES = layer_facts.types(role=layer_facts.INPUT) + layer_facts.types(role=layer_facts.DATA)


def affine_layers(net):
    """Indices of the Convolution/InnerProduct/Deconvolution layers that own weights, in execution order."""
    return [i for i, (name, kind) in enumerate(zip(net.layer_names, net.layer_types))
            if kind in AFFINE_TYPES and name in net.params]


def scale_layer_problem(net, name, shared=None):
    """Why Scale layer ``name`` cannot be rescaled by Algorithm 2 (a phrase), or None when it can.

    A Scale y_c = γ_c·x_c (+ β_c) with one bottom and a learned per-channel γ over axis 1 is affine
    per channel with a diagonal weight: multiplying γ and β by Δ multiplies its output by Δ, like an
    affine layer's. It cannot when γ comes from a second bottom (y = x·s is of degree 2), covers
    other axes than the channels, is not learned (``lr_mult: 0``), or a blob of it is shared with
    another layer (scaling it would change that layer too)."""
    bottoms = net.bottom_names[name]
    if len(bottoms) != 1 or name not in net.params or not len(net.params[name]):
        return "not homogeneous: its scale is a second bottom, y = x·s"
    shape = net.blobs[bottoms[0]].data.shape
    gamma = net.params[name][0].data
    param = layer_param(net, name)
    axis = int(param.scale_param.axis) if param is not None else 1
    if len(shape) < 2 or (axis if axis >= 0 else axis + len(shape)) != 1 or gamma.shape != (shape[1],):
        return "not rescalable: its γ is not one value per channel (axis 1)"
    if param is not None and len(param.param) and param.param[0].lr_mult == 0:
        return "not rescalable: its γ is not learned (lr_mult: 0)"
    shared = shared_params(net) if shared is None else shared
    users = [(layer, j) for (layer, j), (owner, _) in shared.items() if name in (layer, owner)]
    if users:
        return "not rescalable: it shares a parameter blob with another layer"
    return None


def rescalable_layers(net):
    """Indices of the layers Algorithm 2 rescales, in execution order: the affine layers and the
    Scale layers with one bottom and a learned, unshared per-channel γ (``scale_layer_problem``).
    Algorithm 1 initializes only the affine layers (``affine_layers``)."""
    shared = None
    result = []
    for i, (name, kind) in enumerate(zip(net.layer_names, net.layer_types)):
        if kind in AFFINE_TYPES and name in net.params:
            result.append(i)
        elif kind == "Scale":
            shared = shared_params(net) if shared is None else shared
            if scale_layer_problem(net, name, shared) is None:
                result.append(i)
    return result


def last_compute_layer(net):
    """Index of the last layer that is neither a loss/accuracy layer nor an input layer."""
    for i in range(len(net.layer_names) - 1, -1, -1):
        if net.layer_types[i] not in STRIP_TYPES + INPUT_TYPES:
            return i
    raise NetDefinitionError("the net has no layer to compute (only input and loss layers)")


def output_blobs(net, last):
    """Blobs produced by layers ``<= last`` and read by no layer ``<= last``: where η is injected."""
    produced, consumed = [], set()
    for name in net.layer_names[:last + 1]:
        consumed.update(net.bottom_names[name])
        produced.extend(t for t in net.top_names[name] if t not in produced)
    outputs = [b for b in produced if b not in consumed and b not in net.inputs]
    if not outputs:
        raise NetDefinitionError("layer '%s': no output blob to backpropagate from" % net.layer_names[last])
    return outputs


def last_use(net):
    """``{blob: index of the last layer reading it}`` — computed once, drives which blobs stay live."""
    used = {}
    for i, name in enumerate(net.layer_names):
        for blob in net.bottom_names[name]:
            used[blob] = i
    return used


def live_after(net, index, used):
    """Blobs existing after layer ``index`` that a later layer still reads (net inputs included)."""
    existing = list(net.inputs)
    for name in net.layer_names[:index + 1]:
        existing.extend(net.top_names[name])
    return [b for b in dict.fromkeys(existing) if used.get(b, -1) > index]


def layer_param(net, name):
    """The LayerParameter of layer ``name`` from ``net.net_param``, or None when the backend has none."""
    net_param = getattr(net, "net_param", None)
    if net_param is None:
        return None
    for layer in net_param.layer:
        if layer.name == name:
            return layer
    return None


def shared_params(net):
    """``{(layer, j): (owner, j)}`` for every parameter blob j that ``layer`` shares with an earlier layer.

    Caffe's rule (Net::AppendParam): a blob whose ``param { name: ... }`` is set is owned by the first
    layer naming it; later layers with that name share its data (and diff). Sharing between affine
    layers of different types, blob positions or shapes (PERMISSIVE mode) is refused with
    NetDefinitionError: their weight columns would not mean the same thing."""
    net_param = getattr(net, "net_param", None)
    if net_param is None:
        return {}
    types = dict(zip(net.layer_names, net.layer_types))
    owners, shared = {}, {}
    for layer in net_param.layer:
        for j, spec in enumerate(layer.param[:len(net.params.get(layer.name, ()))]):
            if not spec.name:
                continue
            owner = owners.setdefault(spec.name, (layer.name, j))
            if owner != (layer.name, j):
                _check_sharing(net, types, owner, (layer.name, j), spec.name)
                shared[(layer.name, j)] = owner
    return shared


def _check_sharing(net, types, owner, user, param_name):
    if types[owner[0]] not in AFFINE_TYPES and types[user[0]] not in AFFINE_TYPES:
        return
    owner_shape = net.params[owner[0]][owner[1]].data.shape
    user_shape = net.params[user[0]][user[1]].data.shape
    if types[owner[0]] != types[user[0]] or owner[1] != user[1] or owner_shape != user_shape:
        raise NetDefinitionError(
            "layers '%s' (%s, blob %d, shape %s) and '%s' (%s, blob %d, shape %s) share parameter '%s': "
            "weights can only be initialized when shared between layers of one type, blob and shape"
            % (owner[0], types[owner[0]], owner[1], owner_shape, user[0], types[user[0]], user[1], user_shape,
               param_name))


def sharing_layers(net, shared=None):
    """Affine layers grouped by the weight blob they share: ``{owner: [owner, user, ...]}`` (execution order)."""
    shared = shared_params(net) if shared is None else shared
    groups = {}
    for (layer, j), (owner, _) in shared.items():
        if j == 0 and layer in net.params and net.layer_types[list(net.layer_names).index(layer)] in AFFINE_TYPES:
            groups.setdefault(owner, [owner]).append(layer)
    return groups


def conv_geometry(net, name):
    """Kernel, pad, stride, dilation (each one value per spatial axis) and group of Convolution ``name``.

    Resolved by ``magic_init.conv_geometry`` from ``convolution_param`` exactly as Caffe (and the
    engine) does, over the weight blob's spatial axes; the kernel must match the weight blob
    (out, in/group, *kernel). Raises NetDefinitionError when the backend exposes no ``net_param``.
    """
    param = layer_param(net, name)
    if param is None:
        raise NetDefinitionError("layer '%s': convolution geometry unknown (the net exposes no net_param)" % name)
    weight_shape = tuple(net.params[name][0].data.shape)
    where = "layer '%s' (%s)" % (name, param.type)
    result = geometry.convolution(param.convolution_param, len(weight_shape) - 2, where)
    if result.kernel != weight_shape[2:]:
        raise NetDefinitionError("%s: kernel %s does not match the weight blob %s"
                                 % (where, result.kernel, weight_shape))
    return result


def inner_product_axis(net, name):
    """``inner_product_param.axis`` (default 1): the first axis that InnerProduct flattens."""
    param = layer_param(net, name)
    return int(param.inner_product_param.axis) if param is not None else 1


def inner_product_transposed(net, name):
    """``inner_product_param.transpose``: the weight blob is (inputs, outputs) instead of (outputs, inputs)."""
    param = layer_param(net, name)
    return bool(param.inner_product_param.transpose) if param is not None else False


def group_count(net, name):
    """Groups of an affine layer: from ``convolution_param.group``, else bottom channels / weight
    columns; a rescalable Scale (a diagonal weight) has one group per channel."""
    kind = net.layer_types[list(net.layer_names).index(name)]
    if kind == "InnerProduct":
        return 1
    if kind == "Scale":                  # a diagonal weight: every channel is its own group
        return int(net.params[name][0].data.size)
    param = layer_param(net, name)
    if param is not None:
        return int(param.convolution_param.group)
    weight = net.params[name][0].data
    if kind == "Convolution":
        return max(1, net.blobs[net.bottom_names[name][0]].data.shape[1] // weight.shape[1])
    return max(1, net.blobs[net.top_names[name][0]].data.shape[1] // weight.shape[1])

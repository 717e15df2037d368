"""The PyTorch adapter: a ``torch.nn.Module`` traced with ``torch.fx``, run by the engine's core and
described for the algorithm.

``TorchNet(model, example)`` traces ``model`` (``torch.fx.symbolic_trace``: torch.nn's own modules
are leaves) and turns each node that computes a tensor into one layer of an
``engine.graph.LayerGraph``, so the algorithm runs it through the same Net interface as a Caffe net
(forward/backward by layer ranges, blobs, parameters, seeded Dropout masks, releasing). Values that
are not tensors (``x.size(0)``, a tuple from ``chunk``) are not blobs: the layers that read them
recompute them from their tensor inputs. The parameter blobs of the affine layers are the module's
own parameters (the same memory on the CPU; on CUDA ``write_back`` copies the host mirrors back), so
the algorithm's in-place writes change the model.

Layers and how a positive scale factor passes them (``algorithm.description``):

* ``Conv1d/2d/3d`` (``CONV``), ``ConvTranspose1d/2d/3d`` (``DECONV``, weight (in, out/G, k...) as
  Caffe's Deconvolution), ``Linear`` (``LINEAR`` over the last axis, weight (out, in)): ``AFFINE``.
* ``BatchNorm1d/2d/3d`` with running statistics becomes two layers, as Caffe's BatchNorm + Scale:
  ``<name>/normalize`` (x - μ)/sqrt(σ² + ε) with the stored statistics (a barrier: a factor in front
  of it would change the function) and ``<name>`` y = γ·x + β (``DIAGONAL``, rescaled by Algorithm 2).
* ReLU, LeakyReLU, max/average pooling (global average pooling as ``x.mean((2, 3))`` too), Dropout
  (``nn.Dropout`` runs with seeded masks when the rates are measured; Dropout1d/2d/3d stay the
  identity), Identity, zero padding, a positive constant factor: ``PASSES``; Flatten/view/reshape
  keeping the batch axis: ``RESHAPES``; ``+`` of two tensors of one shape: ``TIES``; ``cat`` on the
  channel axis: ``CONCATENATES``; LocalResponseNorm: ``APPROX``; a softmax: ``STRIPS``.
* A tensor read by several layers gets a Split layer (one top per reader), as Caffe inserts them.
* Everything else (GELU, LayerNorm, attention, unknown functions) ``BLOCKS`` and is reported by name.

The model runs in eval mode with its parameters' ``requires_grad`` off while the net exists
(``TorchNet.close`` restores both).
"""
from __future__ import annotations

import functools
import operator
from collections import OrderedDict

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from magic_init.algorithm import description as d
from magic_init.conv_geometry import ConvGeometry
from magic_init.engine import building, runtime
from magic_init.engine.blob import Blob
from magic_init.engine.graph import LayerGraph
from magic_init.engine.layers import create_layer
from magic_init.engine.layers.base import Layer
from magic_init.errors import NetDefinitionError, first_line
from magic_init.proto import caffe_pb2

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DECONV = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

#: Module classes by how a scale passes them (affine and BatchNorm modules are handled apart).
MODULE_RULES = {
    d.PASSES: (nn.ReLU, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
               nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
               nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout, nn.Dropout1d,
               nn.Dropout2d, nn.Dropout3d, nn.Identity, nn.ZeroPad2d),
    d.RESHAPES: (nn.Flatten,),
    d.APPROX: (nn.LocalResponseNorm,),
    d.STRIPS: (nn.Softmax, nn.LogSoftmax),
}
#: Functions and tensor methods (by name) by how a scale passes them.
FUNCTION_RULES = {
    d.PASSES: (F.relu, torch.relu, F.leaky_relu, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d,
               F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
               F.adaptive_max_pool2d, F.dropout),
    d.RESHAPES: (torch.flatten,),
    d.MOVES: (torch.transpose, torch.permute, torch.movedim, torch.swapaxes, torch.swapdims),
    d.STRIPS: (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax),
}
METHOD_RULES = {
    d.PASSES: ("relu", "contiguous", "clone"),
    d.RESHAPES: ("view", "reshape", "flatten"),
    d.MOVES: ("transpose", "permute", "movedim", "swapaxes", "swapdims"),
    d.STRIPS: ("softmax", "log_softmax"),
}
#: Modules and functions known not to be positively homogeneous of degree 1.
NONHOMOGENEOUS = (nn.LocalResponseNorm, nn.GELU, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.ELU, nn.LayerNorm, nn.GroupNorm, nn.Softmax,
                  nn.MultiheadAttention, F.gelu, torch.sigmoid, torch.tanh, F.silu, F.layer_norm, F.softmax)
_ADD = (operator.add, operator.iadd, torch.add)
_MUL = (operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv)


class FxLayer(Layer):
    """One fx node that computes a tensor, as an engine layer: ``forward(bottoms, params)`` evaluates
    the node with its tensor inputs taken from ``bottoms`` (values that are not tensors are
    recomputed from them) and, for an affine or diagonal layer, its parameters from ``params``.

    Args:
        name: the layer name; label: its type in messages (the module class or function name).
        compute: ``compute(env, params) -> tensor``, ``env`` ``{fx node: tensor}`` of the bottoms.
        sources: the fx nodes whose tensors are the bottoms, in order.
    """

    def __init__(self, name, label, compute, sources):
        # Layer.__init__ reads a Caffe LayerParameter; an fx node has none, so set what the core reads.
        self.name, self.type, self.phase = name, label, "test"
        self.blobs, self.compute, self.sources = [], compute, list(sources)

    def forward(self, bottoms, params):
        return [self.compute(dict(zip(self.sources, bottoms)), params)]


class TorchNet(LayerGraph):
    """A traced ``torch.nn.Module`` with the Net interface (``magic_init.engine.graph.LayerGraph``).

    Args:
        model: the module; its parameters are the affine layers' parameter blobs.
        example: one batch of the model's input: a tensor (one input) or ``{input name: tensor}``,
            on any device (it is moved to the model's).

    Attributes:
        description: the algorithm's ``NetDescription`` (built with the layers).
        parameter_names: ``{layer name: [qualified parameter names]}`` (``model.state_dict()`` keys).

    Raises:
        NetDefinitionError: the model cannot be traced or run on ``example`` (one line, naming the node).
    """

    def __init__(self, model, example):
        self.model = model
        self.torch_device = _model_device(model)
        if self.torch_device.type == "cuda":
            runtime.exact_float32_on_cuda()
        self.device = str(self.torch_device)
        self.phase = "test"
        self._training = model.training
        self._requires_grad = [(p, p.requires_grad) for p in model.parameters()]
        model.eval()
        for p, _ in self._requires_grad:
            p.requires_grad_(False)
        try:
            self._build(example)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ construction
    def _build(self, example):
        graph_module = _trace(self.model)
        placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
        example = _example_inputs(example, placeholders, self.torch_device)
        propagation = _ShapeRecorder(graph_module)
        try:
            propagation.propagate(*[example[n.name] for n in placeholders])
        except Exception as error:                         # the model's own exception, whatever it is
            node = propagation.current
            raise NetDefinitionError("the model does not run on the example batch of shape %s: node %r (%s): %s"
                                     % (_shapes(example), node.name, node.target,
                                        first_line(error.__cause__ or error))) from None
        self.modules = dict(graph_module.named_modules())
        self.inputs = [n.name for n in placeholders]
        self.layers, self.layer_names, self.layer_types = [], [], []
        self.bottom_names, self.top_names = OrderedDict(), OrderedDict()
        self.blobs = OrderedDict((n.name, Blob(example[n.name].shape, self.torch_device, n.name))
                                 for n in placeholders)
        self.params, self.parameter_names = OrderedDict(), OrderedDict()
        self._param_blobs, self._owners, self._shared, self._ops = {}, {}, {}, []
        for node in graph_module.graph.nodes:
            if node.op in ("call_module", "call_function", "call_method") and _is_tensor(node):
                self._add_node(node)
        if not self.layers:
            raise NetDefinitionError("the model computes nothing the algorithm can see (no layer computes a tensor)")
        self._insert_splits()
        lr_mults = [[1.0] * len(layer.blobs) for layer in self.layers]
        self._init_graph(building.backward_needs(self.layers, list(self.bottom_names.values()),
                                                 list(self.top_names.values()), lr_mults, False))
        ops = [d.Op(i, name, label, rule, affine, why, noise)
               for i, (name, (label, rule, affine, why, noise)) in enumerate(zip(self.layer_names, self._ops))]
        self.description = d.NetDescription(ops, self.inputs, self.bottom_names, self.top_names, self._shared)

    def _add_node(self, node):
        sources = _tensor_sources(node)
        module = self.modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, _BATCHNORM) and module.track_running_stats and module.running_mean is not None:
            self._add_batchnorm(node, module, sources)
            return
        if isinstance(module, nn.Linear) and len(self._meta(node).shape) > 2:
            self._add_linear_over_last_axis(node, module, sources)
            return
        origin = _tuple_origin(node, self.modules)
        if origin is not None:                      # one output of a module that returns a tuple (attention)
            self._add_blocking(node, sources, self._layer_name(origin[0]),
                               "%s[%d]" % (type(origin[1]).__name__, node.args[1]),
                               d.NOT_HOMOGENEOUS if _member(type(origin[1]), NONHOMOGENEOUS) else d.NOT_KNOWN_HOMOGENEOUS)
            return
        name = self._layer_name(node)
        rule, why, affine = _rule(node, module, self._meta(node))
        parameters = []
        if affine is not None:
            parameters = [("weight", module.weight)] + ([("bias", module.bias)] if module.bias is not None else [])
        if rule == d.PASSES and _is_relu(node, module):
            layer = self._engine_layer(name, "ReLU", relu_param=caffe_pb2.ReLUParameter(
                negative_slope=float(getattr(module, "negative_slope", 0.0))))
        elif rule == d.PASSES and isinstance(module, nn.Dropout):
            layer = self._engine_layer(name, "Dropout", dropout_param=caffe_pb2.DropoutParameter(
                dropout_ratio=float(module.p)))
        else:
            layer = FxLayer(name, _label(node, module), functools.partial(_evaluate, node, self.modules,
                                                                          [p for p, _ in parameters]), sources)
        noise = isinstance(module, nn.Dropout)
        self._append(layer, node, sources, [node.name], parameters, (layer.type, rule, affine, why, noise))

    def _add_blocking(self, node, sources, name, label, why):
        """A barrier layer ``name`` that evaluates ``node`` (labelled ``label`` in reports)."""
        layer = FxLayer(name, label, functools.partial(_evaluate, node, self.modules, []), sources)
        self._append(layer, node, sources, [node.name], [], (label, d.BLOCKS, None, why, False))

    def _add_batchnorm(self, node, module, sources):
        """BatchNorm as Caffe's BatchNorm + Scale: a normalization with the stored statistics (a
        barrier) and, when it has γ and β, a per-channel affine layer (``DIAGONAL``)."""
        name, label = self._layer_name(node), type(module).__name__
        normalized = node.name if module.weight is None else "%s/normalized" % node.name

        def normalize(env, params):
            x = env[sources[0]]
            return F.batch_norm(x, module.running_mean, module.running_var, None, None, False, 0.0, module.eps)
        self._append(FxLayer("%s/normalize" % name if module.weight is not None else name, label + " normalize",
                             normalize, sources), node, sources, [normalized], [],
                     (label + " normalize", d.BLOCKS, None, "not homogeneous: it normalizes with fixed statistics",
                      False))
        if module.weight is None:
            return

        def affine(env, params):
            x = env["x"]
            shape = (1, -1) + (1,) * (x.dim() - 2)
            return x * params[0].reshape(shape) + (params[1].reshape(shape) if len(params) > 1 else 0)
        parameters = [("weight", module.weight)] + ([("bias", module.bias)] if module.bias is not None else [])
        layer = FxLayer(name, label + " affine", affine, ["x"])
        self._append(layer, node, [normalized], [node.name], parameters,
                     (layer.type, d.AFFINE, d.AffineLayer(d.DIAGONAL, groups=int(module.weight.numel())),
                      d.NOT_KNOWN_HOMOGENEOUS, False), bottom_names=[normalized])

    def _add_linear_over_last_axis(self, node, module, sources):
        """``nn.Linear`` on an (N, ..., C) tensor (tokens, channels-last maps) as the algorithm sees
        channels, on axis 1: the input moved to (N, C, ...), a 1x1 convolution with the Linear's own
        weights there (``CONV``, kernel 1 on every axis: each position's C values are one patch),
        and its output moved back. Both moves pass one common factor (``MOVES``)."""
        name, label = self._layer_name(node), type(module).__name__
        moved_in, moved_out = "%s/channels_first" % name, "%s/channels_first_out" % name
        self.blobs[moved_in] = Blob(_channels_first(sources[0].meta["tensor_meta"].shape), self.torch_device,
                                    moved_in)
        self.blobs[moved_out] = Blob(_channels_first(self._meta(node).shape), self.torch_device, moved_out)
        move = ("Tensor.movedim", d.MOVES, None, d.NOT_KNOWN_HOMOGENEOUS, False)
        self._append(FxLayer(moved_in, move[0], lambda env, params: env["x"].movedim(-1, 1), ["x"]), node,
                     sources, [moved_in], [], move, bottom_names=[sources[0].name])

        def linear(env, params):
            return F.linear(env["x"].movedim(1, -1), *params).movedim(-1, 1)
        spatial = len(self._meta(node).shape) - 2
        geometry = ConvGeometry((1,) * spatial, (0,) * spatial, (1,) * spatial, (1,) * spatial, 1)
        parameters = [("weight", module.weight)] + ([("bias", module.bias)] if module.bias is not None else [])
        self._append(FxLayer(name, label, linear, ["x"]), node, [], [moved_out], parameters,
                     (label, d.AFFINE, d.AffineLayer(d.CONV, groups=1, geometry=geometry), d.NOT_KNOWN_HOMOGENEOUS,
                      False), bottom_names=[moved_in])
        self._append(FxLayer("%s/channels_last" % name, move[0], lambda env, params: env["x"].movedim(1, -1), ["x"]),
                     node, [], [node.name], [], move, bottom_names=[moved_out])

    def _insert_splits(self):
        """A Split layer after each blob read more than once, one top per read, as Caffe inserts
        them: a blob's diff is overwritten by each layer's backward, a Split's tops' diffs add up."""
        reads = {}
        for name in self.layer_names:
            for j, blob in enumerate(self.bottom_names[name]):
                reads.setdefault(blob, []).append((name, j))
        layers = list(zip(self.layers, self.layer_names, self._ops))
        self.layers, self.layer_names, self.layer_types, self._ops = [], [], [], []
        bottoms, tops = self.bottom_names, self.top_names
        self.bottom_names, self.top_names = OrderedDict(), OrderedDict()

        def add(layer, name, op, layer_bottoms, layer_tops):
            self.layers.append(layer)
            self.layer_names.append(name)
            self.layer_types.append(layer.type)
            self._ops.append(op)
            self.bottom_names[name], self.top_names[name] = layer_bottoms, layer_tops

        def split(blob):
            readers = reads.get(blob, [])
            if len(readers) < 2:
                return
            split_tops = ["%s/split%d" % (blob, k) for k in range(len(readers))]
            name = "%s/split" % blob
            for (reader, j), top in zip(readers, split_tops):
                bottoms[reader][j] = top
            for top in split_tops:
                self.blobs[top] = Blob(self.blobs[blob].shape, self.torch_device, top)
            add(self._engine_layer(name, "Split", bottom=[blob], top=split_tops), name,
                ("Split", d.PASSES, None, d.NOT_KNOWN_HOMOGENEOUS, False), [blob], split_tops)
        for blob in self.inputs:
            split(blob)
        for layer, name, op in layers:
            add(layer, name, op, bottoms[name], tops[name])
            for blob in tops[name]:
                split(blob)

    def _engine_layer(self, name, kind, **fields):
        """The engine's own layer of Caffe type ``kind`` (ReLU, Dropout: the same kernels, memory
        savings and seeded masks as on the Caffe path)."""
        return create_layer(caffe_pb2.LayerParameter(name=name, type=kind, **fields), "test")

    def _append(self, layer, node, sources, tops, parameters, op, bottom_names=None):
        name = layer.name
        bottoms = list(bottom_names) if bottom_names is not None else [s.name for s in sources]
        for top in tops:
            meta = self._meta(node)
            self.blobs.setdefault(top, Blob(tuple(meta.shape), self.torch_device, top))
        qualified = ["%s.%s" % (node.target, key) for key, _ in parameters]
        layer.blobs = [self._parameter_blob(name, j, q, p) for j, (q, (_, p)) in enumerate(zip(qualified, parameters))]
        if layer.blobs:
            self.params[name] = layer.blobs
            self.parameter_names[name] = qualified
        self.layers.append(layer)
        self.layer_names.append(name)
        self.layer_types.append(layer.type)
        self.bottom_names[name], self.top_names[name] = bottoms, list(tops)
        self._ops.append(op)

    def _parameter_blob(self, layer, j, qualified, parameter):
        """The parameter's blob: its own tensor (shared by every layer that uses the parameter)."""
        key = id(parameter)
        if key in self._param_blobs:
            self._shared[(layer, j)] = self._owners[key]
            return self._param_blobs[key]
        blob = Blob(tuple(parameter.shape), self.torch_device, qualified)
        blob.set_tensor(parameter.data)
        self._param_blobs[key], self._owners[key] = blob, (layer, j)
        return blob

    def _layer_name(self, node):
        """The module's qualified name for its first call, the fx node's name otherwise (made unique)."""
        name = node.target if node.op == "call_module" and node.target not in self.bottom_names else node.name
        while name in self.bottom_names or "%s/normalize" % name in self.bottom_names:
            name += "_"
        return name

    @staticmethod
    def _meta(node):
        return node.meta["tensor_meta"]

    # ------------------------------------------------------------------ running
    def reshape(self):
        """New input shapes (``blobs[input].reshape``) propagated to every blob, by running the layers
        once on zeros of those shapes (the model's shape logic is its own code; layers whose top is
        shaped like their bottom, Dropout among them, do not run: no random draw is consumed)."""
        values = {name: torch.zeros(self.blobs[name].shape, device=self.torch_device) for name in self.inputs}
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                bottoms = [values[b] for b in self._bottoms[i]]
                tops = [bottoms[0]] if layer.same_shape else layer.forward(bottoms, [b.tensor() for b in layer.blobs])
                for top, tensor in zip(self._tops[i], tops):
                    values[top] = tensor
                    self.blobs[top].reshape(*tensor.shape)
                for b in self._bottoms[i]:
                    if self._last_reader.get(b) == i and b not in self.inputs:
                        values.pop(b, None)
        self._records = [None] * len(self.layers)

    def write_back(self):
        """Make the model's parameters hold the parameter blobs' values (on CUDA the blobs' host
        copies are pushed to the device; a parameter whose memory the blob does not share is copied)."""
        for blobs, names in zip(self.params.values(), self.parameter_names.values()):
            for blob, qualified in zip(blobs, names):
                parameter = self.model.get_parameter(qualified)
                tensor = blob.tensor()
                if tensor.data_ptr() != parameter.data.data_ptr():
                    parameter.data.copy_(tensor)

    def close(self):
        """Give the model back its training flag and its parameters' ``requires_grad``."""
        self.model.train(self._training)
        for p, flag in self._requires_grad:
            p.requires_grad_(flag)


# ---------------------------------------------------------------------- tracing helpers
class _ShapeRecorder(ShapeProp):
    """torch's shape propagation (``node.meta["tensor_meta"]``), remembering the node it is at."""

    current = None

    def run_node(self, n):
        self.current = n
        return super().run_node(n)


def _trace(model):
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as error:
        raise NetDefinitionError("torch.fx cannot trace %s: %s (control flow that depends on the data "
                                 "cannot be traced)" % (type(model).__name__, first_line(error))) from None


def _model_device(model):
    devices = {p.device for p in model.parameters()} | {b.device for b in model.buffers()}
    if len(devices) > 1:
        raise NetDefinitionError("the model's parameters are on several devices: %s"
                                 % ", ".join(sorted(map(str, devices))))
    return building.resolve_device(next(iter(devices)) if devices else "cpu")


def _example_inputs(example, placeholders, device):
    """``{placeholder name: float32 tensor on device}`` from a tensor or a dict."""
    names = [n.name for n in placeholders]
    if not isinstance(example, dict):
        if len(names) != 1:
            raise NetDefinitionError("the model takes %d inputs (%s): give the data as {name: batch}"
                                     % (len(names), ", ".join(names)))
        example = {names[0]: example}
    missing = [n for n in names if n not in example]
    if missing:
        raise NetDefinitionError("no data for the model's input %s (inputs: %s)" % (missing[0], ", ".join(names)))
    return {n: torch.as_tensor(example[n]).to(device=device, dtype=torch.float32) for n in names}


def _is_tensor(node):
    return isinstance(node.meta.get("tensor_meta"), TensorMetadata)


def _tensor_sources(node):
    """The tensor-valued nodes ``node`` reads, directly or through values that are not tensors, in order."""
    sources, seen = [], set()

    def visit(arg):
        if isinstance(arg, torch.fx.Node) and arg not in seen:
            seen.add(arg)
            if arg.op == "placeholder" or (arg.op != "get_attr" and _is_tensor(arg)):
                sources.append(arg)
            elif arg.op != "get_attr":
                torch.fx.node.map_arg((arg.args, arg.kwargs), visit)
        return arg
    torch.fx.node.map_arg((node.args, node.kwargs), visit)
    return sources


def _evaluate(node, modules, parameter_names, env, params):
    """The value of ``node`` with the tensors of ``env`` and, for an affine module, ``params`` as its
    parameters (``torch.func.functional_call``: autograd sees them as the layer's parameter leaves)."""
    cache = dict(env)

    def value(arg):
        if not isinstance(arg, torch.fx.Node):
            return arg
        if arg not in cache:
            cache[arg] = run(arg)
        return cache[arg]

    def run(n):
        if n.op == "get_attr":
            return functools.reduce(getattr, n.target.split("."), modules[""])
        args, kwargs = torch.fx.node.map_arg((n.args, n.kwargs), value)
        if n.op == "call_module":
            module = modules[n.target]
            if n is node and parameter_names:
                return torch.func.functional_call(module, dict(zip(parameter_names, params)), tuple(args), kwargs)
            return module(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        return n.target(*args, **kwargs)
    return run(node)


def _rule(node, module, meta):
    """(rule, why, AffineLayer or None) of a node."""
    if isinstance(module, _CONV + _DECONV + (nn.Linear,)):
        return d.AFFINE, d.NOT_KNOWN_HOMOGENEOUS, _affine(node, module, meta)
    target = module if module is not None else node.target
    kind = type(module) if module is not None else target
    why = d.NOT_HOMOGENEOUS if _member(kind, NONHOMOGENEOUS) else d.NOT_KNOWN_HOMOGENEOUS
    rules = MODULE_RULES if module is not None else METHOD_RULES if node.op == "call_method" else FUNCTION_RULES
    rule = next((r for r, members in rules.items() if _member(kind, members)), d.BLOCKS)
    if module is None and node.op == "call_function":
        rule, why = _arithmetic_rule(node, rule, why)
        if rule == d.BLOCKS and target in (torch.cat, torch.concat):
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            rule = d.CONCATENATES if dim in (1, 1 - len(meta.shape)) else d.BLOCKS
    if rule == d.BLOCKS and _spatial_mean(node, meta):
        rule = d.PASSES
    if rule == d.RESHAPES and node.op != "call_module" and not _keeps_batch_axis(node, meta):
        rule = d.MOVES
    return rule, why, None


def _member(kind, members):
    """``kind`` (a module class, a function or a method name) is one of ``members`` (or a subclass)."""
    if isinstance(kind, str):
        return kind in members
    if isinstance(kind, type):
        return any(isinstance(m, type) and issubclass(kind, m) for m in members)
    return any(kind is m for m in members)


def _arithmetic_rule(node, rule, why):
    """``a + b`` of two tensors ties them; ``x * c`` and ``x / c`` with a positive constant pass."""
    tensors = [a for a in node.args if isinstance(a, torch.fx.Node) and _is_tensor(a)]
    if node.target in _ADD:
        if len(tensors) == 2 and "alpha" not in node.kwargs and _same_shape(*tensors):
            return d.TIES, why
        return d.BLOCKS, "not homogeneous: it adds a constant"
    if node.target in _MUL:
        constants = [a for a in node.args if not isinstance(a, torch.fx.Node)]
        if len(tensors) == 1 and tensors[0] is node.args[0] and len(constants) == 1 \
                and isinstance(constants[0], (int, float)) and constants[0] > 0:
            return d.PASSES, why
        return d.BLOCKS, "not homogeneous: a product" if len(tensors) == 2 else why
    return rule, why


def _same_shape(a, b):
    return tuple(a.meta["tensor_meta"].shape) == tuple(b.meta["tensor_meta"].shape)


def _spatial_mean(node, meta):
    """``x.mean(dims)``/``x.amax(dims)`` (or ``torch.mean``/``torch.amax``) over spatial axes only: global
    average or max pooling, positively homogeneous per channel."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", None)
    if name not in ("mean", "amax") or node.op not in ("call_method", "call_function"):
        return False
    sources = _tensor_sources(node)
    if not sources or not _is_tensor(sources[0]):
        return False
    ndim = len(sources[0].meta["tensor_meta"].shape)
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    dims = (dims,) if isinstance(dims, int) else dims
    return isinstance(dims, (tuple, list)) and bool(dims) and ndim > 2 \
        and all(isinstance(a, int) and a % ndim >= 2 for a in dims)


def _keeps_batch_axis(node, meta):
    """A reshape keeps the batch axis when the output's first axis is its input's first axis."""
    sources = _tensor_sources(node)
    return bool(sources) and _is_tensor(sources[0]) \
        and tuple(meta.shape)[:1] == tuple(sources[0].meta["tensor_meta"].shape)[:1]


def _affine(node, module, meta):
    if isinstance(module, nn.Linear):
        sources = _tensor_sources(node)
        axis = len(sources[0].meta["tensor_meta"].shape) - 1 if sources and "tensor_meta" in sources[0].meta else 1
        return d.AffineLayer(d.LINEAR, groups=1, axis=axis)
    kind = d.CONV if isinstance(module, _CONV) else d.DECONV
    geometry, error = None, None
    spatial = len(module.kernel_size)
    padding = module.padding
    if isinstance(padding, str):
        padding = _string_padding(module, padding)
    if padding is None or module.padding_mode != "zeros" or any(getattr(module, "output_padding", (0,) * spatial)):
        error = ("layer '%s': convolution geometry not expressible as Caffe's (padding %r, padding_mode %r)"
                 % (node.target, module.padding, module.padding_mode))
    else:
        geometry = ConvGeometry(tuple(module.kernel_size), tuple(padding), tuple(module.stride),
                                tuple(module.dilation), int(module.groups))
    return d.AffineLayer(kind, groups=int(module.groups), geometry=geometry, geometry_error=error)


def _string_padding(module, padding):
    """'valid' is zero padding; 'same' with an even total padding per axis is symmetric padding."""
    if padding == "valid":
        return (0,) * len(module.kernel_size)
    totals = [dil * (k - 1) for k, dil in zip(module.kernel_size, module.dilation)]
    return tuple(t // 2 for t in totals) if all(t % 2 == 0 for t in totals) else None


def _tuple_origin(node, modules):
    """(module node, module) when ``node`` takes one element of a module's tuple output (e.g.
    ``nn.MultiheadAttention``'s ``(output, weights)``), else None."""
    if node.op != "call_function" or node.target is not operator.getitem:
        return None
    source = node.args[0]
    if isinstance(source, torch.fx.Node) and source.op == "call_module" and not _is_tensor(source) \
            and isinstance(node.args[1], int):
        return source, modules[source.target]
    return None


def _channels_first(shape):
    """(N, ..., C) -> (N, C, ...)."""
    shape = tuple(shape)
    return shape[:1] + shape[-1:] + shape[1:-1]


def _is_relu(node, module):
    if module is not None:
        return isinstance(module, (nn.ReLU, nn.LeakyReLU))
    return (node.op == "call_function" and node.target in (F.relu, torch.relu)) \
        or (node.op == "call_method" and node.target == "relu")


def _label(node, module):
    if module is not None:
        return type(module).__name__
    if node.op == "call_method":
        return "Tensor.%s" % node.target
    return getattr(node.target, "__name__", str(node.target))


def _shapes(example):
    return ", ".join("%s %s" % (k, tuple(v.shape)) for k, v in example.items())

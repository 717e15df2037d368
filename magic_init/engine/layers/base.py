"""The layer registry and the ``Layer`` base class every Caffe type implements.

A layer is built from its ``LayerParameter`` (typed ``*_param`` message; defaults come from
the proto) and the phase it runs in. It tells the net its learnable blob shapes and fillers
(``param_shapes``, ``fillers``) and computes its tops from its bottoms and parameters
(``forward``), as a pure function of torch tensors: it never writes a bottom in place, so torch
autograd gives Caffe's backward (the net records one small graph per layer). A layer may instead
define its own ``backward`` (see ``Layer.backward``). A layer object keeps its configuration only:
what one forward hands to its backward is returned by ``forward_for_backward`` and kept by the net
in that forward's record, never on the layer.
"""
from __future__ import annotations

from magic_init import layer_facts
from magic_init.errors import UnsupportedLayerError
from magic_init.proto import caffe_pb2

LAYER_TYPES = {}


def register(type_name):
    """Class decorator: register a Layer subclass under the exact Caffe type string (which also needs
    a row in ``magic_init.layer_facts.TABLE``: its role and how Algorithm 2's scale passes it)."""
    def decorate(cls):
        cls.type = type_name
        LAYER_TYPES[type_name] = cls
        return cls
    return decorate


def supported_types():
    return sorted(LAYER_TYPES)


def create_layer(layer_param, phase):
    """Instantiate the registered class for ``layer_param.type``; UnsupportedLayerError otherwise."""
    try:
        cls = LAYER_TYPES[layer_param.type]
    except KeyError:
        raise UnsupportedLayerError(unsupported_message(layer_param)) from None
    return cls(layer_param, phase)


def check_supported(layers) -> None:
    """UnsupportedLayerError for the first of ``layers`` (LayerParameters) the engine cannot run;
    data layers are skipped (they become Input layers)."""
    for layer in layers:
        if layer.type not in LAYER_TYPES and not layer_facts.is_data_layer(layer):
            raise UnsupportedLayerError(unsupported_message(layer))


def unsupported_message(layer_param) -> str:
    """One line: the layer, its type, where the type comes from, and what would run it."""
    kind = layer_param.type
    if kind == "Python":
        module = layer_param.python_param.module
        where = "runs Python code%s" % (" (module %s)" % module if module else "")
        hint = "--backend caffe runs it where that module imports"
    elif layer_facts.is_fork_type(kind):
        where = "comes from a Caffe fork, not BVLC Caffe"
        hint = "--backend caffe runs it with that fork's pycaffe"
    else:
        where = "is a BVLC Caffe type"
        hint = "--backend caffe runs it"
    return "layer %r: type %r %s; the built-in engine does not support it (%s)" % (
        layer_param.name, kind, where, hint)


def _default_filler(value=None):
    filler = caffe_pb2.FillerParameter()
    if value is not None:
        filler.value = value
    return filler


class Layer:
    """Base class: no parameters, identity-free; subclasses override what they need.

    Attributes a subclass may set: ``has_backward`` (False for Accuracy-like layers whose tops
    are not differentiable; otherwise a layer is differentiated by its own ``backward`` if it
    overrides it, else by autograd), ``fixed_params`` (True when Caffe forces lr_mult 0, e.g.
    BatchNorm), ``same_shape`` (True when the one top is shaped like the first bottom),
    ``backward_reads_bottoms``/``backward_reads_tops`` (False where a hand-written ``backward``
    does not read them: it then gets None for them).
    """

    type = None
    has_backward = True
    fixed_params = False
    same_shape = False
    #: What a hand-written ``backward`` reads of its forward: the net's record keeps only those
    #: (a tensor no record and no blob holds is freed).
    backward_reads_bottoms = True
    backward_reads_tops = True

    def __init__(self, param, phase):
        self.param = param
        self.name = param.name
        self.phase = phase                # "train" | "test", the layer's own phase
        self.blobs = []                   # parameter Blobs, set by the net (pycaffe's layer.blobs)
        self.setup()

    def setup(self) -> None:
        """Read the typed parameter message (called once from ``__init__``)."""

    def param_shapes(self, bottom_shapes) -> list:
        """Shapes of the learnable blobs, given the bottom shapes."""
        return []

    def fillers(self) -> list:
        """A FillerParameter per learnable blob (initial values of a fresh net)."""
        return []

    def forward(self, bottoms, params) -> list:
        """Top tensors from bottom tensors and parameter tensors."""
        raise NotImplementedError

    def output_shapes(self, bottom_shapes):
        """Top shapes computed from the bottom shapes (tuples), checking what Caffe's Reshape
        checks; None lets the net run ``forward`` on shape-only tensors instead (slower: torch's
        meta kernels import its compiler stack on first use)."""
        return None

    def forward_for_backward(self, bottoms, params):
        """``(tops, saved)``: ``forward``'s tops and what this forward hands to ``backward`` beyond
        bottoms, parameters and tops (None by default). Called by the net, instead of ``forward``,
        for the layers with a hand-written ``backward``; the net keeps ``saved`` in that forward's
        record. A layer that saves something overrides this and makes ``forward`` return
        ``self.forward_for_backward(bottoms, params)[0]``, so both compute the same tops."""
        return self.forward(bottoms, params), None

    def backward(self, bottoms, params, tops, saved, top_diffs, need_bottoms, param_diffs) -> list:
        """Optional hand-written backward; a subclass that does not override it is differentiated
        by torch autograd (the net records a small graph of its ``forward``, see
        ``has_hand_written_backward``).

        Args:
            bottoms, params, tops: The tensors of the recorded forward (unchanged since: the net
                checks torch's version counters before calling).
            saved: What that forward's ``forward_for_backward`` returned beside the tops.
            top_diffs: One gradient tensor per top.
            need_bottoms: One bool per bottom: whether its gradient is wanted.
            param_diffs: One tensor per parameter blob (its diff, to accumulate into in place, as
                Caffe accumulates parameter diffs across backward calls), or None where not needed.

        Returns:
            One gradient tensor per bottom (None where ``need_bottoms`` is False).
        """
        raise NotImplementedError("%s has no hand-written backward" % self.where())

    @classmethod
    def has_hand_written_backward(cls) -> bool:
        """Whether the class overrides ``backward``. If so the net runs ``forward_for_backward``
        without recording an autograd graph and keeps bottoms, parameters, tops and ``saved``
        for ``backward``; otherwise it differentiates ``forward`` by autograd."""
        return cls.backward is not Layer.backward

    def allow_force_backward(self, bottom_index) -> bool:
        """Caffe's ``AllowForceBackward`` (False e.g. for a loss layer's label bottom)."""
        return True

    def default_loss_weight(self, top_index) -> float:
        """Caffe: loss layers (role ``loss`` in ``magic_init.layer_facts``) have loss weight 1 on
        their first top by default."""
        return 1.0 if layer_facts.role(self.type) == layer_facts.LOSS and top_index == 0 else 0.0

    def where(self) -> str:
        return "layer %r (%s)" % (self.name, self.type)

    @staticmethod
    def filler_or_default(message, field, value=None):
        """``message.<field>`` if set, else Caffe's default filler (constant ``value`` or 0)."""
        return getattr(message, field) if message.HasField(field) else _default_filler(value)

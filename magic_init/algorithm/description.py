"""The neutral description of a net that the algorithm reads: affine layers and scale rules.

The algorithm (Algorithms 1 and 2, the change rates, the scale graph) never reads a framework's
layer types or layer parameters. An adapter builds one ``NetDescription`` per net
(``magic_init.adapters.caffe.describe`` for Caffe nets on either backend) and the net hands it out
as ``net.description``; the algorithm reads everything else (blobs, parameters, layer order,
bottoms and tops, forward and backward) through the Net interface (docs/ARCHITECTURE.md).

Each layer of the net is one ``Op`` in execution order. Its ``rule`` says how a positive scale
factor r on its input passes it (paper §3.2: Algorithm 2's rescaling keeps the function only through
layers with f(r·x) = r·f(x)):

* ``AFFINE``: an affine layer z = W·x + b that owns its weights (``Op.affine`` describes it): Algorithm 1
  initializes it (unless it is ``DIAGONAL``), Algorithm 2 rescales it, its output carries its own factor.
* ``PASSES``: positively homogeneous of degree 1 per channel (ReLU, max/average pooling, Dropout, ...).
* ``APPROX``: homogeneous only approximately (LRN): passed when initializing, a barrier when rescaling exactly.
* ``RESHAPES``: channels are reshaped (flatten, view); the factors follow the channels.
* ``MOVES``: linear in its input but moves or mixes the channel axis (transpose, permute, a reshape
  across the batch axis): one factor r on every input channel passes (f(r·x) = r·f(x)), so the layers
  whose factors reach it share one.
* ``CONCATENATES``: concatenation on the channel axis; each channel keeps its factor.
* ``TIES``: elementwise sum or max: the inputs' factors must be equal.
* ``BLOCKS``: a barrier (``Op.why`` says why): the layers whose factor reaches it keep their scale.
* ``INPUT``: produces a net input; its outputs carry no factor.
* ``STRIPS``: a loss or output layer the random loss of Algorithm 2 is applied below (a barrier
  where one occurs in the middle of the net).

Affine kinds (``AffineLayer.kind``) and their weight layouts:

* ``CONV``: (out, in/G, *kernel), G groups; ``geometry`` gives kernel, pad, stride, dilation.
* ``DECONV``: (in, out/G, *kernel), the transposed convolution.
* ``LINEAR``: (out, inputs) over the bottom flattened from ``axis`` (``transposed``: (inputs, out)).
* ``DIAGONAL``: one weight per channel, y_c = γ_c·x_c (+ β_c): rescaled by Algorithm 2, not initialized.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from magic_init.errors import NetDefinitionError

AFFINE, PASSES, APPROX, RESHAPES, MOVES, CONCATENATES, TIES, BLOCKS, INPUT, STRIPS = (
    "affine", "passes", "passes approximately", "reshapes", "moves the channel axis", "concatenates", "ties",
    "blocks", "input", "strips")
RULES = (AFFINE, PASSES, APPROX, RESHAPES, MOVES, CONCATENATES, TIES, BLOCKS, INPUT, STRIPS)

CONV, DECONV, LINEAR, DIAGONAL = "conv", "deconv", "linear", "diagonal"
KINDS = (CONV, DECONV, LINEAR, DIAGONAL)

#: The phrases a barrier gives when no more specific reason is known.
NOT_HOMOGENEOUS = "not homogeneous"
NOT_KNOWN_HOMOGENEOUS = "not known to be homogeneous"


class AffineLayer(NamedTuple):
    """An affine layer's weight layout.

    Attributes:
        kind: ``CONV``, ``DECONV``, ``LINEAR`` or ``DIAGONAL``.
        groups: weight groups G (a ``DIAGONAL`` layer: one per channel; ``LINEAR``: 1).
        geometry: for ``CONV`` and ``DECONV``: a ``magic_init.conv_geometry.ConvGeometry`` (kernel,
            pad, stride, dilation per spatial axis, group), or None when the adapter could not tell
            (``geometry_error`` says why; reading ``window()`` then raises it).
        axis: ``LINEAR``: the first axis of the bottom that is flattened into the input vector.
        transposed: ``LINEAR``: the weight is stored (inputs, outputs).
        geometry_error: why ``geometry`` is unknown (a sentence naming the layer), or None.
    """
    kind: str
    groups: int = 1
    geometry: Optional[object] = None
    axis: int = 1
    transposed: bool = False
    geometry_error: Optional[str] = None

    def window(self):
        """The convolution geometry; raises NetDefinitionError when the adapter could not tell it."""
        if self.geometry is None:
            raise NetDefinitionError(self.geometry_error or "convolution geometry unknown")
        return self.geometry


class Op(NamedTuple):
    """One layer of the net, in execution order.

    Attributes:
        index: its position in ``net.layer_names``.
        name: its name.
        label: what to call its type in messages and reports (the framework's own word).
        rule: how a scale passes it (one of ``RULES``).
        affine: the ``AffineLayer`` when ``rule`` is ``AFFINE``, else None.
        why: the phrase a barrier here gives ("not homogeneous", "not known to be homogeneous", or a
            specific reason): for ``BLOCKS``, and for ``APPROX`` when rescaling exactly.
        noise: a training-time noise layer (dropout): the identity when measuring without noise.
    """
    index: int
    name: str
    label: str
    rule: str
    affine: Optional[AffineLayer] = None
    why: str = NOT_KNOWN_HOMOGENEOUS
    noise: bool = False


class NetDescription:
    """What the algorithm knows about a net beyond its blobs: its ops and shared parameters.

    Args:
        ops: one ``Op`` per layer, in execution order (``op.index`` = its position).
        inputs: the net's input blob names.
        bottoms, tops: ``{layer name: [blob names]}``.
        shared: ``{(layer, j): (owner, j)}`` for every parameter blob j that ``layer`` shares with an
            earlier layer (``owner`` holds it).
    """

    def __init__(self, ops, inputs, bottoms, tops, shared=None):
        self.ops = tuple(ops)
        self.inputs = list(inputs)
        self.bottoms = {name: list(b) for name, b in bottoms.items()}
        self.tops = {name: list(t) for name, t in tops.items()}
        self.shared = dict(shared or {})
        self.names = [op.name for op in self.ops]
        self._position = {name: op.index for name, op in zip(self.names, self.ops)}

    def op(self, name):
        """The ``Op`` of layer ``name``."""
        return self.ops[self._position[name]]

    def affine(self, name):
        """The ``AffineLayer`` of layer ``name`` (None when it is not an affine layer)."""
        return self.op(name).affine

    def affine_layers(self):
        """Indices of the affine layers Algorithm 1 initializes (all but ``DIAGONAL``), in execution order."""
        return [op.index for op in self.ops if op.affine is not None and op.affine.kind != DIAGONAL]

    def rescalable_layers(self):
        """Indices of the layers Algorithm 2 rescales (every affine layer, ``DIAGONAL`` ones included)."""
        return [op.index for op in self.ops if op.affine is not None]

    def noise_layers(self):
        """Indices of the training-time noise layers (dropout)."""
        return [op.index for op in self.ops if op.noise]

    def last_compute_layer(self):
        """Index of the last layer that is neither stripped (loss, output) nor an input layer."""
        for op in reversed(self.ops):
            if op.rule not in (STRIPS, INPUT):
                return op.index
        raise NetDefinitionError("the net has no layer to compute (only input and loss layers)")

    def output_blobs(self, last):
        """Blobs produced by layers ``<= last`` and read by no layer ``<= last``: where η is injected."""
        produced, consumed = [], set()
        for name in self.names[:last + 1]:
            consumed.update(self.bottoms[name])
            produced.extend(t for t in self.tops[name] if t not in produced)
        outputs = [b for b in produced if b not in consumed and b not in self.inputs]
        if not outputs:
            raise NetDefinitionError("layer '%s': no output blob to backpropagate from" % self.names[last])
        return outputs

    def last_use(self):
        """``{blob: index of the last layer reading it}``: which blobs stay live."""
        used = {}
        for i, name in enumerate(self.names):
            for blob in self.bottoms[name]:
                used[blob] = i
        return used

    def live_after(self, index, used):
        """Blobs existing after layer ``index`` that a later layer still reads (net inputs included)."""
        existing = list(self.inputs)
        for name in self.names[:index + 1]:
            existing.extend(self.tops[name])
        return [b for b in dict.fromkeys(existing) if used.get(b, -1) > index]

    def sharing_layers(self):
        """Affine layers grouped by the weight blob they share: ``{owner: [owner, user, ...]}`` (execution order)."""
        groups = {}
        for (layer, j), (owner, _) in self.shared.items():
            affine = self.affine(layer)
            if j == 0 and affine is not None and affine.kind != DIAGONAL:
                groups.setdefault(owner, [owner]).append(layer)
        return groups


def describe(net):
    """The ``NetDescription`` of ``net`` (``net.description``, built once by the net's adapter).

    Raises NetDefinitionError when the net offers none."""
    description = getattr(net, "description", None)
    if description is None:
        raise NetDefinitionError("the net has no description of its layers (net.description): build it with an "
                                 "adapter, e.g. magic_init.adapters.caffe.describe")
    return description

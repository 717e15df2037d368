"""What the package knows about each Caffe layer type, in one table (torch-free).

Every list of layer types in the package reads this table: the affine layers the algorithm
initializes, the loss/output layers it strips before injecting its random loss and how Algorithm
2's scale factor passes each layer (``adapters.caffe`` turns these rows into the algorithm's
neutral description of a net), and the data layers ``netgraph`` turns into ``Input`` layers and
``load`` guesses shapes for. Adding a layer type
means one registry class in ``magic_init/engine/layers/`` and one row here (a test checks that every
engine type has a row). A type without a row is ``OTHER`` and ``BLOCKS`` a scale, "not known to be
homogeneous".

Roles:

* ``AFFINE``: learnable linear map (Convolution, InnerProduct, Deconvolution): initialized by
  Algorithm 1, rescaled by Algorithm 2; its output carries its own factor (scale ``SOURCE``).
* ``LOSS``: Caffe's LossLayer subclasses (loss weight 1 on their first top by default).
* ``DATA``: reads samples; ``netgraph.instantiate`` replaces it by an ``Input`` layer.
* ``INPUT``: the ``Input`` layer.
* ``OTHER``: everything else.

How a scale factor r > 0 on a layer's input passes it (paper §3.2; see ``algorithm.scale_graph``):

* ``PASSES``: positively homogeneous of degree 1, f(r·x) = r·f(x), per channel.
* ``APPROX``: passes approximately (LRN): passed from scratch, a barrier when rescaling exactly.
* ``RESHAPES``: channels are reshaped (Flatten, Reshape); the factors follow the channels.
* ``CONCATENATES``: Concat on the channel axis keeps each channel's factor (other axes: a barrier).
* ``TIES``: Eltwise SUM/MAX: the inputs' factors must be equal (PROD: a barrier).
* ``BLOCKS``: a barrier: the layers whose factor reaches it keep their scale.
* ``STRIPS``: losses, Softmax, Accuracy, ...: stripped from the end of the net (the random loss of
  Algorithm 2 is applied below them); a barrier when one occurs in the middle.
* ``SOURCE``: affine layers, whose outputs carry their own factor.

``nonhomogeneous`` marks types known *not* to be homogeneous of degree 1 (in some configuration:
LRN, Eltwise PROD, Softmax): a barrier there says "not homogeneous" rather than "not known to be
homogeneous".
"""
from __future__ import annotations

from typing import NamedTuple

AFFINE, LOSS, DATA, INPUT, OTHER = "affine", "loss", "data", "input", "other"
ROLES = (AFFINE, LOSS, DATA, INPUT, OTHER)

PASSES, APPROX, RESHAPES, CONCATENATES, TIES, BLOCKS, STRIPS, SOURCE = (
    "passes", "passes approximately", "reshapes", "concatenates", "ties", "blocks", "strips", "source")
SCALES = (PASSES, APPROX, RESHAPES, CONCATENATES, TIES, BLOCKS, STRIPS, SOURCE)


class LayerFacts(NamedTuple):
    role: str
    scale: str
    nonhomogeneous: bool = False


_ = LayerFacts

#: Caffe type string -> facts. Order within a role is kept by the derived tuples (messages list them).
TABLE = {
    # type                        role    scale          known not homogeneous
    "Convolution":             _(AFFINE, SOURCE),
    "InnerProduct":            _(AFFINE, SOURCE),
    "Deconvolution":           _(AFFINE, SOURCE),

    "Input":                   _(INPUT, BLOCKS),
    "Data":                    _(DATA, BLOCKS),
    "ImageData":               _(DATA, BLOCKS),
    "HDF5Data":                _(DATA, BLOCKS),
    "MemoryData":              _(DATA, BLOCKS),
    "WindowData":              _(DATA, BLOCKS),
    "DummyData":               _(DATA, BLOCKS),
    "Python":                  _(DATA, BLOCKS),     # netgraph treats every Python layer as a data layer
    "AnnotatedData":           _(DATA, BLOCKS),     # SSD's Caffe fork
    "VideoData":               _(DATA, BLOCKS),     # C3D's Caffe fork
    "DenseImageData":          _(DATA, BLOCKS),     # SegNet's Caffe fork

    "SoftmaxWithLoss":         _(LOSS, STRIPS),
    "SigmoidCrossEntropyLoss": _(LOSS, STRIPS),
    "EuclideanLoss":           _(LOSS, STRIPS),
    "HingeLoss":               _(LOSS, STRIPS),
    "InfogainLoss":            _(LOSS, STRIPS),
    "MultinomialLogisticLoss": _(LOSS, STRIPS),
    "ContrastiveLoss":         _(LOSS, STRIPS),
    "Softmax":                 _(OTHER, STRIPS, True),
    "Accuracy":                _(OTHER, STRIPS),
    "Silence":                 _(OTHER, STRIPS),
    "ArgMax":                  _(OTHER, STRIPS),

    # max(r·x, 0) = r·max(x, 0); PReLU, AbsVal likewise; Dropout: identity or fixed mask;
    # Pooling MAX/AVE (and STOCHASTIC in TEST: Σx²/Σx) are degree 1.
    "ReLU":                    _(OTHER, PASSES),
    "PReLU":                   _(OTHER, PASSES),
    "AbsVal":                  _(OTHER, PASSES),
    "Dropout":                 _(OTHER, PASSES),
    "Pooling":                 _(OTHER, PASSES),
    "Split":                   _(OTHER, PASSES),
    "Crop":                    _(OTHER, PASSES),
    "LRN":                     _(OTHER, APPROX, True),   # x·(k + α/n·Σx²)^(-β): degree 1 only as α/n·Σx² ≪ k
    "Flatten":                 _(OTHER, RESHAPES),
    "Reshape":                 _(OTHER, RESHAPES),
    "Concat":                  _(OTHER, CONCATENATES),
    "Eltwise":                 _(OTHER, TIES, True),     # SUM/MAX tie their inputs; PROD is degree 2
    "Slice":                   _(OTHER, BLOCKS),         # homogeneous, but its channel split is not traced

    "Sigmoid":                 _(OTHER, BLOCKS, True),
    "TanH":                    _(OTHER, BLOCKS, True),
    "BatchNorm":               _(OTHER, BLOCKS, True),   # fixed TEST statistics: a factor changes f
    # Scale: x·s with s a second bottom is of degree 2; with one bottom and a learned, unshared
    # per-channel γ it is a source for Algorithm 2 instead (adapters.caffe.scale_layer_problem).
    "Scale":                   _(OTHER, BLOCKS, True),
    "Bias":                    _(OTHER, BLOCKS, True),
    "Power":                   _(OTHER, BLOCKS, True),
    "Exp":                     _(OTHER, BLOCKS, True),
    "Log":                     _(OTHER, BLOCKS, True),
    "BNLL":                    _(OTHER, BLOCKS, True),
    "ELU":                     _(OTHER, BLOCKS, True),
    "Threshold":               _(OTHER, BLOCKS, True),
    "MVN":                     _(OTHER, BLOCKS, True),
    "Tile":                    _(OTHER, BLOCKS),         # homogeneous, but tiling axis 1 changes the channels
    "Reduction":               _(OTHER, BLOCKS),         # reduces the channels away (SUMSQ: degree 2)
    "Embed":                   _(OTHER, BLOCKS),         # a table lookup: its bottom holds indices
}

del _

#: Every layer type BVLC Caffe registers (src/caffe/layers/, 1.0 and master): a type outside this
#: set comes from a Caffe fork (ROIPooling, Permute, PriorBox, Upsample, BN, Interp, ...).
BVLC_TYPES = frozenset((
    "AbsVal", "Accuracy", "ArgMax", "BatchNorm", "BatchReindex", "Bias", "BNLL", "Clip", "Concat",
    "ContrastiveLoss", "Convolution", "Crop", "Data", "Deconvolution", "Dropout", "DummyData", "Eltwise",
    "ELU", "Embed", "EuclideanLoss", "Exp", "Filter", "Flatten", "HDF5Data", "HDF5Output", "HingeLoss",
    "Im2col", "ImageData", "InfogainLoss", "InnerProduct", "Input", "Log", "LRN", "LSTM", "LSTMUnit",
    "MemoryData", "MultinomialLogisticLoss", "MVN", "Parameter", "Pooling", "Power", "PReLU", "Python",
    "Recurrent", "Reduction", "ReLU", "Reshape", "RNN", "Scale", "Sigmoid", "SigmoidCrossEntropyLoss",
    "Silence", "Slice", "Softmax", "SoftmaxWithLoss", "Split", "SPP", "Swish", "TanH", "Threshold", "Tile",
    "WindowData"))

#: Facts of a type the table does not know.
UNKNOWN = LayerFacts(OTHER, BLOCKS, False)


def facts(kind: str) -> LayerFacts:
    """The row of Caffe type ``kind`` (``UNKNOWN`` when it has none)."""
    return TABLE.get(kind, UNKNOWN)


def role(kind: str) -> str:
    return facts(kind).role


def scale(kind: str) -> str:
    return facts(kind).scale


def types(role: str | None = None, scale: str | None = None, nonhomogeneous: bool | None = None) -> tuple:
    """Type strings whose row matches every given field, in table order."""
    return tuple(kind for kind, row in TABLE.items()
                 if (role is None or row.role == role) and (scale is None or row.scale == scale)
                 and (nonhomogeneous is None or row.nonhomogeneous == nonhomogeneous))


def is_affine(kind: str) -> bool:
    return role(kind) == AFFINE


def is_data(kind: str) -> bool:
    """A data layer (netgraph replaces it by an ``Input`` layer)."""
    return role(kind) == DATA


def is_data_layer(layer) -> bool:
    """Whether the LayerParameter ``layer`` reads samples: a data type, except a Python layer with
    bottoms (Faster R-CNN's proposal layer computes from other blobs; it is not a source)."""
    return is_data(layer.type) and not (layer.type == "Python" and len(layer.bottom) > 0)


def is_fork_type(kind: str) -> bool:
    """A type BVLC Caffe does not have: it comes from a Caffe fork."""
    return kind not in BVLC_TYPES


def is_input(kind: str) -> bool:
    """An ``Input`` or data layer: where the net's blobs start."""
    return role(kind) in (INPUT, DATA)

"""What a model file may not hold: the one place for the checks on weights read or about to be written.

A single NaN or Inf weight makes every output of a net, and so every statistic the algorithm measures,
non-finite; an affine layer whose weights are all zero makes the net's output independent of its
input, so such a model fails at training step 0. Every path that reads or writes weights (Caffe
models, BatchNorm folding, PyTorch state_dicts) checks through these functions.
"""

import numpy as np

from magic_init.errors import ModelFileError

_ROLES = ("weights", "bias")


def blob_label(layer, index):
    """``layer 'conv1' blob 0 (weights)``: how a Caffe blob is named in messages."""
    role = _ROLES[index] if index < len(_ROLES) else "blob %d" % index
    return "layer '%s' blob %d (%s)" % (layer, index, role)


def nonfinite_count(array):
    """Number of NaN and Inf values in ``array`` (0 for an integer array)."""
    return int(np.size(array) - np.count_nonzero(np.isfinite(array)))


def check_finite(weights, source, label=blob_label, cause=""):
    """Raise ModelFileError naming the first blob of ``weights`` that holds a NaN or Inf.

    Args:
        weights: ``{name: [array, ...]}`` (numpy arrays, or anything ``np.isfinite`` takes).
        source: what the message starts with: the file read, or ``refusing to write PATH``.
        label: ``label(name, index)`` names one blob in the message (default: ``blob_label``).
        cause: appended to the message, e.g. a likely reason.

    Raises:
        ModelFileError: ``SOURCE: LABEL has N non-finite value(s) (NaN or Inf)CAUSE``.
    """
    for name, arrays in weights.items():
        for index, array in enumerate(arrays):
            bad = nonfinite_count(array)
            if bad:
                raise ModelFileError("%s: %s has %d non-finite value(s) (NaN or Inf)%s"
                                     % (source, label(name, index), bad, cause))


def check_no_zero_affine(path, weights, allowed=()):
    """Refuse to write ``path`` when an affine layer's weights are all zero and that was not intended.

    Args:
        path: the file about to be written, for the message.
        weights: ``{layer: (description, weight array)}`` of the affine layers, e.g.
            ``{"fc3": ("InnerProduct", w)}``.
        allowed: layers that may stay all zero (loaded that way from the user's own model).

    Raises:
        ModelFileError: naming the first such layer.
    """
    for layer, (what, weight) in weights.items():
        if layer not in allowed and not np.any(weight):
            raise ModelFileError("refusing to write %s: layer '%s' (%s) has all-zero weights that nothing "
                                 "initialized (the net's output would not depend on its input)"
                                 % (path, layer, what))

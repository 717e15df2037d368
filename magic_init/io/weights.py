"""Copy trained weights into a net by layer name (Caffe's ``Net::CopyTrainedLayersFrom``).

Rules: layers are matched by name; source layers the net lacks are ignored; net layers the
source lacks keep their values; for a matched layer the blob count must agree and each blob's
shape must equal the target's, where a legacy 4-D source blob (num, channels, height, width)
also fits a target of at most 4 axes that, left-padded with 1s to 4-D, equals it (Caffe's
``Blob::ShapeEquals`` on legacy protos: an InnerProduct weight (M, K) stored as 1x1xMxK).
Anything else raises ShapeMismatchError naming the layer, blob index and both shapes.

Both backends use this: ``match_weights`` works on shapes alone and returns arrays already
reshaped to the targets; ``copy_weights`` also writes them into the net's arrays.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Sequence

import numpy as np

from magic_init.errors import ShapeMismatchError


def legacy_padded(shape: Sequence[int]):
    """``shape`` left-padded with 1s to 4 axes, or None when it has more than 4."""
    shape = tuple(int(d) for d in shape)
    if len(shape) > 4:
        return None
    return (1,) * (4 - len(shape)) + shape


def shape_fits(source_shape: Sequence[int], target_shape: Sequence[int]) -> bool:
    """True when a stored blob of ``source_shape`` may be copied into ``target_shape``."""
    source_shape = tuple(int(d) for d in source_shape)
    target_shape = tuple(int(d) for d in target_shape)
    if source_shape == target_shape:
        return True
    return len(source_shape) == 4 and legacy_padded(target_shape) == source_shape


def match_weights(weights: Dict[str, List[np.ndarray]], target_shapes: Dict[str, List[tuple]],
                  source_name: str = "weights") -> "OrderedDict[str, List[np.ndarray]]":
    """For each target layer present in ``weights``: its arrays, checked and reshaped to the targets.

    ``target_shapes`` maps each layer of the net that has learnable blobs to their shapes. A layer
    stored without blobs provides nothing (it is skipped, as a layer the model lacks)."""
    matched = OrderedDict()
    for layer, shapes in target_shapes.items():
        if not weights.get(layer):
            continue
        arrays = weights[layer]
        if len(arrays) != len(shapes):
            raise ShapeMismatchError("%s: layer '%s' has %d blobs, but the net's layer has %d"
                                     % (source_name, layer, len(arrays), len(shapes)))
        matched[layer] = [_fitted(array, shape, source_name, layer, i)
                          for i, (array, shape) in enumerate(zip(arrays, shapes))]
    return matched


def _fitted(array, target_shape, source_name: str, layer: str, index: int) -> np.ndarray:
    array = np.asarray(array)
    if not shape_fits(array.shape, target_shape):
        raise ShapeMismatchError("%s: layer '%s' blob %d has shape %s, but the net expects %s"
                                 % (source_name, layer, index, _shape_text(array.shape),
                                    _shape_text(target_shape)))
    return array.reshape(tuple(int(d) for d in target_shape))


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


def copy_weights(weights: Dict[str, List[np.ndarray]], target_params, source_name: str = "weights"):
    """Copy ``weights`` into ``target_params`` (layer -> list of arrays or blobs with ``.data``).

    Writes in place; returns the names of the layers copied. Nothing is written when any
    matched layer does not fit (all checks run first)."""
    targets = OrderedDict((layer, [_data_of(blob) for blob in blobs])
                          for layer, blobs in target_params.items())
    shapes = OrderedDict((layer, [a.shape for a in arrays]) for layer, arrays in targets.items())
    matched = match_weights(weights, shapes, source_name)
    for layer, arrays in matched.items():
        for target, source in zip(targets[layer], arrays):
            target[...] = source
    return list(matched)


def _data_of(blob) -> np.ndarray:
    return blob.data if hasattr(blob, "data") and not isinstance(blob, np.ndarray) else blob

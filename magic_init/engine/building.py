"""Build-time helpers: loading the NetParameter, the device, top shapes, blob sources, and which
blobs need gradients.

``top_shapes`` asks the layer (``same_shape``, ``output_shapes``) and otherwise runs it on
shape-only ("meta") tensors, so a rare layer type needs no shape function. ``backward_needs``
follows Caffe's ``Net::Init``: a layer needs backward when a bottom needs it or one of its
parameters has lr_mult != 0; its tops then need it too;
``force_backward`` adds every bottom the layer allows (Caffe's ``AllowForceBackward``). Unlike
Caffe we do not prune layers that do not reach a loss: magic_init backpropagates from arbitrary
blobs, so every differentiable layer above the inputs takes part.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch

from magic_init.errors import BackendError, MagicInitError, NetDefinitionError


class BackwardPlan(NamedTuple):
    layer: list        # per layer: bool
    bottoms: list      # per layer: [bool per bottom]
    params: list       # per layer: [bool per param]


def top_shapes(layer, bottom_shapes, param_shapes):
    """Shapes of ``layer``'s tops for the given bottom and parameter shapes: the layer's own
    ``output_shapes`` where it has one, else by running it on shape-only tensors."""
    bottom_shapes = [tuple(s) for s in bottom_shapes]
    if layer.same_shape:
        return [bottom_shapes[0]]
    shapes = layer.output_shapes(bottom_shapes)
    if shapes is not None:
        return [tuple(int(d) for d in s) for s in shapes]
    try:
        return _run_on(layer, bottom_shapes, param_shapes, "meta")
    except MagicInitError:
        raise
    except Exception:  # an op without a meta kernel: run it on zeros instead
        pass
    try:
        return _run_on(layer, bottom_shapes, param_shapes, "cpu")
    except MagicInitError:
        raise
    except Exception as error:
        raise NetDefinitionError("%s: cannot run on bottoms of shapes %s: %s"
                                 % (layer.where(), list(bottom_shapes), str(error).split("\n")[0]))


def _run_on(layer, bottom_shapes, param_shapes, device):
    bottoms = [torch.zeros(s, device=device) for s in bottom_shapes]
    params = [torch.zeros(s, device=device) for s in param_shapes]
    with torch.no_grad():
        return [tuple(t.shape) for t in layer.forward(bottoms, params)]


def backward_needs(layers, bottom_names, top_names, param_specs, force_backward) -> BackwardPlan:
    """Caffe's need-backward bookkeeping (see module docstring).

    Args:
        layers: the layers (``has_backward``, ``fixed_params``, ``allow_force_backward``), in order.
        bottom_names, top_names: per layer, its bottom and top blob names.
        param_specs: per layer, the lr_mult of each parameter blob.
        force_backward: Caffe's ``force_backward``.

    Returns:
        The ``BackwardPlan``.
    """
    blob_needs = {}
    plan = BackwardPlan([], [], [])
    for layer, bottoms, tops, specs in zip(layers, bottom_names, top_names, param_specs):
        params = [not layer.fixed_params and lr_mult != 0 for lr_mult in specs]
        needs = [blob_needs.get(b, False) or (force_backward and layer.allow_force_backward(j))
                 for j, b in enumerate(bottoms)]
        if not layer.has_backward:
            needs, params = [False] * len(bottoms), [False] * len(params)
        need = any(needs) or any(params)
        for top in tops:
            blob_needs[top] = need
        plan.layer.append(need)
        plan.bottoms.append(needs)
        plan.params.append(params)
    return plan


def resolve_device(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError("device %r asked for, but torch sees no CUDA device" % str(device))
    if device.type not in ("cpu", "cuda"):
        raise BackendError("device %r is not supported (use cpu, cuda or cuda:N)" % str(device))
    return device


def check_single_source(layer, blobs):
    """Caffe's AppendTop: a top may reuse an existing blob only in place (top j = bottom j)."""
    for j, top in enumerate(layer.param.top):
        in_place = j < len(layer.param.bottom) and layer.param.bottom[j] == top
        if top in blobs and not in_place:
            raise NetDefinitionError("%s: top blob %r is produced by multiple sources"
                                     % (layer.where(), top))


def available_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable; physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_param_memory(layer, shapes, itemsize=4, available=None):
    """Raise NetDefinitionError naming ``layer`` when its parameter blobs (data and diff) cannot fit
    in the available memory, instead of failing deep inside an allocation."""
    needed = 2 * itemsize * sum(int(np.prod(shape, dtype=np.float64)) for shape in shapes)
    available = available_memory() if available is None else available
    if needed > available:
        raise NetDefinitionError("%s: its parameters %s need %s of memory, this machine has %s available"
                                 % (layer.where(), " + ".join("x".join(map(str, s)) for s in shapes),
                                    _bytes(needed), _bytes(available)))


def _bytes(n) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return "%.1f %s" % (n, unit)
        n /= 1024.0

"""The batch size of a run, chosen from a memory budget (``--batch-size auto``).

The peak of a run on a big net is one forward+backward pass of a batch through every blob
(Algorithm 2, ``stats``): it grows linearly with the batch. Its size per image is known from the
blob shapes alone, before any activation is allocated, so the net is built once, at the largest
batch ``auto`` may choose (``MAX_AUTO_BATCH``), and the batch is chosen from its shapes.

Arithmetic (B: the batch the net was built with; sizes in float32 elements, 4 bytes each):

* built-in engine: every layer that takes part in the backward writes a new tensor per top, in-place
  layers too (ResNet's conv -> BatchNorm -> Scale -> ReLU chain on one blob makes four), and the
  forward's record keeps those its backward reads (``Layer.backward_reads``); the tensors no later
  layer and no record reads are freed. The backward adds one diff per blob it writes.
  ``per_image = 4 x (sum of the kept tops of the layers that run backward + sum of the blobs they
  write, once per name) / B``, plus the blobs of the layers that run no backward (inputs), once.
* pycaffe: Caffe keeps one data and one diff array per blob (in-place layers share them):
  ``per_image = 4 x 2 x (sum of the blobs) / B``.

The weights and their gradients (the diffs the pass accumulates) are held during the pass too, so
the batch gets what they leave of the budget, but at least a quarter of it (a net whose weights alone
fill the budget, VGG's fully connected layers, still gets a few images per pass instead of one,
which would stream its 400 MB layers once per image):
``batch budget = max(budget - 2 x weight bytes, budget / 4)``. The batch is then
``min(cap, images, max(1, floor(batch budget / per_image)))``. What this leaves out (the library,
per-pass workspaces that do not grow with the batch) is not part of the budget; docs/RESULTS.md
(section 0, "Issue 15") compares the estimate with the measured peaks.
"""
from __future__ import annotations

import logging


log = logging.getLogger(__name__)

#: ``--batch-size auto``: the batch size chosen from the memory budget.
AUTO = "auto"
#: The largest batch ``auto`` chooses (the batch size of the paper's runs, the old default).
MAX_AUTO_BATCH = 16
FLOAT_BYTES = 4


def _batch_axis(net):
    """The batch the net was built with: the first axis of its first input blob (1 if it has none)."""
    for name in getattr(net, "inputs", ()) or ():
        shape = tuple(net.blobs[name].shape)
        if shape:
            return max(1, int(shape[0]))
    return 1


def _count(net, name):
    """Elements of blob ``name`` (``Blob.count`` on both backends; no array is materialized)."""
    return int(net.blobs[name].count)


def pass_bytes_per_image(net) -> int:
    """Bytes per image of one forward+backward pass through ``net`` (see the module docstring).

    Args:
        net: A net built by ``load.build_net`` (the built-in engine's ``Net`` or pycaffe's), with
            its blobs shaped for the batch it was built with.

    Returns:
        The estimated bytes per image (int, at least 1).
    """
    batch = _batch_axis(net)
    plan = getattr(net, "_plan", None)
    if plan is None:                                   # pycaffe: data + diff per blob
        elements = 2 * sum(_count(net, name) for name in net.blobs)
    else:
        elements = _engine_held(net, plan) + _largest_layer(net)
    return max(1, FLOAT_BYTES * elements // batch)


def _engine_held(net, plan):
    """Elements the engine holds at the end of a recording forward under ``Net.releasing``: each
    tensor a record keeps (a hand-written backward's ``backward_reads_*``; an autograd layer's
    bottoms and tops) or a blob still holds (its last reader has not run), counted once."""
    last_reader = {b: i for i, name in enumerate(net.layer_names) for b in net.bottom_names[name]}
    current, sizes, held = {}, {}, set()
    for i, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
        bottoms = [current.get(b, ("input", b)) for b in net.bottom_names[name]]
        tops = [(i, t) for t in net.top_names[name]]       # a tensor: (its writer, its blob)
        for tensor in tops:
            sizes[tensor] = _count(net, tensor[1])
        for b, tensor in zip(net.bottom_names[name], bottoms):
            sizes.setdefault(tensor, _count(net, b))
        if plan.layer[i]:
            hand_written = layer.has_hand_written_backward()
            if not hand_written or layer.backward_reads_bottoms:
                held.update(bottoms)
            if not hand_written or layer.backward_reads_tops:
                held.update(tops)
        current.update((tensor[1], tensor) for tensor in tops)
        for b in net.bottom_names[name]:
            if last_reader.get(b) == i and b not in net.top_names[name] and b not in net.inputs:
                current.pop(b, None)
    return sum(sizes[t] for t in held | set(current.values()))


def _largest_layer(net):
    """Elements of the largest layer's bottoms and tops: the diffs one backward step holds at once."""
    return max((sum(_count(net, b) for b in set(net.bottom_names[n]) | set(net.top_names[n]))
                for n in net.layer_names), default=0)


def choose_batch_size(per_image_bytes, budget_mb, images=None, cap=MAX_AUTO_BATCH) -> int:
    """The largest batch of at most ``cap`` (and ``images``) images whose pass fits ``budget_mb``.

    Args:
        per_image_bytes: Bytes one image takes in the pass (``pass_bytes_per_image``).
        budget_mb: The budget in MiB.
        images: Images in the sample, or None (the default): no cap from the sample.
        cap: The largest batch chosen (default ``MAX_AUTO_BATCH``).

    Returns:
        The batch size (int, at least 1 even when one image does not fit).
    """
    fitting = int(budget_mb * 2 ** 20 // max(1, int(per_image_bytes)))
    limit = cap if images is None else min(cap, int(images))
    return max(1, min(limit, fitting))


def resolve_batch_size(net, batch_size, budget_mb, images=None) -> int:
    """``batch_size`` when it is a number (an explicit batch size wins), else (``AUTO``) the batch
    ``choose_batch_size`` picks for ``net`` within ``budget_mb``; the choice is logged.

    Args:
        net: The net, built with at most ``MAX_AUTO_BATCH`` images per batch (``load.build_net``).
        batch_size: An int, or ``AUTO``.
        budget_mb: The memory budget in MiB (``--memory-limit``, default choices.MEMORY_LIMIT_MB).
        images: Images in the sample, or None: no cap from the sample.

    Returns:
        The batch size (int).
    """
    if batch_size != AUTO:
        return int(batch_size)
    per_image = pass_bytes_per_image(net)
    weights_mb = 2 * weight_bytes(net) / 2 ** 20
    batch_mb = max(budget_mb - weights_mb, budget_mb / 4)
    chosen = choose_batch_size(per_image, batch_mb, images)
    log.info("batch size %d: about %.0f MiB per image in a forward+backward pass, %.0f MiB for the batch "
             "(budget %d MiB less %.0f MiB of weights and their gradients, at least a quarter of it)",
             chosen, per_image / 2 ** 20, batch_mb, budget_mb, weights_mb)
    return chosen


def weight_bytes(net) -> int:
    """Bytes of the net's parameter blobs (float32), each shared blob once."""
    blobs = {id(blob): blob for blobs in net.params.values() for blob in blobs}
    return FLOAT_BYTES * sum(int(blob.count) for blob in blobs.values())


def build_batch(batch_size) -> int:
    """The batch to build the net with for ``batch_size`` (``MAX_AUTO_BATCH`` for ``AUTO``)."""
    return MAX_AUTO_BATCH if batch_size == AUTO else int(batch_size)

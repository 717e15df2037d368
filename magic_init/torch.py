"""Data-dependent initialization of PyTorch models (Krähenbühl et al., ICLR 2016, §3), in place.

::

    import magic_init.torch as mt
    report = mt.initialize(model, images, init="kmeans")     # Algorithm 1, then Algorithm 2
    report = mt.rescale(pretrained, loader)                   # Algorithm 2 only, function kept (§4.3)
    stats = mt.measure(model, loader)                         # per-layer activations and change rates

``model`` is a ``torch.nn.Module`` that ``torch.fx`` can trace, on the CPU or a CUDA device (its
parameters are changed in place there). ``data`` is one tensor of inputs (N, ...) or an iterable of
batches (a DataLoader): each batch a tensor, a dict ``{input name: tensor}``, or a tuple/list whose
first element is the input (``(images, labels)``). The batches are kept in memory up to
``batch_store.DEFAULT_MEMORY_MB`` and in temporary files beyond it, so memory does not grow with the
sample. The model is traced by ``magic_init.adapters.torch_fx`` and runs through the same algorithm,
options and reports as a Caffe net (``magic_init.algorithm``): the layers, the scale rules and
what is held are described there.
"""
from __future__ import annotations

import contextlib
import itertools

import numpy as np
import torch

from magic_init import algorithm, measure_stat
from magic_init.adapters.torch_fx import TorchNet
from magic_init.batch_store import BatchStore
from magic_init.errors import MagicInitError

__all__ = ["initialize", "rescale", "measure", "input_batches", "traced"]

#: Images per batch when ``data`` is one tensor.
DEFAULT_BATCH = 16


def initialize(model, data, init="kmeans", batch_size=DEFAULT_BATCH, num_images=None, **options):
    """Algorithm 1 (``init`` then per-channel normalization to mean β, unit variance) on every
    Conv/ConvTranspose/Linear layer, then Algorithm 2 (equal change rates), in place.

    Args:
        model: a traceable ``torch.nn.Module``; its affine layers' weights and biases are overwritten.
        data: a tensor (N, ...) or an iterable of batches (see the module docstring).
        init: "kmeans" (the default), "gaussian", "pca", "zca" or "rand" (``algorithm.INIT_KINDS``).
        batch_size: images per batch when ``data`` is one tensor (default 16); an iterable keeps its own.
        num_images: use the data's first that many images only (None, the default: all; with a
            DataLoader over a whole training set, pass e.g. 160, the paper's and the CLI's sample size).
        options: ``magic_init.algorithm.initialize``'s (``beta``, ``between_layer``, ``alpha``, ``seed``,
            ``layers`` (layer names as ``traced(model).layer_names`` gives them), ``normalize``, ...).

    Returns:
        The algorithm's report dict (``"WithinLayer"``, ``"BetweenLayer"``, ``"seconds"``).
    """
    with traced(model, data, batch_size, num_images) as (net, sample):
        return algorithm.initialize(net, sample, init=init, **options)


def rescale(model, data, batch_size=DEFAULT_BATCH, num_images=None, **options):
    """Algorithm 2 only, keeping the model's function up to one positive factor on its output
    (paper §4.3; ``exact=True``): every layer then learns at the same rate. Per output channel
    (``factors="channel"``, the default) or per layer (``factors="layer"``).

    Args:
        model: a traceable ``torch.nn.Module`` (pretrained); its affine layers are rescaled in place.
        data: a tensor (N, ...) or an iterable of batches (see the module docstring).
        batch_size: images per batch when ``data`` is one tensor (default 16).
        num_images: use the data's first that many images only (None, the default: all; with a
            DataLoader over a whole training set, pass e.g. 160, the paper's and the CLI's sample size).
        options: ``magic_init.algorithm.rescale``'s (``alpha``, ``rounds``, ``factors``, ``exact``, ...).

    Returns:
        The algorithm's report dict (``"BetweenLayer"``: ``scale``, ``held``, ``output_scale``, ...).
    """
    with traced(model, data, batch_size, num_images) as (net, sample):
        return algorithm.rescale(net, sample, **options)


def measure(model, data, batch_size=DEFAULT_BATCH, num_images=None, **options):
    """Per-layer activation statistics and change rates (paper Fig. 1); the model is not changed.

    Args:
        model: a traceable ``torch.nn.Module``.
        data: a tensor (N, ...) or an iterable of batches (see the module docstring).
        batch_size: images per batch when ``data`` is one tensor (default 16).
        num_images: use the data's first that many images only (None, the default: all; with a
            DataLoader over a whole training set, pass e.g. 160, the paper's and the CLI's sample size).
        options: ``magic_init.measure_stat.measure``'s (``seed``, ``rate_dropout``, ``progress``).

    Returns:
        ``{"layers": [...], "summary": {...}, "images": N}`` as ``measure_stat.measure``.
    """
    with traced(model, data, batch_size, num_images, write=False) as (net, sample):
        return measure_stat.measure(net, sample, **options)


@contextlib.contextmanager
def traced(model, data, batch_size=DEFAULT_BATCH, num_images=None, write=True):
    """``(TorchNet, BatchStore)`` for ``model`` and ``data``; on leaving, the parameters are written
    back (``write``, only when the body succeeded) and the model gets back its training flag and
    ``requires_grad``. With ``write``, when the body raises, the parameters get back their values
    from before (a copy of them is kept while the body runs).

    Args:
        model: a traceable ``torch.nn.Module``.
        data: a tensor (N, ...) or an iterable of batches (see the module docstring).
        batch_size: images per batch when ``data`` is one tensor.
        num_images: the data's first that many images only (None: all).
        write: copy the net's parameter blobs into the model on success (default True).
    """
    if not isinstance(model, torch.nn.Module):
        raise MagicInitError("expected a torch.nn.Module, got %s" % type(model).__name__)
    batches = iter(input_batches(data, batch_size, num_images))
    first = next(batches, None)
    if first is None:
        raise MagicInitError("the data holds no batch")
    net = TorchNet(model, {k: torch.tensor(v) for k, v in first.items()} if isinstance(first, dict)
                   else torch.tensor(first))                 # a copy: the batch may be read-only (np.load's mmap)
    store = BatchStore()
    saved = [(p, p.detach().clone()) for p in model.parameters()] if write else []      # measure writes nothing
    try:
        for batch in itertools.chain([first], batches):
            store.append(batch if isinstance(batch, dict) else {net.inputs[0]: batch})
        yield net, store
        if write:
            net.write_back()
    except BaseException:
        with torch.no_grad():                     # a failed run leaves the model as it was
            for p, value in saved:
                p.copy_(value)
        raise
    finally:
        net.close()
        store.close()


def input_batches(data, batch_size=DEFAULT_BATCH, num_images=None):
    """float32 numpy batches from a tensor or an iterable of batches, one at a time.

    Args:
        data: a tensor/array (N, ...), cut into ``batch_size`` images; or an iterable of batches, each
            a tensor, a dict ``{input: tensor}`` or a tuple/list whose first element is the input.
        batch_size: images per batch for a tensor (default 16).
        num_images: stop after that many images, the last batch cut (None, the default: all).

    Yields:
        An array (N, ...) or a dict ``{input: array}`` per batch.
    """
    if isinstance(data, (torch.Tensor, np.ndarray)):
        whole, size = data, int(batch_size)
        data = (whole[i:i + size] for i in range(0, len(whole), size))
    left = float("inf") if num_images is None else int(num_images)
    for batch in data:
        if left <= 0:
            return
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if isinstance(batch, dict):
            batch = {k: _array(v[:left] if left < len(v) else v) for k, v in batch.items()}
            left -= len(next(iter(batch.values())))
        else:
            batch = _array(batch[:left] if left < len(batch) else batch)
            left -= len(batch)
        yield batch


def _array(value):
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(value, dtype=np.float32)

"""``magic_init torch``: initialize or rescale a PyTorch model built by a factory and write its state_dict.

The model comes from ``package.module:callable`` (called without arguments; the current folder is
importable, as with ``python -m``), optionally loaded from a checkpoint (a state_dict, or a dict
holding one under ``"state_dict"`` or ``"model"``). Without a checkpoint every affine layer is
initialized (``magic_init.torch.initialize``); with one the model is rescaled keeping its function
(``magic_init.torch.rescale``, paper §4.3). The sample is a tensor file (``.npy``, or ``.pt`` with a
tensor or a tuple whose first element is one) or images (``data.rgb``). The state_dict is written
atomically, and never with a non-finite value or an affine weight left all zero.
"""
from __future__ import annotations

import importlib
import os
import sys

import numpy as np

from magic_init.errors import DataError, MagicInitError, ModelFileError, first_line
from magic_init.weight_guard import check_finite, check_no_zero_affine

TENSOR_SUFFIXES = (".npy", ".pt", ".pth")


def load_factory(spec):
    """The module ``package.module:callable`` returns.

    Args:
        spec: ``package.module:callable``.

    Returns:
        The ``torch.nn.Module``; MagicInitError (one line) when the spec, the import or the call fails.
    """
    import torch

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise MagicInitError("FACTORY %r: expected package.module:callable" % spec)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:                  # the user's module: any exception it raises
        raise MagicInitError("FACTORY %r: cannot import %s: %s: %s"
                             % (spec, module_name, type(error).__name__, error)) from None
    factory = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise MagicInitError("FACTORY %r: %s has no callable %r" % (spec, module_name, attribute))
    try:
        model = factory()
    except Exception as error:
        raise MagicInitError("FACTORY %r: calling it failed: %s: %s" % (spec, type(error).__name__, error)) from None
    if not isinstance(model, torch.nn.Module):
        raise MagicInitError("FACTORY %r returned %s, not a torch.nn.Module" % (spec, type(model).__name__))
    return model


def load_checkpoint(path, model):
    """Load a state_dict (or a dict holding one under "state_dict" or "model") into ``model``, strictly.

    Raises:
        ModelFileError: the file cannot be read, holds no state_dict, or does not fit the model (one line).
    """
    import torch

    state = _torch_load(path, ModelFileError, "a PyTorch checkpoint")
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError("%s: holds no state_dict of tensors" % path)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ModelFileError("%s: does not fit the model: %s" % (path, " ".join(str(error).split()))) from None


def read_tensor_file(path, num_images, seed=0):
    """The sample from a tensor file: at most ``num_images`` rows, chosen as the image sample is.

    Args:
        path: ``.npy`` (read memory-mapped) or ``.pt``/``.pth`` (a tensor, or a tuple/list whose first
            element is one).
        num_images: rows wanted; a file with more gives a seeded random choice, in file order.
        seed: seed of that choice.

    Returns:
        An (N, ...) float32-convertible array.
    """
    import torch

    if path.endswith(".npy"):
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError("%s: not a .npy array (%s)" % (path, error)) from None
    else:
        data = _torch_load(path, DataError, "a tensor file")
        if isinstance(data, (tuple, list)) and data:
            data = data[0]
        if not isinstance(data, torch.Tensor):
            raise DataError("%s: holds %s, not a tensor (N, ...)" % (path, type(data).__name__))
        data = data.numpy()
    if data.ndim < 2 or not len(data):
        raise DataError("%s: expected a tensor (N, ...) of N >= 1 inputs, got shape %s" % (path, data.shape))
    if len(data) > num_images:
        data = data[np.sort(np.random.RandomState(seed).permutation(len(data))[:num_images])]
    return data


def check_state(model, affine, path, allowed=()):
    """Refuse to write a non-finite value or an affine weight that is all zero (``weight_guard``).

    Args:
        model: the module about to be saved.
        affine: ``{layer: (module type, qualified weight name)}`` of the affine layers.
        path: the output, for the message.
        allowed: layers that may stay all zero (the checkpoint's were).
    """
    import torch

    state = {name: [_numpy(tensor.detach().cpu(), torch)] for name, tensor in model.state_dict().items()
             if tensor.is_floating_point()}
    check_finite(state, "refusing to write %s" % path, label=lambda name, index: "'%s'" % name)
    check_no_zero_affine(path, {layer: (kind, state[weight][0]) for layer, (kind, weight) in affine.items()},
                         allowed)


def _numpy(tensor, torch):
    """A CPU tensor as numpy; half and bfloat16 (which numpy lacks) widened to float32, others as they are."""
    return (tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor).numpy()


def save_state_dict(path, model):
    """``torch.save(model.state_dict())`` to ``path`` atomically (``io.atomic.atomic_write``)."""
    import torch

    from magic_init.io.atomic import atomic_write

    with atomic_write(path) as f:
        torch.save(model.state_dict(), f)


def _torch_load(path, error_class, what):
    """``torch.load`` of tensors only (``weights_only``); ``error_class`` (one line) when it fails."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error_class("%s: no such file" % path) from None
    except Exception as error:                  # torch's unpickling errors have no common class
        raise error_class("%s: not %s (%s)" % (path, what, first_line(error))) from None


def sample_source(data, num_images, seed, batch_size, size=None, mean=None, std=None, root=None, gray=False):
    """The sample: an array from a tensor file, or a generator of image batches (``data.rgb``).

    Raises:
        DataError: images without ``size`` (a model has no input shape to read it from).
    """
    from magic_init.data import rgb

    if data.endswith(TENSOR_SUFFIXES):
        return read_tensor_file(data, num_images, seed)
    if size is None:
        raise DataError("--data %s: images need --size H[,W] (the model's input size)" % data)
    return rgb.rgb_batches(data, size, num_images, rgb.IMAGENET_MEAN_RGB if mean is None else mean,
                           rgb.IMAGENET_STD_RGB if std is None else std, seed, batch_size, root, gray)


def run(factory, output, data, checkpoint=None, device="cpu", batch_size=16, num_images=160, seed=0, size=None,
        mean=None, std=None, root=None, gray=False, progress=False, **options):
    """Build the model, load ``checkpoint``, run the algorithm on the sample and write ``output``.

    Args:
        factory: ``package.module:callable``.
        output: the state_dict file to write.
        data: the sample (``sample_source``).
        checkpoint: a state_dict to start from; then the model is rescaled (its function kept).
        device: where the model runs ("cpu", "cuda", "cuda:N").
        options: ``algorithm.build_passes``' (``init``, ``beta``, ``alpha``, ``rounds``, ``factors``, ...).

    Returns:
        The algorithm's report.
    """
    from magic_init import torch as mt
    from magic_init.algorithm import build_passes, run_passes

    rescaling = bool(checkpoint)
    if rescaling and not options.get("between_layer", True):
        raise MagicInitError("nothing to do: --checkpoint rescales (Algorithm 2), and --no-between-layer turns it off")
    model = load_factory(factory)
    if checkpoint:
        load_checkpoint(checkpoint, model)
    model.to(device)
    sample = sample_source(data, num_images, seed, batch_size, size, mean, std, root, gray)
    passes = build_passes(within_layer=not rescaling, exact=rescaling, seed=seed, **options)
    with mt.traced(model, sample, batch_size) as (net, store):
        affine = {net.layer_names[i]: (net.layer_types[i], net.parameter_names[net.layer_names[i]][0])
                  for i in net.description.affine_layers()}
        zero = {layer for layer, (_, weight) in affine.items() if not model.get_parameter(weight).any()}
        report = run_passes(net, store, passes, batch_size=batch_size, progress=progress)
    check_state(model, affine, output, allowed=zero if rescaling else ())
    save_state_dict(output, model)
    return report

"""``Blob``: a named array pair (data, diff) as pycaffe shows it, backed by torch tensors.

The engine reads and writes tensors (``tensor()``/``set_tensor()``, ``diff_tensor()``/
``set_diff_tensor()``); users read and write numpy arrays (``.data``/``.diff``).

* CPU: ``.data`` is ``tensor.numpy()``, the same memory, so writes in place reach the engine.
* CUDA: a host mirror is kept the way Caffe's SyncedMemory does it. Reading ``.data`` copies the
  device tensor to the host (once per change) and marks the host side as possibly written
  (pycaffe's ``.data`` is ``mutable_cpu_data``); the next ``tensor()`` pushes the host copy back
  to the device first.

Layers produce new tensors (they never modify their bottoms in place), so an array taken from
``.data`` before a ``forward()`` still holds the old values afterwards; read ``.data`` again.
Parameter blobs keep one tensor for their whole life: their arrays stay valid.
"""
from __future__ import annotations

import numpy as np
import torch

_DEVICE, _HOST, _SYNCED = "device", "host", "synced"


class _Mirrored:
    """One tensor and, on CUDA, its host mirror with SyncedMemory's head state."""

    __slots__ = ("tensor", "host", "head")

    def __init__(self, tensor):
        self.tensor = tensor
        self.host = None
        self.head = _DEVICE

    def device_tensor(self):
        if self.head == _HOST:
            self.tensor.copy_(torch.from_numpy(self.host), non_blocking=False)
            self.head = _SYNCED
        return self.tensor

    def host_array(self):
        if self.tensor.device.type == "cpu":
            return self.tensor.numpy()
        if self.host is None:
            self.host = self.tensor.cpu().numpy()
        elif self.head == _DEVICE:                # refresh the same host buffer, as Caffe does
            torch.from_numpy(self.host).copy_(self.tensor)
        self.head = _HOST
        return self.host


class Blob:
    """A named (data, diff) pair with pycaffe's ``Blob`` interface: ``data``, ``diff``,
    ``shape``, ``count``, ``num``/``channels``/``height``/``width``, ``reshape(*shape)``."""

    def __init__(self, shape, device="cpu", name=""):
        self.name = name
        self._device = torch.device(device)
        self._shape = tuple(int(d) for d in shape)
        self._data_mirror = None          # allocated on first use, like Caffe's SyncedMemory
        self._diff = None

    @property
    def _data(self):
        if self._data_mirror is None:
            self._data_mirror = _Mirrored(self._zeros(self._shape))
        return self._data_mirror

    def _zeros(self, shape):
        return torch.zeros(tuple(int(d) for d in shape), dtype=torch.float32, device=self._device)

    # ------------------------------------------------------------------ user side (numpy)
    @property
    def data(self) -> np.ndarray:
        return self._data.host_array()

    @data.setter
    def data(self, value):
        self.data[...] = value

    @property
    def diff(self) -> np.ndarray:
        return self._diff_mirror().host_array()

    @diff.setter
    def diff(self, value):
        self.diff[...] = value

    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def count(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64))

    def _legacy_axis(self, axis):
        shape = self.shape
        return shape[axis] if axis < len(shape) else 1

    num = property(lambda self: self._legacy_axis(0))
    channels = property(lambda self: self._legacy_axis(1))
    height = property(lambda self: self._legacy_axis(2))
    width = property(lambda self: self._legacy_axis(3))

    def reshape(self, *shape) -> None:
        """Give the blob a new shape (zero-filled when the shape changes), like ``Blob::Reshape``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(d) for d in shape)
        if shape != self._shape:
            self._shape = shape
            self._data_mirror = None
            self._diff = None

    # ------------------------------------------------------------------ engine side (torch)
    def tensor(self) -> torch.Tensor:
        """The data tensor on the engine's device, synced from the host if needed."""
        return self._data.device_tensor()

    def set_tensor(self, tensor) -> None:
        """Make ``tensor`` (a layer's output) this blob's data; the host mirror goes stale."""
        self._data_mirror = _Mirrored(tensor.detach().contiguous())
        self._shape = tuple(tensor.shape)

    def diff_tensor(self) -> torch.Tensor:
        return self._diff_mirror().device_tensor()

    def set_diff_tensor(self, tensor) -> None:
        self._diff = _Mirrored(tensor.detach().contiguous())

    def _diff_mirror(self):
        if self._diff is None or tuple(self._diff.tensor.shape) != self.shape:
            self._diff = _Mirrored(self._zeros(self._shape))
        return self._diff

    def accumulate_diff(self, grad) -> None:
        """``diff += grad`` in place (parameter diffs accumulate until cleared, as in Caffe)."""
        self.diff_for_update().add_(grad)

    def diff_for_update(self) -> torch.Tensor:
        """The diff tensor, for the engine to update in place (the host mirror goes stale)."""
        tensor = self.diff_tensor()
        self._diff.head = _DEVICE
        return tensor

    def copy_data_(self, tensor) -> None:
        """Overwrite the data in place (keeps the tensor and arrays already handed out)."""
        self.tensor().copy_(tensor)
        self._data.head = _DEVICE

    def drop_data(self) -> None:
        """Free the data (the engine's ``Net.releasing``); it reads as zeros afterwards."""
        self._data_mirror = None

    def drop_diff(self) -> None:
        """Free the diff (the engine's ``Net.releasing``); it reads as zeros afterwards."""
        self._diff = None

    def zero_diff(self) -> None:
        if self._diff is not None:
            self._diff.device_tensor().zero_()
            self._diff.head = _DEVICE

    def __repr__(self):
        return "Blob(%r, shape=%s)" % (self.name, self.shape)

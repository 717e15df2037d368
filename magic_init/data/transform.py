"""Caffe's ``DataTransformer`` (+ ImageData's resize) for one decoded image: HWC -> CHW float32.

Order, as ``ImageDataLayer::load_batch`` then ``DataTransformer::Transform(cv::Mat)``:

1. the image is BGR (or 1-channel gray), uint8, HWC (see ``images.py``);
2. resize to ``new_height x new_width`` when both are set, with OpenCV INTER_LINEAR (``resize.py``);
3. crop ``crop_size x crop_size``: centred in TEST (``h_off = (H - crop) // 2``), random in TRAIN;
4. ``out = (pixel - mean) * scale`` in float32, where ``mean`` is one value per channel (one
   ``mean_value`` is repeated over channels) or a ``mean_file`` image of the *uncropped* size, read at
   the crop offset (``mean[c, h_off + h, w_off + w]``);
5. mirror horizontally: TRAIN only, when ``mirror`` is set, with probability 1/2 (Caffe reads the
   mean at the unmirrored source position, so mirroring after the subtraction is the same thing).

Without a ``transform_param`` the tool uses the ImageNet convention of the original magic_init:
BGR, mean (104, 117, 123) (117 for gray), scale 1, resize to the net's input size (``Transform.imagenet``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from magic_init.data.paths import layer_path
from magic_init.data.resize import resize_linear
from magic_init.errors import DataError

IMAGENET_MEAN_BGR = (104.0, 117.0, 123.0)
IMAGENET_MEAN_GRAY = 117.0  # 0.114 * 104 + 0.587 * 117 + 0.299 * 123 = 117.3 (ITU-R 601 luma)


@dataclass(frozen=True)
class Transform:
    """Caffe TransformationParameter + ImageData resize/color settings, applied by ``__call__``."""

    resize: tuple | None = None     # (new_height, new_width) or None
    crop_size: int = 0
    mean: np.ndarray | None = None  # (C,) per-channel values or (C, H, W) mean image
    scale: float = 1.0
    mirror: bool = False
    phase: str = "test"
    is_color: bool = True

    @classmethod
    def from_proto(cls, param, resize=None, is_color=True, phase="test", base_dir=None) -> "Transform":
        """Build from a ``caffe_pb2.TransformationParameter`` (``mean_file`` relative to ``base_dir``)."""
        if param.HasField("mean_file") and len(param.mean_value):
            raise DataError("transform_param: cannot specify mean_file and mean_value at the same time")
        mean = None
        if param.HasField("mean_file"):
            mean = read_mean_image(layer_path(param.mean_file, base_dir))
        elif len(param.mean_value):
            mean = np.array(param.mean_value, dtype=np.float32)
        return cls(resize=_size_or_none(resize), crop_size=int(param.crop_size), mean=mean,
                   scale=float(np.float32(param.scale)), mirror=bool(param.mirror), phase=phase,
                   is_color=is_color)

    @classmethod
    def imagenet(cls, size=None, is_color=True) -> "Transform":
        """Caffe's ImageNet convention: BGR, mean (104, 117, 123), scale 1, resize to ``size`` (H, W).

        Gray input (``is_color`` false) subtracts the luma of that mean, 117.
        """
        mean = IMAGENET_MEAN_BGR if is_color else (IMAGENET_MEAN_GRAY,)
        return cls(resize=_size_or_none(size), mean=np.array(mean, dtype=np.float32), is_color=is_color)

    def with_options(self, mean=None, scale=None, size=None) -> "Transform":
        """Override mean (values, or a .binaryproto path), scale and resize size (H, W) where given."""
        changes = {}
        if mean is not None:
            changes["mean"] = (read_mean_image(mean) if isinstance(mean, (str, os.PathLike))
                               else np.asarray(mean, dtype=np.float32).reshape(-1))
        if scale is not None:
            changes["scale"] = float(np.float32(scale))
        if size is not None:
            changes["resize"] = _size_or_none(size)
        return replace(self, **changes)

    def output_shape(self, image_shape) -> tuple:
        """(C, H, W) produced for an (H, W, C) input image."""
        h, w, c = image_shape
        if self.resize:
            h, w = self.resize
        if self.crop_size:
            h = w = self.crop_size
        return c, h, w

    def __call__(self, image: np.ndarray, rng: np.random.RandomState | None = None,
                 name: str = "image") -> np.ndarray:
        """Transform one HWC image (uint8 or float) into a CHW float32 array: ``resized`` then ``finish``."""
        return self.finish(self.resized(image), rng, name)

    def resized(self, image: np.ndarray) -> np.ndarray:
        """The image at the transform's resize size (unchanged without one): the transform's first
        step, which draws nothing and depends on the image alone (it may run on any thread)."""
        if self.resize and image.shape[:2] != tuple(self.resize):
            return resize_linear(image, *self.resize)
        return image

    def finish(self, image: np.ndarray, rng: np.random.RandomState | None = None,
               name: str = "image") -> np.ndarray:
        """The rest of the transform on a ``resized`` image: crop (random in TRAIN phase, from ``rng``),
        mean, scale, mirror; a CHW float32 array."""
        h_off, w_off = self._crop_offsets(image.shape[:2], rng, name)
        size_h, size_w = (self.crop_size,) * 2 if self.crop_size else image.shape[:2]
        out = image[h_off:h_off + size_h, w_off:w_off + size_w].transpose(2, 0, 1).astype(np.float32)
        if self.mean is not None:
            out = out - self._mean_at(image.shape, h_off, w_off, out.shape, name)
        if self.scale != 1.0:
            out = out * np.float32(self.scale)
        if self.phase == "train" and self.mirror and _coin(rng):
            out = out[:, :, ::-1]  # after the mean: Caffe reads the mean at the unmirrored position
        return np.ascontiguousarray(out, dtype=np.float32)

    def _crop_offsets(self, hw, rng, name):
        """Caffe: TEST centres the crop (integer division), TRAIN draws offsets uniformly."""
        if not self.crop_size:
            return 0, 0
        h, w = hw
        if h < self.crop_size or w < self.crop_size:
            raise DataError("%s: image %dx%d is smaller than crop_size %d" % (name, h, w, self.crop_size))
        if self.phase == "train":
            rng = rng or np.random
            return rng.randint(h - self.crop_size + 1), rng.randint(w - self.crop_size + 1)
        return (h - self.crop_size) // 2, (w - self.crop_size) // 2

    def _mean_at(self, image_shape, h_off, w_off, out_shape, name):
        """The mean to subtract, broadcastable to ``out_shape`` (C, h, w)."""
        channels = out_shape[0]
        if self.mean.ndim == 1:
            if len(self.mean) not in (1, channels):
                raise DataError("%s: %d mean values for a %d-channel image" % (name, len(self.mean), channels))
            return np.broadcast_to(self.mean, (channels,))[:, None, None]
        if self.mean.shape != (channels,) + tuple(image_shape[:2]):
            raise DataError("%s: mean_file shape %s does not match the image (%d, %d, %d) before cropping"
                            % ((name, self.mean.shape, channels) + tuple(image_shape[:2])))
        return self.mean[:, h_off:h_off + out_shape[1], w_off:w_off + out_shape[2]]


def read_mean_image(path) -> np.ndarray:
    """Read a mean ``.binaryproto`` as (C, H, W) float32: ``magic_init.io.read_mean_file``, the one
    mean reader, with a missing file named as a DataError.

    Args:
        path: The mean file (str or os.PathLike).

    Returns:
        The (C, H, W) float32 mean image; DataError when the file is missing, ModelFileError when it
        is not a mean blob.
    """
    from magic_init.io import read_mean_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError("%s: mean file not found" % path)
    return np.asarray(read_mean_file(path), dtype=np.float32)


def _size_or_none(size):
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(v) for v in size)
    return (h, w) if h > 0 and w > 0 else None


def _coin(rng) -> bool:
    return bool((rng or np.random).randint(2))

"""The sample as PyTorch models usually take it: RGB, pixels / 255, normalized per channel.

Images are read and resized as on the Caffe path (``data.sources``, ``data.sample.SampleReader``, the
same visiting order for a seed), then ``x = (rgb / 255 - mean) / std`` per channel, float32 (N, C, H, W).
Gray images (``gray=True``) give one channel with the first mean and std.
"""
from __future__ import annotations

import numpy as np

from magic_init.data.sample import SampleReader
from magic_init.data.sources import open_source
from magic_init.data.transform import Transform
from magic_init.errors import DataError

#: torchvision's ImageNet normalization (RGB, pixels in [0, 1]).
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def rgb_batches(spec, size, num_images=160, mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB, seed=0,
                batch_size=16, root=None, gray=False):
    """Normalized float32 batches of a sample of images.

    Args:
        spec: an image list, folder, file, glob or LMDB (``data.sources.open_source``).
        size: (H, W) every image is resized to.
        num_images: images in the sample, at most (default 160).
        mean, std: per-channel normalization of pixels / 255 (RGB order; default torchvision's ImageNet).
        seed: seed of the visiting order (default 0).
        batch_size: images per batch (default 16).
        root: folder that relative list paths are resolved against.
        gray: read one gray channel instead of RGB.

    Yields:
        float32 arrays (n, C, H, W).
    """
    channels = 1 if gray else 3
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)[:channels]
    std = np.asarray(std, dtype=np.float32).reshape(-1)[:channels]
    if np.any(~np.isfinite(std)) or np.any(std <= 0):
        raise DataError("--std must be positive, got %s" % ",".join("%g" % v for v in std))
    reader = SampleReader(open_source(spec, root, is_color=not gray), Transform(resize=tuple(size), scale=1 / 255.0,
                                                                               is_color=not gray), num_images, seed)
    for batch in reader.batches(batch_size):
        data = batch.data if gray else batch.data[:, ::-1]           # Caffe reads BGR
        yield np.ascontiguousarray((data - mean[:, None, None]) / std[:, None, None], dtype=np.float32)

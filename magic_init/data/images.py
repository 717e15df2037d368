"""Decode images the way Caffe's ``ReadImageToCVMat`` / ``DecodeDatumToCVMat`` do: HWC uint8, BGR.

Caffe reads with OpenCV (``cv::imread(path, IMREAD_COLOR | IMREAD_GRAYSCALE)``); we read with PIL and
reorder RGB -> BGR. Two OpenCV behaviours are reproduced on purpose:

- EXIF orientation is applied (OpenCV >= 3.1 rotates JPEGs on ``imread``/``imdecode``).
- Grayscale JPEGs are decoded straight to luma (libjpeg's ``JCS_GRAYSCALE`` output, i.e. the Y
  channel) as OpenCV does; other formats use PIL's ITU-R 601-2 conversion, which can differ from
  OpenCV's ``cvtColor`` by 1 grey level on some pixels.
"""
from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp")


class UnreadableImage(Exception):
    """Internal: one image could not be decoded (the caller logs, skips and counts it)."""


def read_image(path: str, is_color: bool = True) -> np.ndarray:
    """Read an image file as Caffe does: (H, W, 3) BGR uint8, or (H, W, 1) when ``is_color`` is false."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UnreadableImage("cannot open: %s" % (e.strerror or e)) from None
    return decode_image(data, is_color)


def decode_image(data: bytes, is_color: bool | None = True) -> np.ndarray:
    """Decode encoded image bytes to HWC uint8 BGR.

    ``is_color`` True -> 3 channels, False -> 1 channel (grayscale), None -> the file's own channel
    count (Caffe's ``DecodeDatumToCVMatNative``, ``imdecode(..., IMREAD_UNCHANGED)``: 1, 3 or 4 (BGRA)).
    """
    try:
        img = Image.open(io.BytesIO(data))
        if is_color is False and img.format == "JPEG" and img.mode in ("RGB", "YCbCr"):
            img.draft("L", img.size)  # libjpeg's own grayscale output, as OpenCV's IMREAD_GRAYSCALE
        img.load()
        img = ImageOps.exif_transpose(img)
    except Exception as e:  # PIL raises many types for corrupt data
        raise UnreadableImage("cannot decode: %s" % e) from None
    return _to_bgr_array(img, is_color)


def _to_bgr_array(img: Image.Image, is_color: bool | None) -> np.ndarray:
    """PIL image -> HWC uint8 with channels in OpenCV order (BGR / BGRA / gray)."""
    if is_color is None:
        mode = {"L": "L", "1": "L", "LA": "RGBA", "RGBA": "RGBA", "P": "RGBA" if "transparency" in img.info
                else "RGB"}.get(img.mode, "RGB")
    else:
        mode = "RGB" if is_color else "L"
    if img.mode in ("I;16", "I;16B", "I") and mode == "L":
        img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8))
    arr = np.asarray(img.convert(mode), dtype=np.uint8)
    if arr.ndim == 2:
        return arr[:, :, None].copy()
    return np.ascontiguousarray(arr[:, :, [2, 1, 0, 3][:arr.shape[2]]])

"""Decode images the way Caffe's ``ReadImageToCVMat`` / ``DecodeDatumToCVMat`` do: HWC uint8, BGR.

Caffe reads with OpenCV (``cv::imread(path, IMREAD_COLOR | IMREAD_GRAYSCALE)``); we read with PIL and
reorder RGB -> BGR. Three OpenCV behaviours are reproduced on purpose:

- EXIF orientation is applied (OpenCV >= 3.1 rotates JPEGs on ``imread``/``imdecode``).
- Grayscale JPEGs are decoded straight to luma (libjpeg's ``JCS_GRAYSCALE`` output, i.e. the Y
  channel) as OpenCV does; other formats use PIL's ITU-R 601-2 conversion, which can differ from
  OpenCV's ``cvtColor`` (or libpng's ``png_set_rgb_to_gray``) by 1 grey level on some pixels.
- 16-bit images become 8-bit by keeping the high byte (``value >> 8``, no rounding), as OpenCV's
  PNG decoder does with libpng's ``png_set_strip_16`` when asked for an 8-bit image.

Only regular files (or symlinks to them) are opened: a FIFO would block ``open()`` forever and a
device node could be read without end, so they are refused as unreadable before any ``open()``.
"""
from __future__ import annotations

import io
import logging
import os
import stat

import numpy as np
from PIL import Image, ImageOps

from magic_init.io.outputs import file_kind

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp")


class UnreadableImage(Exception):
    """Internal: one image could not be decoded (the caller logs, skips and counts it)."""


def read_image(path: str, is_color: bool = True) -> np.ndarray:
    """Read an image file as Caffe does: (H, W, 3) BGR uint8, or (H, W, 1) when ``is_color`` is false.

    Raises ``UnreadableImage`` for a path that is not a regular file, without opening it.
    """
    _check_regular_file(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UnreadableImage("cannot open: %s" % (e.strerror or e)) from None
    return decode_image(data, is_color)


def _check_regular_file(path: str) -> None:
    """Raise ``UnreadableImage`` unless ``path`` is a regular file (symlinks followed); opens nothing."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as e:      # ValueError: a NUL byte in the path
        raise UnreadableImage("cannot open: %s" % (getattr(e, "strerror", None) or e)) from None
    if not stat.S_ISREG(mode):
        raise UnreadableImage("not a regular file (%s)" % file_kind(mode))


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
    if img.mode in _WIDE_GRAY_MODES:
        img = _high_byte(img)
    if is_color is None:
        mode = {"L": "L", "1": "L", "LA": "RGBA", "RGBA": "RGBA", "P": "RGBA" if "transparency" in img.info
                else "RGB"}.get(img.mode, "RGB")
    else:
        mode = "RGB" if is_color else "L"
    arr = np.asarray(img.convert(mode), dtype=np.uint8)
    if arr.ndim == 2:
        return arr[:, :, None].copy()
    return np.ascontiguousarray(arr[:, :, [2, 1, 0, 3][:arr.shape[2]]])


# PIL's modes for 16-bit gray (PNG, TIFF, PGM) and for 32-bit integer gray (older PIL's 16-bit PNGs).
# PIL already keeps the high byte of 16-bit RGB(A) and gray+alpha PNGs.
_WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _high_byte(img: Image.Image) -> Image.Image:
    """16-bit gray -> 8-bit gray ("L") keeping the high byte, as libpng's ``png_set_strip_16``."""
    values = np.asarray(img, dtype=np.uint32) >> 8
    return Image.fromarray(np.minimum(values, 255).astype(np.uint8))

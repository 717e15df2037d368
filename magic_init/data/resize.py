"""OpenCV's ``cv::resize(..., INTER_LINEAR)`` re-implemented in numpy, as Caffe's ImageData layer uses it.

Why not PIL's bilinear: PIL's ``BILINEAR`` filter widens its support when it downsamples (it is an
antialiasing triangle filter over ``scale`` source pixels), while OpenCV always interpolates between the
two nearest source pixels.  On a 2x downscale they differ by tens of grey levels on textured photos.

OpenCV's rule (``resize.cpp``, ``resizeGeneric_``), per axis with ``scale = src / dst``:
``f = float((d + 0.5) * scale - 0.5)``, ``s = floor(f)``, ``a = f - s``; outside the image the index is
clamped and ``a = 0``. Coefficients ``(1 - a, a)`` are rounded to fixed point ``* 2048`` (short).
For uint8 images the horizontal pass is exact integer arithmetic (``S[s] * a0 + S[s+1] * a1``), and
the vertical pass combines two such rows. Its SIMD kernel (``VResizeLinearVec_32s8u``) rounds as
``((b0 * (r0 >> 4)) >> 16 + (b1 * (r1 >> 4)) >> 16 + 2) >> 2`` (the scalar C++ fallback,
``(b0 * r0 + b1 * r1 + 2^21) >> 22``, differs by 1 on about a third of the pixels; OpenCV 4.5 on x86
applies the SIMD rounding to whole rows). Along y the weights of out-of-image rows are not clamped.
Checked bit-exact against Caffe's ImageData layer (Debian OpenCV 4.5.1, tests/data). A 2x downscale on both axes
is done by OpenCV as INTER_AREA (mean of 2x2 blocks, rounded), so it is here too.
Float images use the same coefficients in float32, without fixed-point rounding.
"""
from __future__ import annotations

import numpy as np

_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


def resize_linear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an (H, W, C) image to (height, width, C) exactly as ``cv::resize(INTER_LINEAR)``."""
    src_h, src_w = img.shape[:2]
    if (src_h, src_w) == (height, width):
        return img.copy()
    if img.dtype == np.uint8 and src_h == 2 * height and src_w == 2 * width and img.shape[2] != 2:
        return _area_half(img)
    x0, x1, ax = _axis_coefficients(src_w, width)
    y0, y1, ay = _axis_coefficients(src_h, height, clamp_weights=False)
    if img.dtype != np.uint8:
        return _resize_float(img.astype(np.float32), x0, x1, ax, y0, y1, ay)
    src = img.astype(np.int32)
    ia = _fixed_point(ax)
    rows = src[:, x0, :] * ia[:, 0, None] + src[:, x1, :] * ia[:, 1, None]  # (H, width, C) int32
    ib = _fixed_point(ay)
    return _vertical_u8(rows[y0], rows[y1], ib)


def _axis_coefficients(src: int, dst: int, clamp_weights: bool = True):
    """Source indices (s, s+1) and float32 weights (1 - a, a) for each output index, OpenCV-style.

    Along x OpenCV moves out-of-image taps inside with ``a = 0`` (``clamp_weights``); along y it
    only clamps the row index and keeps the weights, so a border row is ``b0*r + b1*r``.
    """
    scale = 1.0 / (float(dst) / src)  # OpenCV: scale_x = 1. / inv_scale_x, inv_scale_x = dst / src
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    a = (f - s.astype(np.float32)).astype(np.float32)
    if clamp_weights:
        low, high = s < 0, s >= src - 1
        a[low], s[low] = 0, 0
        a[high], s[high] = 0, src - 1
    weights = np.stack([np.float32(1) - a, a], axis=1).astype(np.float32)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), weights


def _fixed_point(weights: np.ndarray) -> np.ndarray:
    """``saturate_cast<short>(w * 2048)``: round half to even, as cvRound."""
    return np.rint(weights * np.float32(_COEF_SCALE)).astype(np.int32)


def _vertical_u8(r0: np.ndarray, r1: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Combine two horizontally resized rows with the rounding of OpenCV's SIMD vertical kernel."""
    b0 = beta[:, 0, None, None].astype(np.int32)  # |b| <= 2048, r >> 4 <= 32640: fits int32
    b1 = beta[:, 1, None, None].astype(np.int32)
    out = (((b0 * (r0 >> 4)) >> 16) + ((b1 * (r1 >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def _area_half(img: np.ndarray) -> np.ndarray:
    """Exact 2x downscale, OpenCV's fast INTER_AREA path: (sum of the 2x2 block + 2) >> 2."""
    s = img.astype(np.int32)
    total = s[0::2, 0::2] + s[1::2, 0::2] + s[0::2, 1::2] + s[1::2, 1::2]
    return ((total + 2) >> 2).astype(np.uint8)


def _resize_float(img, x0, x1, ax, y0, y1, ay) -> np.ndarray:
    """Float path: same taps, float32 weights (OpenCV's ``HResizeLinear<float>`` / ``VResizeLinear``)."""
    rows = img[:, x0, :] * ax[:, 0, None] + img[:, x1, :] * ax[:, 1, None]
    return (rows[y0] * ay[:, 0, None, None] + rows[y1] * ay[:, 1, None, None]).astype(np.float32)

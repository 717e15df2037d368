"""16-bit PNGs decode as Caffe's ``cv::imread`` does: to 8 bits by keeping the high byte (value >> 8).

OpenCV's PNG decoder, asked for an 8-bit image, calls libpng's ``png_set_strip_16`` (truncation, not
rounding); an RGB image read as gray is first converted by libpng at 16 bits, then stripped. The
property tests need nothing; the last test takes its reference from real Caffe's ImageData layer.
"""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest

from magic_init.data import read_image_list
from magic_init.data.images import decode_image, read_image

CHANNELS_TO_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # gray, gray+alpha, RGB, RGBA


def write_png16(path, values):
    """Write a (H, W) or (H, W, C) array of 0..65535 as a 16-bit PNG (no filtering, no interlace)."""
    values = np.asarray(values, dtype=np.uint16)
    if values.ndim == 2:
        values = values[:, :, None]
    height, width, channels = values.shape
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in values)
    header = struct.pack(">IIBBBBB", width, height, 16, CHANNELS_TO_COLOR_TYPE[channels], 0, 0, 0)
    with open(str(path), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows))
                + _chunk(b"IEND", b""))
    return str(path)


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def gradient16():
    """Every high byte 0..255, each with low bytes 0x00, 0x80 and 0xFF: (16, 48) uint16."""
    high = np.arange(256, dtype=np.uint32).reshape(16, 16)
    return np.concatenate([high << 8, (high << 8) | 0x80, (high << 8) | 0xFF], axis=1).astype(np.uint16)


@pytest.mark.parametrize("is_color", [True, False, None], ids=["color", "gray", "native"])
def test_16bit_gray_png_keeps_the_high_byte(tmp_path, is_color):
    values = gradient16()
    image = decode_image(open(write_png16(tmp_path / "g16.png", values), "rb").read(), is_color)
    assert image.dtype == np.uint8 and image.shape == (16, 48, 3 if is_color else 1)
    for c in range(image.shape[2]):
        np.testing.assert_array_equal(image[:, :, c], values >> 8)
    assert (image == 255).sum() == (values >= 0xFF00).sum() * image.shape[2]  # 3 of 768 pixels


def test_16bit_rgb_and_rgba_png_keep_the_high_byte_in_bgr_order(tmp_path):
    rng = np.random.RandomState(0)
    for channels in (3, 4):
        values = rng.randint(0, 1 << 16, size=(9, 7, channels)).astype(np.uint16)
        image = read_image(write_png16(tmp_path / ("c%d.png" % channels), values))
        np.testing.assert_array_equal(image, values[:, :, [2, 1, 0]] >> 8)


def test_16bit_rgb_png_read_as_gray_is_within_one_level_of_libpng(tmp_path):
    """Gray from 16-bit RGB: libpng's rgb_to_gray (coefficients 9797, 19234, 3737 / 32768) at 16 bits,
    then the high byte. We convert the high bytes with PIL's weights instead: at most 1 level apart."""
    values = np.random.RandomState(1).randint(0, 1 << 16, size=(20, 30, 3)).astype(np.int64)
    libpng = ((9797 * values[..., 0] + 19234 * values[..., 1] + 3737 * values[..., 2] + 16384) >> 15) >> 8
    image = read_image(write_png16(tmp_path / "c.png", values), is_color=False)
    assert image.shape == (20, 30, 1)
    assert np.abs(image[:, :, 0].astype(np.int64) - libpng).max() <= 1


def test_16bit_pngs_match_caffe_image_data_layer(caffe_env):
    from test_data_vs_caffe import caffe_forward, image_data_layer
    host, inside = caffe_env.tmpdir()
    rng = np.random.RandomState(2)
    images = {"gray_gradient": gradient16(), "gray_random": rng.randint(0, 1 << 16, size=(16, 48)),
              "gray_alpha": rng.randint(0, 1 << 16, size=(16, 48, 2)),
              "rgb": rng.randint(0, 1 << 16, size=(16, 48, 3)), "rgba": rng.randint(0, 1 << 16, size=(16, 48, 4))}
    for name, values in images.items():
        write_png16(os.path.join(str(host), name + ".png"), values)
    with open(os.path.join(str(host), "list.txt"), "w") as f:
        f.writelines("%s.png %d\n" % (name, i) for i, name in enumerate(images))
    files = read_image_list(os.path.join(str(host), "list.txt"))
    for is_color in (True, False):
        expected = caffe_forward(caffe_env, image_data_layer(inside + "/list.txt", inside, is_color=is_color),
                                 len(images))
        for (want, _), (name, values), path in zip(expected, images.items(), files.paths):
            got = read_image(path, is_color).transpose(2, 0, 1)
            if name.startswith("gray"):
                gray = values if values.ndim == 2 else values[:, :, 0]
                np.testing.assert_array_equal(want, np.broadcast_to(gray >> 8, want.shape))
            if is_color or name.startswith("gray"):
                np.testing.assert_array_equal(got, want, err_msg="%s is_color=%s" % (name, is_color))
            else:
                assert np.abs(got - want).max() <= 1, name

"""Properties of the OpenCV INTER_LINEAR re-implementation (exactness vs Caffe: test_data_vs_caffe)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from magic_init.data import resize_linear
from magic_init.data.resize import _axis_coefficients


def noise(h, w, c=3, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, c)).astype(np.uint8)


def test_same_size_is_a_copy():
    img = noise(5, 7)
    out = resize_linear(img, 5, 7)
    np.testing.assert_array_equal(out, img)
    assert out is not img


def test_constant_image_stays_constant_up_and_down():
    img = np.full((13, 17, 3), 200, np.uint8)
    for size in [(5, 6), (40, 31), (13, 34)]:
        np.testing.assert_array_equal(resize_linear(img, *size), 200)


def test_exact_half_is_rounded_2x2_block_mean():
    img = noise(8, 10)
    blocks = img.astype(np.int32).reshape(4, 2, 5, 2, 3).sum(axis=(1, 3))
    np.testing.assert_array_equal(resize_linear(img, 4, 5), (blocks + 2) >> 2)


def test_coefficients_follow_half_pixel_centres_and_clamp_x():
    s0, s1, w = _axis_coefficients(4, 8)  # upscale 2x: f = (d + 0.5) / 2 - 0.5
    np.testing.assert_array_equal(s0, [0, 0, 0, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(s1, [1, 1, 1, 2, 2, 3, 3, 3])
    np.testing.assert_allclose(w[:, 1], [0, 0.25, 0.75, 0.25, 0.75, 0.25, 0.75, 0])


def test_differs_from_pil_bilinear_when_downscaling():
    """The reason not to use PIL: its bilinear filter averages over the whole footprint."""
    img = noise(64, 64, seed=1)
    ours = resize_linear(img, 21, 21).astype(int)
    pil = np.asarray(Image.fromarray(img).resize((21, 21), Image.BILINEAR)).astype(int)
    assert np.abs(ours - pil).max() > 20


def test_float_images_resize_in_float():
    img = noise(6, 9).astype(np.float32) / 7
    out = resize_linear(img, 12, 18)
    assert out.dtype == np.float32 and out.shape == (12, 18, 3)
    assert img.min() - 1e-6 <= out.min() and out.max() <= img.max() + 1e-6

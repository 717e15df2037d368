"""Per-channel sums against the float64 reductions they replace (properties, no reference values)."""
import numpy as np
import pytest

from magic_init.algorithm.channel_sums import channel_sums, channel_squares


@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 7, 6), (1, 3, 2, 2, 2)])
def test_sums_equal_float64_reductions_over_all_but_axis_1(shape):
    z = (np.random.default_rng(0).standard_normal(shape) * 3 + 5).astype(np.float32)
    axes = (0,) + tuple(range(2, z.ndim))
    wide = z.astype(np.float64)
    np.testing.assert_allclose(channel_sums(z), wide.sum(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(channel_squares(z), (wide * wide).sum(axis=axes), rtol=1e-12)
    assert channel_sums(z).dtype == np.float64 and channel_squares(z).shape == (shape[1],)


def test_float32_input_is_summed_in_float64():
    z = np.array([[[1e8, 1.0, -1e8]]], dtype=np.float32)    # in float32, 1e8 + 1 rounds back to 1e8
    assert np.float32(1e8) + np.float32(1.0) == np.float32(1e8)
    assert channel_sums(z)[0] == 1.0
    assert channel_squares(np.array([[[4096.0, 1.0]]], dtype=np.float32))[0] == 4096.0 ** 2 + 1


@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 7, 6), (1, 3, 2, 2, 2), (16, 8, 3025)])
def test_per_image_squares_are_the_float64_squares_within_float32_precision(shape):
    """Sums of squares from float32 per-image partial sums: positive terms, so within a few float32
    ulps of the float64 reduction, also over thousands of positions per image."""
    from magic_init.algorithm.channel_sums import channel_squares_per_image

    z = (np.random.default_rng(1).standard_normal(shape) * 3 + 5).astype(np.float32)
    axes = (0,) + tuple(range(2, z.ndim))
    wide = z.astype(np.float64)
    got = channel_squares_per_image(z)
    np.testing.assert_allclose(got, (wide * wide).sum(axis=axes), rtol=2e-6)
    assert got.dtype == np.float64 and got.shape == (shape[1],)

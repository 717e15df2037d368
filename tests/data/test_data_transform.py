"""Caffe DataTransformer rules (TEST/TRAIN), on synthetic images with hand-computed results."""
from __future__ import annotations

import numpy as np
import pytest

from magic_init.data import Transform, resize_linear
from magic_init.data.transform import read_mean_image
from magic_init.errors import DataError
from magic_init.proto import caffe_pb2


def ramp_image(h=6, w=8, c=3):
    """HWC uint8 with distinct values: v = 100*c + 10*h + w (wrapped to uint8)."""
    hh, ww, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    return ((100 * cc + 10 * hh + ww) % 256).astype(np.uint8)


def test_no_params_is_hwc_to_chw_float32():
    image = ramp_image()
    out = Transform()(image)
    assert out.dtype == np.float32 and out.shape == (3, 6, 8)
    np.testing.assert_array_equal(out, image.transpose(2, 0, 1))


def test_test_phase_crop_is_centred_with_integer_division():
    image = ramp_image(7, 10)
    out = Transform(crop_size=4)(image)
    # h_off = (7 - 4) // 2 = 1, w_off = (10 - 4) // 2 = 3
    np.testing.assert_array_equal(out, image[1:5, 3:7].transpose(2, 0, 1))


def test_mean_values_then_scale():
    image = ramp_image()
    out = Transform(mean=np.array([1, 2, 3], np.float32), scale=0.5)(image)
    expected = (image.transpose(2, 0, 1).astype(np.float32) - np.array([1, 2, 3], np.float32)[:, None, None]) * 0.5
    np.testing.assert_array_equal(out, expected)


def test_single_mean_value_is_repeated_over_channels():
    out = Transform(mean=np.array([10], np.float32))(ramp_image())
    np.testing.assert_array_equal(out, ramp_image().transpose(2, 0, 1).astype(np.float32) - 10)


def test_wrong_number_of_mean_values_names_the_image():
    with pytest.raises(DataError, match="cat.jpg: 2 mean values for a 3-channel image"):
        Transform(mean=np.array([1, 2], np.float32))(ramp_image(), name="cat.jpg")


def test_mean_image_is_read_at_the_crop_offset():
    image = ramp_image(6, 8)
    mean = np.arange(3 * 6 * 8, dtype=np.float32).reshape(3, 6, 8)
    out = Transform(crop_size=4, mean=mean)(image)
    # offsets (1, 2)
    expected = image[1:5, 2:6].transpose(2, 0, 1).astype(np.float32) - mean[:, 1:5, 2:6]
    np.testing.assert_array_equal(out, expected)


def test_mean_image_must_have_the_uncropped_size():
    with pytest.raises(DataError, match="mean_file shape"):
        Transform(crop_size=4, mean=np.zeros((3, 4, 4), np.float32))(ramp_image())


def test_crop_larger_than_image_is_an_error():
    with pytest.raises(DataError, match="x.png: image 6x8 is smaller than crop_size 7"):
        Transform(crop_size=7)(ramp_image(), name="x.png")


def test_resize_happens_before_crop():
    image = ramp_image(20, 30)
    out = Transform(resize=(10, 12), crop_size=6)(image)
    resized = resize_linear(image, 10, 12)
    np.testing.assert_array_equal(out, resized[2:8, 3:9].transpose(2, 0, 1))


def test_mirror_only_in_train_and_deterministic_for_a_seed():
    image = ramp_image()
    assert not any(np.array_equal(Transform(mirror=True)(image), image.transpose(2, 0, 1)[:, :, ::-1])
                   for _ in range(10))
    train = Transform(mirror=True, phase="train")
    np.testing.assert_array_equal(train(image, rng=np.random.RandomState(5)),
                                  train(image, rng=np.random.RandomState(5)))
    rng = np.random.RandomState(0)
    flips = [np.array_equal(train(image, rng=rng), image.transpose(2, 0, 1)[:, :, ::-1]) for _ in range(40)]
    assert 5 < sum(flips) < 35


def test_from_proto_reads_transform_param():
    param = caffe_pb2.TransformationParameter(crop_size=5, scale=0.017, mirror=True)
    param.mean_value.extend([104, 117, 123])
    t = Transform.from_proto(param, resize=(0, 0), is_color=False)
    assert t.crop_size == 5 and t.resize is None and t.mirror and not t.is_color
    assert t.scale == float(np.float32(0.017))
    np.testing.assert_array_equal(t.mean, [104, 117, 123])


def test_from_proto_refuses_mean_file_and_mean_value():
    param = caffe_pb2.TransformationParameter(mean_file="m.binaryproto")
    param.mean_value.append(1)
    with pytest.raises(DataError, match="mean_file and mean_value"):
        Transform.from_proto(param)


def test_imagenet_default_and_overrides():
    t = Transform.imagenet(size=(227, 227))
    assert t.resize == (227, 227) and t.scale == 1.0 and t.crop_size == 0
    np.testing.assert_array_equal(t.mean, [104, 117, 123])
    t2 = t.with_options(mean=[1.0], scale=2.0, size=64)
    assert t2.resize == (64, 64) and t2.scale == 2.0
    np.testing.assert_array_equal(t2.mean, [1.0])
    assert t.resize == (227, 227)  # unchanged
    assert t2.output_shape((300, 400, 3)) == (3, 64, 64)


def test_mean_binaryproto_legacy_4d_header(tmp_path):
    mean = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    blob = caffe_pb2.BlobProto(num=1, channels=2, height=3, width=4)
    blob.data.extend(mean.ravel().tolist())
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    np.testing.assert_array_equal(read_mean_image(str(path)), mean)
    with pytest.raises(DataError, match="mean file not found"):
        read_mean_image(str(tmp_path / "missing.binaryproto"))


def test_train_phase_crop_is_random_within_bounds_and_seeded():
    image = ramp_image(10, 12)
    train = Transform(crop_size=5, phase="train")
    rng = np.random.RandomState(0)
    windows = set()
    for _ in range(30):
        out = train(image, rng=rng)
        h_off, w_off = int(out[0, 0, 0]) // 10, int(out[0, 0, 0]) % 10  # v = 10*h + w on channel 0
        assert 0 <= h_off <= 5 and 0 <= w_off <= 7
        np.testing.assert_array_equal(out, image[h_off:h_off + 5, w_off:w_off + 5].transpose(2, 0, 1))
        windows.add((h_off, w_off))
    assert len(windows) > 5

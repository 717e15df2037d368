"""Sources: list files, folders, globs, LMDB, prototxt data layers, and open_source's choice."""
from __future__ import annotations

import contextlib
import os
import signal
import sys

import numpy as np
import pytest
from PIL import Image

from magic_init.data import (ImageFiles, LmdbDatums, find_images, glob_images, open_source,
                             read_image_list, source_from_layer)
from magic_init.data.images import UnreadableImage, decode_image, read_image
from magic_init.errors import DataError
from magic_init.proto import caffe_pb2


def save_rgb(path, rgb, size=(4, 3)):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.new("RGB", size, rgb).save(str(path))
    return str(path)


def test_image_is_read_as_bgr_and_gray_as_one_channel(tmp_path):
    path = save_rgb(tmp_path / "red.png", (255, 10, 0))
    bgr = read_image(path)
    assert bgr.shape == (3, 4, 3) and bgr.dtype == np.uint8
    np.testing.assert_array_equal(bgr[0, 0], [0, 10, 255])
    gray = read_image(path, is_color=False)
    assert gray.shape == (3, 4, 1)


def test_exif_orientation_is_applied_as_opencv_does(tmp_path):
    img = Image.new("RGB", (6, 2), (0, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = str(tmp_path / "rot.jpg")
    img.save(path, exif=exif.tobytes())
    assert read_image(path).shape == (6, 2, 3)


def test_non_regular_files_are_refused_before_opening(tmp_path):
    fifo = str(tmp_path / "pipe.jpg")
    os.mkfifo(fifo)
    with pytest.raises(UnreadableImage, match="not a regular file"), alarm_after(10):
        read_image(fifo)  # open() of a FIFO without a writer would block forever
    if os.path.exists("/dev/null"):
        with pytest.raises(UnreadableImage, match="not a regular file"):
            read_image("/dev/null")
    link = str(tmp_path / "link.png")
    os.symlink(save_rgb(tmp_path / "real.png", (1, 2, 3)), link)
    assert read_image(link).shape == (3, 4, 3)


@contextlib.contextmanager
def alarm_after(seconds):
    """Fail the test when the block takes longer than ``seconds``: SIGALRM interrupts open()."""
    def expire(signum, frame):
        pytest.fail("still blocked after %d s" % seconds)
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_corrupt_bytes_raise_unreadable():
    with pytest.raises(UnreadableImage, match="cannot decode"):
        decode_image(b"\xff\xd8 not really a jpeg")


def test_list_split_at_last_space_labels_optional_relative_to_list_folder(tmp_path):
    (tmp_path / "lists").mkdir()
    list_path = tmp_path / "lists" / "list.txt"
    list_path.write_text("my photo.jpg 3\r\n\nsub/b.png\n/abs/c.jpg 12\nd e.jpg x\n")
    files = read_image_list(str(list_path))
    base = str(tmp_path / "lists")
    assert files.paths == [os.path.join(base, "my photo.jpg"), os.path.join(base, "sub/b.png"),
                           "/abs/c.jpg", os.path.join(base, "d e.jpg x")]
    assert files.labels == [3, None, 12, None]
    assert read_image_list(str(list_path), root="/data").paths[0] == "/data/my photo.jpg"


def test_missing_and_empty_list_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="nope.txt: cannot read image list"):
        read_image_list(str(tmp_path / "nope.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="empty.txt: image list is empty"):
        read_image_list(str(empty))


def test_folder_is_recursive_and_sorted_glob_needs_matches(tmp_path):
    b = save_rgb(tmp_path / "z" / "b.JPG", (1, 2, 3))
    (tmp_path / "z" / "empty").mkdir()
    a = save_rgb(tmp_path / "a.png", (1, 2, 3))
    (tmp_path / "notes.txt").write_text("x")
    assert find_images(str(tmp_path)).paths == [a, b]
    assert glob_images(str(tmp_path / "**" / "*.JPG")).paths == [b]
    with pytest.raises(DataError, match="no files match"):
        glob_images(str(tmp_path / "*.gif"))
    with pytest.raises(DataError, match="folder contains no images"):
        find_images(str(tmp_path / "z" / "empty"))


def test_open_source_chooses_by_what_spec_is(tmp_path):
    img = save_rgb(tmp_path / "imgs" / "a.jpg", (5, 5, 5))
    list_path = tmp_path / "train.txt"
    list_path.write_text("imgs/a.jpg 1\n")
    assert isinstance(open_source(str(tmp_path / "imgs")), ImageFiles)
    assert open_source(img).paths == [img]
    assert open_source(str(list_path)).labels == [1]
    assert open_source(str(tmp_path / "imgs" / "*.jpg")).paths == [img]
    with pytest.raises(DataError, match="no such image list, folder, LMDB or glob"):
        open_source(str(tmp_path / "missing"))


def write_lmdb(path, datums):
    lmdb = pytest.importorskip("lmdb")
    with lmdb.open(str(path), map_size=1 << 22) as env, env.begin(write=True) as txn:
        for i, datum in enumerate(datums):
            txn.put(b"%05d" % i, datum if isinstance(datum, bytes) else datum.SerializeToString())


def test_lmdb_raw_and_float_datums(tmp_path):
    chw = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = caffe_pb2.Datum(channels=2, height=3, width=4, data=chw.tobytes(), label=7)
    floats = caffe_pb2.Datum(channels=2, height=3, width=4)
    floats.float_data.extend((chw.astype(np.float32) / 2).ravel().tolist())
    write_lmdb(tmp_path / "db", [raw, floats])
    source = open_source(str(tmp_path / "db"))
    assert isinstance(source, LmdbDatums) and len(source) == 2
    image, label = source.read(0)
    np.testing.assert_array_equal(image, chw.transpose(1, 2, 0))
    assert label == 7
    image, label = source.read(1)
    assert image.dtype == np.float32 and label is None
    np.testing.assert_array_equal(image, chw.transpose(1, 2, 0) / np.float32(2))
    assert source.item_name(1).endswith("db[00001]")


def test_lmdb_without_module_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "lmdb", None)
    with pytest.raises(DataError, match="needs the 'lmdb' module"):
        open_source(str(tmp_path / "db"))


def layer_from_text(text):
    from google.protobuf import text_format
    layer = caffe_pb2.LayerParameter()
    text_format.Merge(text, layer)
    return layer


def test_image_data_layer_prepends_root_folder_and_falls_back_to_base_dir(tmp_path):
    img = save_rgb(tmp_path / "photos" / "x_a.jpg", (9, 9, 9), size=(10, 8))
    (tmp_path / "list.txt").write_text("a.jpg 4\n")
    layer = layer_from_text('name: "data" type: "ImageData" top: "data" image_data_param { '
                            'source: "list.txt" root_folder: "photos/x_" new_height: 5 new_width: 6 '
                            'is_color: false } transform_param { scale: 0.5 }')
    source, transform = source_from_layer(layer, base_dir=str(tmp_path))
    assert source.paths == [img] and source.labels == [4]
    assert transform.resize == (5, 6) and transform.scale == 0.5 and not transform.is_color
    image, _ = source.read(0)
    assert transform(image).shape == (1, 5, 6)


def test_unsupported_data_layers_are_refused():
    with pytest.raises(DataError, match="only LMDB"):
        source_from_layer(layer_from_text('name: "d" type: "Data" data_param { source: "x" backend: LEVELDB }'))
    with pytest.raises(DataError, match="layer 'd': cannot read samples from a HDF5Data layer"):
        source_from_layer(layer_from_text('name: "d" type: "HDF5Data"'))

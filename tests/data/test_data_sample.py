"""Sampling: seeded choice, skipping unreadable images, batches, errors; on the bundled examples."""
from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest

from magic_init.data import ImageFiles, SampleReader, Transform, load_sample, open_source, read_image_list
from magic_init.errors import DataError

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "images")
LIST = os.path.join(EXAMPLES, "list.txt")
SMALL = Transform.imagenet(size=(32, 32))


def test_examples_list_loads_as_imagenet_sample():
    sample = load_sample(LIST, SMALL)
    assert sample.data.shape == (8, 3, 32, 32) and sample.data.dtype == np.float32
    assert sample.used == 8 and sample.skipped == [] and sample.source_size == 8
    np.testing.assert_array_equal(sample.labels, np.arange(8))
    assert -124 <= sample.data.min() and sample.data.max() <= 255 - 104


def test_subsample_is_seeded_and_without_repeats():
    a = load_sample(LIST, SMALL, num_images=5, seed=1)
    b = load_sample(LIST, SMALL, num_images=5, seed=1)
    c = load_sample(LIST, SMALL, num_images=5, seed=2)
    assert a.names == b.names and len(set(a.names)) == 5
    np.testing.assert_array_equal(a.data, b.data)
    assert a.names != c.names


def copy_examples_with_corrupt(tmp_path, n_corrupt=2):
    files = read_image_list(LIST)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for path in files.paths:
        shutil.copy(path, str(folder))
    for i in range(n_corrupt):
        (folder / ("broken%d.jpg" % i)).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return str(folder)


def test_unreadable_images_are_logged_skipped_counted_and_replaced(tmp_path, caplog):
    folder = copy_examples_with_corrupt(tmp_path)
    with caplog.at_level(logging.WARNING, logger="magic_init.data"):
        sample = load_sample(folder, SMALL, num_images=9, seed=0)
    assert sample.used == 8 and len(sample.skipped) == 2 and sample.source_size == 10
    assert all("broken" in name for name, _ in sample.skipped)
    assert "skipping" in caplog.text and "broken0.jpg" in caplog.text
    assert "used 8 images, skipped 2 unreadable" in caplog.text
    sample = load_sample(folder, SMALL, num_images=7, seed=3)
    assert sample.used == 7  # skipped ones are replaced from the rest of the permutation


def test_none_readable_names_the_source(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"nope")
    (tmp_path / "list.txt").write_text("a.jpg 0\nmissing.png 1\n")
    with pytest.raises(DataError, match="list.txt: none of its 2 images could be read"):
        load_sample(str(tmp_path / "list.txt"), SMALL)


def test_batches_have_requested_size_and_cover_the_sample():
    reader = SampleReader(open_source(LIST), SMALL, num_images=7, seed=0)
    batches = list(reader.batches(batch_size=3))
    assert [len(b.data) for b in batches] == [3, 3, 1] and reader.used == 7
    whole = load_sample(LIST, SMALL, num_images=7, seed=0)
    np.testing.assert_array_equal(np.concatenate([b.data for b in batches]), whole.data)


def test_different_sizes_without_resize_is_an_error():
    with pytest.raises(DataError, match="set a resize size or crop_size"):
        load_sample(LIST, Transform())


def test_labels_are_none_when_a_line_has_none(tmp_path):
    files = read_image_list(LIST)
    (tmp_path / "list.txt").write_text("%s\n%s 5\n" % (files.paths[0], files.paths[1]))
    assert load_sample(str(tmp_path / "list.txt"), SMALL).labels is None


def test_accepts_a_source_object():
    files = read_image_list(LIST)
    source = ImageFiles(files.paths[:2], name="two")
    assert load_sample(source, SMALL).used == 2

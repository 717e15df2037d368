"""Sampling: seeded choice, skipping unreadable images, batches, errors; on the bundled examples."""
from __future__ import annotations

import logging
import os
import shutil
import threading

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
    assert "9 images asked for, only 8 read, 2 skipped as unreadable" in caplog.text
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


def test_fewer_images_than_asked_for_is_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="magic_init.data"):
        sample = load_sample(LIST, SMALL, num_images=160)
    assert sample.used == 8
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1, lines
    assert "list.txt: 160 images asked for, only 8 read, 0 skipped as unreadable" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="magic_init.data"):
        load_sample(LIST, SMALL, num_images=8)
        load_sample(LIST, SMALL, num_images=3)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_fewer_images_warning_counts_the_skipped(tmp_path, caplog):
    folder = copy_examples_with_corrupt(tmp_path, n_corrupt=3)
    with caplog.at_level(logging.WARNING, logger="magic_init.data"):
        sample = load_sample(folder, SMALL, num_images=50)
    assert sample.used == 8 and len(sample.skipped) == 3
    assert "50 images asked for, only 8 read, 3 skipped as unreadable" in caplog.text
    assert sum("asked for" in r.getMessage() for r in caplog.records) == 1


def load_without_blocking(spec, fifo, timeout=30, **kw):
    """``load_sample(spec, SMALL, **kw)`` in a thread; fail if it is still blocked after ``timeout`` s
    (then open the FIFO for writing and close it, so the blocked reader sees EOF and the thread ends)."""
    outcome = {}

    def target():
        try:
            outcome["sample"] = load_sample(spec, SMALL, **kw)
        except Exception as e:
            outcome["error"] = e
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail("loading %s blocked on the FIFO %s for %d s" % (spec, fifo, timeout))
    if "error" in outcome:
        raise outcome["error"]
    return outcome["sample"]


def test_fifo_named_in_a_list_is_skipped_not_waited_on(tmp_path, caplog):
    files = read_image_list(LIST)
    fifo = str(tmp_path / "pipe.jpg")
    os.mkfifo(fifo)
    lines = ["%s %d" % (p, i) for i, p in enumerate(files.paths)]
    lines.insert(3, "pipe.jpg 99")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="magic_init.data"):
        sample = load_without_blocking(str(tmp_path / "list.txt"), fifo)
    assert sample.used == 8 and sample.source_size == 9
    assert [name for name, _ in sample.skipped] == [fifo]
    assert "not a regular file" in sample.skipped[0][1]
    assert "skipping %s: not a regular file" % fifo in caplog.text
    np.testing.assert_array_equal(sample.labels, np.arange(8))


def test_fifo_in_a_folder_is_skipped_not_waited_on(tmp_path, caplog):
    folder = copy_examples_with_corrupt(tmp_path, n_corrupt=0)
    fifo = os.path.join(folder, "0_pipe.png")
    os.mkfifo(fifo)
    with caplog.at_level(logging.WARNING, logger="magic_init.data"):
        sample = load_without_blocking(folder, fifo, num_images=9)  # visits every item
    assert sample.used == 8 and sample.source_size == 9
    assert [name for name, _ in sample.skipped] == [fifo]
    assert "skipping %s: not a regular file" % fifo in caplog.text


@pytest.mark.parametrize("num_images", [3, 7, 9])
def test_reading_ahead_on_threads_gives_the_serial_sample(tmp_path, monkeypatch, caplog, num_images):
    """Images read and resized on a thread pool ahead of use (ImageFiles.parallel_reads) make the same
    sample, names, skips and warnings as one image at a time; a read ahead past the last image used
    reports nothing."""
    folder = copy_examples_with_corrupt(tmp_path)
    monkeypatch.setattr("magic_init.data.sample.os.cpu_count", lambda: 4)
    results = []
    for parallel in (True, False):
        monkeypatch.setattr(ImageFiles, "parallel_reads", parallel)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="magic_init.data"):
            sample = load_sample(folder, SMALL, num_images=num_images, seed=3)
        results.append((sample.data, sample.names, sample.skipped, caplog.text))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1:] == results[1][1:]


def test_an_error_reading_ahead_is_raised_in_order(monkeypatch):
    """An exception other than an unreadable image, raised by a read on the pool, surfaces when its
    item is used, as without reading ahead; read ahead and not used, it is not raised."""
    source = open_source(LIST)
    real = source.read
    failing = int(SampleReader(source, SMALL, num_images=2).order()[3])   # read ahead, never used

    def read(i):
        if i == failing:
            raise DataError("item %d fails" % i)
        return real(i)
    monkeypatch.setattr(source, "read", read)
    monkeypatch.setattr("magic_init.data.sample.os.cpu_count", lambda: 4)
    assert load_sample(source, SMALL, num_images=2).used == 2
    with pytest.raises(DataError, match="item %d fails" % failing):
        load_sample(source, SMALL, num_images=8)

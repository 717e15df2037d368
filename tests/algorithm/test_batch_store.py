"""BatchStore keeps batches bit for bit, in memory within its budget and in files past it; the passes
give the same weights whether the live blobs stay in memory or go to files."""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from magic_init.batch_store import BatchStore


def batch(rng, images, channels=3):
    return {"data": rng.standard_normal((images, channels, 4, 4)).astype(np.float32),
            "label": rng.standard_normal((images, 1)).astype(np.float32)}


def test_batches_come_back_bit_for_bit_from_memory_and_from_files():
    rng = np.random.default_rng(0)
    batches = [batch(rng, n) for n in (4, 4, 3)]
    store = BatchStore(memory_mb=200 * 4 * 1.5 / 2 ** 20)     # room for the first batch only
    for b in batches:
        store.append(b)
    assert store.spilled_count() == 2
    assert [store.images(i) for i in range(3)] == [4, 4, 3] and store.images() == 11
    for i, b in enumerate(store):
        assert set(b) == {"data", "label"}
        for name in b:
            assert b[name].dtype == np.float32 and np.array_equal(b[name], batches[i][name])


def test_replacing_a_batch_rewrites_its_files_in_place():
    rng = np.random.default_rng(1)
    store = BatchStore(memory_mb=0)                 # everything in files
    first = batch(rng, 2, channels=8)
    store.append(first)
    folder = store.spill_files.folder
    files = {name: os.stat(os.path.join(folder, name)) for name in os.listdir(folder)}
    assert len(files) == 2
    smaller = {"data": np.ones((2, 1), np.float32)}
    store[0] = smaller
    after = {name: os.stat(os.path.join(folder, name)) for name in os.listdir(folder)}
    assert after.keys() == files.keys()             # no new file: a released one was overwritten
    assert {s.st_ino for s in after.values()} == {s.st_ino for s in files.values()}
    assert np.array_equal(store[0]["data"], smaller["data"])
    store.append(batch(rng, 2, channels=8))          # a free file, then a new one
    assert store.spill_files.files() == 3
    assert np.array_equal(store[0]["data"], smaller["data"])
    unlimited = BatchStore(memory_mb=None)
    unlimited.append(batch(rng, 2))
    assert unlimited.spilled_count() == 0 and unlimited.spill_files.folder is None


def test_spill_files_grow_for_a_larger_array_and_reuse_the_best_fit():
    from magic_init.batch_store import SpillFiles
    files = SpillFiles()
    small, large = np.arange(10, dtype=np.float32), np.arange(1000, dtype=np.float64).reshape(10, 100)
    handles = [files.write(small), files.write(small * 2)]
    files.release(handles[0])
    grown = files.write(large)                       # larger than every free file: the largest grows
    assert grown[0] == handles[0][0]
    assert os.path.getsize(grown[0]) == large.nbytes
    back = files.read(grown)
    assert back.dtype == np.float64 and np.array_equal(back, large)
    assert np.array_equal(files.read(handles[1]), small * 2)
    files.release(handles[1])
    files.release(grown)
    again = files.write(small)                       # the smallest free file that holds it
    assert again[0] == handles[1][0] and np.array_equal(files.read(again), small)
    empty = files.write(np.zeros((0, 3), np.float32))
    assert files.read(empty).shape == (0, 3)
    folder = files.folder
    files.close()
    assert not os.path.exists(folder)


def test_the_folder_goes_away_on_close_and_when_collected():
    rng = np.random.default_rng(2)
    store = BatchStore(memory_mb=0)
    store.append(batch(rng, 2))
    folder = store.spill_files.folder
    store.close()
    assert not os.path.exists(folder) and len(store) == 0
    other = BatchStore(memory_mb=0)
    other.append(batch(rng, 2))
    folder = other.spill_files.folder
    del other
    gc.collect()
    assert not os.path.exists(folder)


@pytest.mark.parametrize("init", ["kmeans", "gaussian"])
def test_passes_give_identical_weights_with_live_blobs_in_files(init):
    pytest.importorskip("torch")
    from test_algorithm_engine import model_weights, tiny
    from magic_init.algorithm import build_passes
    from magic_init.algorithm.runner import SampleRunner

    x = np.random.default_rng(3).standard_normal((21, 3, 32, 32)).astype(np.float32)
    results = []
    for memory_mb in (None, 0):
        net = tiny()
        runner = SampleRunner(net, x, 5, memory_mb=memory_mb)     # batches of 5 straddle rate blocks
        for step in build_passes(init=init, seed=4):
            step(net, runner)
        assert (runner.cache.spill_files.folder is not None) == (memory_mb == 0)     # files were written, or not
        runner.close()
        results.append(model_weights(net))
    for name, blobs in results[0].items():
        for a, b in zip(blobs, results[1][name]):
            assert np.array_equal(a, b), name

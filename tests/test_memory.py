"""magic_init.memory: numpy's huge-page request switched off, freed memory handed back."""
import numpy as np
import pytest

from magic_init import memory


def test_use_small_pages_turns_numpys_huge_page_request_off():
    switch = memory.numpy_huge_page_switch()
    if switch is None:
        pytest.skip("this numpy has no huge-page switch")
    previous = switch(True)
    try:
        assert memory.use_small_pages() is True
        assert switch(False) is False          # the switch was already off
    finally:
        switch(previous)


def test_arrays_are_unchanged_with_small_pages():
    switch = memory.numpy_huge_page_switch()
    previous = switch(True) if switch else None
    try:
        memory.use_small_pages()
        a = np.arange(2 ** 21, dtype=np.float32)   # 8 MiB: above numpy's 4 MiB huge-page size
        assert a[-1] == 2 ** 21 - 1 and a.sum(dtype=np.float64) == (2 ** 21 - 1) * 2 ** 20
    finally:
        if switch:
            switch(previous)


def test_release_freed_memory_returns_a_bool():
    assert memory.release_freed_memory() in (True, False)

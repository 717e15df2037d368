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


REUSE_PROBE = """
import resource, sys
import numpy as np
from magic_init import memory
memory.use_small_pages()                         # as the CLI: faults count 4 KiB pages
if sys.argv[1] == "reuse" and not memory.reuse_freed_memory():
    print("unsupported"); raise SystemExit
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(2 ** 24, dtype=np.float32)       # 64 MiB: above glibc's largest mmap threshold
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del a
print(" ".join(map(str, faults)))
"""


def _allocation_faults(mode):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", REUSE_PROBE, mode], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_reuse_freed_memory_serves_a_freed_block_again_without_faulting_it_in():
    faults = _allocation_faults("reuse")
    if faults == ["unsupported"]:
        pytest.skip("the C library is not glibc")
    pages = 2 ** 26 // 4096
    assert int(faults[0]) >= pages // 2               # the first block is faulted in
    assert all(int(f) < pages // 20 for f in faults[1:]), faults     # the next ones reuse its pages
    baseline = _allocation_faults("default")          # glibc's default: a fresh mmap every time
    assert all(int(f) >= pages // 2 for f in baseline[1:]), baseline

"""Writing a large file past the page cache (``O_DIRECT``), for files that are fsync'ed anyway.

A caffemodel is written once, fsync'ed (``atomic_write``) and not read back by this process, so
the page cache gains nothing from holding it: every page of it must still reach the disk before
the rename. Written through the page cache, each of its pages is first taken from the kernel's
free memory and zeroed, which on a VM whose host reclaims freed guest memory (free page reporting)
faults to the host page by page; ``O_DIRECT`` sends the bytes from one reused aligned buffer
straight to the device (docs/RESULTS.md 0i has the two measured side by side).

``O_DIRECT`` wants the buffer's address, the file offset and the length to be multiples of the
device's block size; ``DirectWriter`` copies what it is given into a page-aligned buffer of
``BUFFER_BYTES`` and writes it whole; the last, partial block is written padded with zeros and the
file is then truncated to its true length. Where the file system refuses ``O_DIRECT`` (tmpfs,
some network and overlay file systems: ``EINVAL`` when it is set or on the first write), it falls
back to ordinary writes of the same buffer, so the bytes in the file are the same either way.
"""
from __future__ import annotations

import errno
import fcntl
import mmap
import os

#: Bytes gathered before each write (a multiple of every block size O_DIRECT may require).
BUFFER_BYTES = 4 * 2 ** 20
#: The alignment of the padded last write (the largest common logical block size).
BLOCK_BYTES = 4096


class DirectWriter:
    """A write-only file object over an open file descriptor that writes with ``O_DIRECT`` when it can.

    Args:
        fd: A file descriptor open for writing at offset 0 (not closed here).

    ``write(data)`` takes any bytes-like object; ``finish()`` writes what is buffered and sets the
    file's length; ``direct`` says whether ``O_DIRECT`` was in use to the end.
    """

    def __init__(self, fd: int):
        self.fd = fd
        self._buffer = mmap.mmap(-1, BUFFER_BYTES)     # page-aligned, as O_DIRECT needs
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._length = 0
        self.direct = _set_direct(fd, True)

    def write(self, data) -> int:
        """Append ``data`` (bytes-like); returns its length in bytes."""
        data = memoryview(data).cast("B")
        done = 0
        while done < len(data):
            take = min(len(data) - done, BUFFER_BYTES - self._filled)
            self._view[self._filled:self._filled + take] = data[done:done + take]
            self._filled += take
            done += take
            if self._filled == BUFFER_BYTES:
                self._write_buffer(BUFFER_BYTES)
        self._length += len(data)
        return len(data)

    def finish(self) -> None:
        """Write the buffered tail (padded to a block under ``O_DIRECT``) and set the file's true length."""
        if self._filled:
            padded = -(-self._filled // BLOCK_BYTES) * BLOCK_BYTES if self.direct else self._filled
            self._view[self._filled:padded] = bytes(padded - self._filled)
            self._write_buffer(padded)
        os.ftruncate(self.fd, self._length)
        self._view.release()
        self._buffer.close()

    def _write_buffer(self, size: int) -> None:
        """Write the buffer's first ``size`` bytes, whole; fall back to ordinary writes on EINVAL."""
        written = 0
        while written < size:
            try:
                written += os.write(self.fd, self._view[written:size])
            except OSError as error:
                if not (self.direct and error.errno == errno.EINVAL):
                    raise
                self.direct = _set_direct(self.fd, False)
        self._filled = 0


def _set_direct(fd: int, on: bool) -> bool:
    """Set or clear ``O_DIRECT`` on ``fd``; returns whether it is set (False where unsupported)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | flag) if on else (flags & ~flag))
    except OSError:
        return False
    return on

"""Atomic file writes: readers see the old file or the complete new one, never a partial one."""
from __future__ import annotations

import contextlib
import os
import tempfile

from magic_init.errors import ModelFileError
from magic_init.io.direct import DirectWriter
from magic_init.io.outputs import resolve_output


@contextlib.contextmanager
def atomic_write(path, direct=False):
    """Yield a binary file object; on success its content replaces ``path`` atomically.

    The data goes to a temporary file in the same folder (so ``os.replace`` is a rename on one
    file system), is flushed and fsync'ed, then renamed over ``path``. If the body raises (or a
    signal handler raises in it), the temporary file is removed and an existing ``path`` is left
    untouched. A symlink ``path`` is written through: its target is replaced (``resolve_output``).

    Args:
        path: The file to write.
        direct: Write past the page cache where the file system allows it (``io.direct``): for
            large files that nothing reads back soon. The file object then only has ``write``.
    """
    path = resolve_output(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                        dir=folder)
    except OSError as error:
        raise ModelFileError("%s: cannot create a file in %s (%s)" % (path, folder, error.strerror)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if direct:
                writer = DirectWriter(f.fileno())
                yield writer
                writer.finish()
            else:
                yield f
                f.flush()
            os.fsync(f.fileno())
        _keep_existing_mode(path, tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise


def _keep_existing_mode(path: str, tmp_path: str) -> None:
    """Give the new file the permissions of the file it replaces, or the umask default."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp_path, mode)

"""Where a run may write: the policy for output paths, checked before any work is done.

- An OUTPUT that does not exist is created; an existing *regular* file is replaced atomically
  (readers see the old file or the complete new one, see ``atomic_write``).
- A symlink is written *through*: the file it points to is replaced, the link stays a link.
- An existing path that is not a regular file (folder, FIFO, device node, socket) is refused:
  replacing ``/dev/null`` or a FIFO with a model file is never what the user meant.
- An output may not be one of the run's inputs (prototxt, --load model, image list), unless the
  caller allows it explicitly (``--overwrite`` for the --load model).
- ``-`` means standard output for text outputs that allow it (``stats --json -``).
"""
from __future__ import annotations

import os
import stat

from magic_init.errors import ModelFileError

STDOUT = "-"

_KINDS = ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, in words ('FIFO', 'folder', ...), from its st_mode."""
    return next((name for test, name in _KINDS if test(mode)), "special file")


def resolve_output(path) -> str:
    """The file a write to ``path`` replaces: the target of a symlink (followed), else ``path``."""
    path = os.fspath(path)
    return os.path.realpath(path) if os.path.islink(path) else path


def check_output(path, inputs=None, what="OUTPUT"):
    """Raise ModelFileError unless ``path`` may be written by this run.

    Args:
        path: the output path as the user gave it.
        inputs: ``{description: path}`` of the run's input files; None values are ignored.
        what: how messages name the output (``OUTPUT``, ``--json``, ...).
    """
    target = resolve_output(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:
        raise ModelFileError("%s %s: cannot check it (%s)" % (what, path, error.strerror)) from None
    if mode is not None and not stat.S_ISREG(mode):
        raise ModelFileError("%s %s: exists and is a %s; refusing to replace it" % (what, path, file_kind(mode)))
    for description, source in (inputs or {}).items():
        if source and source != STDOUT and same_file(target, source):
            raise ModelFileError("%s %s is the %s of this run; refusing to overwrite an input" % (what, path, description))
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise ModelFileError("%s %s: folder %s does not exist" % (what, path, folder))
    if not os.access(folder, os.W_OK):
        raise ModelFileError("%s %s: folder %s is not writable" % (what, path, folder))


def same_file(a, b) -> bool:
    """Whether two paths name one file (hard links and symlinks included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)

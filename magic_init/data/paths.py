"""Where a path written in a prototxt's data layer points (``source``, ``root_folder`` + list
entry, ``mean_file``): the one resolver for them.

Caffe opens them as written, relative to the working directory of ``caffe train``. magic_init
does the same, and when that file does not exist, tries the prototxt's folder (``base_dir``), so
that a net whose paths are relative to its own folder runs from anywhere.
"""
from __future__ import annotations

import os


def layer_path(path, base_dir=None) -> str:
    """The file a data layer's ``path`` names.

    Args:
        path: The path as the prototxt writes it.
        base_dir: The prototxt's folder, or None (the default): no fallback.

    Returns:
        ``path`` when it is absolute, exists relative to the working directory, or is not found in
        ``base_dir`` either (the caller's error then names it as written); else ``base_dir/path``.
    """
    path = os.fspath(path)
    if base_dir and not os.path.isabs(path) and not os.path.exists(path):
        candidate = os.path.join(base_dir, path)
        if os.path.exists(candidate):
            return candidate
    return path

"""The bundled reference models and example images, reachable by name from any directory.

The checkout keeps them at ``models/*.prototxt`` and ``examples/images/*``; an installed package
(``pip install .``) carries the same files as ``magic_init/models/`` and
``magic_init/examples/images/``. :func:`bundled` maps such a name to the file, so
``magic_init models/tiny.prototxt out.caffemodel --data examples/images/list.txt`` runs from any
directory. A path that exists relative to the current directory always wins: a user's own
``models/x.prototxt`` is never replaced by a bundled one.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BUNDLED_DIRS", "bundled", "bundled_root", "resolve", "resolve_argv"]

# Options whose value is written, never read: their values are never mapped to a bundled file.
OUTPUT_OPTIONS = ("--json", "--plot")

# The folders that are shipped, as they are named in the checkout (and in the package).
BUNDLED_DIRS = ("models", "examples/images")

_PACKAGE = Path(__file__).resolve().parent


def _roots():
    """Where bundled files may lie: inside the installed package, then the source checkout."""
    yield _PACKAGE                       # wheel / sdist install: magic_init/models/...
    checkout = _PACKAGE.parent           # editable install or running from the checkout
    if (checkout / "pyproject.toml").is_file() and (checkout / "models").is_dir():
        yield checkout


def _relative_name(path):
    """``path`` as a clean relative name under one of BUNDLED_DIRS, or None."""
    text = os.fspath(path)
    if not text or os.path.isabs(text):
        return None
    parts = [p for p in Path(text).as_posix().split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    name = "/".join(parts)
    for folder in BUNDLED_DIRS:
        if name.startswith(folder + "/") and len(name) > len(folder) + 1:
            return name
    return None


def bundled(name):
    """The bundled file called ``name`` (e.g. ``"models/tiny.prototxt"``), or None.

    Args:
        name: a relative path under ``models/`` or ``examples/images/``, as in the checkout.

    Returns:
        The file's absolute path (str) when it is bundled, else None.
    """
    rel = _relative_name(name)
    if rel is None:
        return None
    for root in _roots():
        candidate = root / rel
        if candidate.is_file():
            return str(candidate)
    return None


def bundled_root():
    """The folder that holds ``models/`` and ``examples/images/`` (package or checkout), or None."""
    for root in _roots():
        if (root / "models").is_dir():
            return str(root)
    return None


def resolve(path):
    """Map a path that does not exist but names a bundled file to that file; else return it as is.

    Args:
        path: a path as the user typed it (str or os.PathLike), or None.

    Returns:
        ``path`` unchanged when it exists relative to the current directory, is None, or names no
        bundled file; otherwise the bundled file's absolute path (str).
    """
    if path is None:
        return path
    try:
        if os.path.exists(path):
            return path
    except (TypeError, ValueError):  # not a path (e.g. an embedded NUL): leave it to the caller
        return path
    found = bundled(path)
    return path if found is None else found


def resolve_argv(argv):
    """A command line with every argument that names a missing, bundled file mapped to that file.

    For the CLI's entry point: ``main`` calls it on its arguments, so PROTOTXT, ``--data``,
    ``--load`` and the like find the bundled models and images from any directory. An argument
    that exists relative to the current directory is kept, and so is the value of an output option
    (``--json``, ``--plot``); ``--opt=VALUE`` forms are mapped on VALUE.

    Args:
        argv: the arguments after the program name (a list of str).

    Returns:
        A new list.
    """
    out = []
    after_output_option = False
    for arg in argv:
        if after_output_option:
            out.append(arg)
            after_output_option = False
        elif arg.startswith("--") and "=" in arg:
            opt, _, value = arg.partition("=")
            out.append(arg if opt in OUTPUT_OPTIONS else opt + "=" + resolve(value))
        elif arg in OUTPUT_OPTIONS:
            out.append(arg)
            after_output_option = True
        elif arg.startswith("-"):
            out.append(arg)
        else:
            out.append(resolve(arg))
    return out

"""The ``magic_init`` command's entry point: what the numerical libraries read from the environment
when they load, set before they load, then the CLI (``magic_init.cli.main``).

numpy's OpenBLAS keeps each of its worker threads spinning for 2^28 cycles (about 0.1 s) after a
threaded BLAS call before the thread sleeps. The passes alternate numpy (whitening, k-means, the
change rates' small products) with torch layers that run on every core, so a spinning BLAS thread
takes a core from the torch layers that follow (docs/RESULTS.md 0g). The environment variable
``OPENBLAS_THREAD_TIMEOUT`` (n: wait 2^n cycles, n in 4..30), set here to this module's
``OPENBLAS_THREAD_TIMEOUT`` (16), lets them sleep within microseconds. A value the user set is kept.
"""
from __future__ import annotations

import os
import sys

#: OpenBLAS's worker threads wait 2^this cycles for more work before they sleep (OpenBLAS: 28).
OPENBLAS_THREAD_TIMEOUT = 16


def configure_threads() -> bool:
    """Set the BLAS threads' wait (``OPENBLAS_THREAD_TIMEOUT``, unless already set) for this process
    and its children.

    Returns:
        True when set in time, False when numpy is already loaded (OpenBLAS reads its environment
        once, when it loads).
    """
    if "numpy" in sys.modules:
        return False
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", str(OPENBLAS_THREAD_TIMEOUT))
    return True


def main():
    """The ``magic_init`` command (and ``python -m magic_init``)."""
    configure_threads()
    from magic_init.cli import main as cli_main
    cli_main()

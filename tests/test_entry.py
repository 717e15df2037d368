"""magic_init.entry: the BLAS threads' wait is set before numpy loads, and then they stop spinning."""
import os
import subprocess
import sys

import pytest

from magic_init import entry

IDLE_CPU = """
import sys, time
if sys.argv[1] == "configured":
    from magic_init import entry
    assert entry.configure_threads()
import numpy as np
a = np.ones((400, 400))
for _ in range(3):
    a.dot(a)                           # threaded BLAS calls
began = time.process_time()
time.sleep(0.3)
print(time.process_time() - began)     # CPU the process used while its main thread slept
"""


def _idle_cpu(mode):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", IDLE_CPU, mode], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout)


def test_configured_blas_threads_sleep_instead_of_spinning():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: OpenBLAS runs no worker thread")
    default = _idle_cpu("default")
    if default < 0.03:
        pytest.skip("this numpy's BLAS does not spin after a call (%.3f CPU s idle): nothing to stop" % default)
    configured = _idle_cpu("configured")
    assert configured < 0.02, "BLAS threads still spin: %.3f CPU s while idle (%.3f without the setting)" % (
        configured, default)


def test_configure_threads_keeps_a_users_setting_and_says_when_it_is_too_late():
    script = ("import os; from magic_init import entry; print(entry.configure_threads(), "
              "os.environ['OPENBLAS_THREAD_TIMEOUT'])")
    env = dict(os.environ, OPENBLAS_THREAD_TIMEOUT="7")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["True", "7"]
    env.pop("OPENBLAS_THREAD_TIMEOUT")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["True", str(entry.OPENBLAS_THREAD_TIMEOUT)]
    import numpy  # noqa: F401  (loaded in this process: too late)
    assert entry.configure_threads() is False

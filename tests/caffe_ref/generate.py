"""Produce reference values with real Caffe: ``python3 -m tests.caffe_ref.generate OUTDIR [CASE ...]``.

Runs inside the Caffe chroot (Python 3.9, pycaffe, no torch). For each case (all when none named):
build ``caffe.Net`` from the case's prototxt with the case's input shapes and force_backward, fill
inputs and parameters with seeded values (``values.py``), forward, put seeded random diffs on the
output blobs (loss outputs keep Caffe's own diff, the loss weight), clear parameter diffs, backward,
and write ``OUTDIR/<case>.npz``:

  prototxt, phase, layer_names, layer_types, blob_names, inputs, outputs, tops_json, bottoms_json,
  param_layers, param_counts                      net description, as pycaffe reports it
  input_<i>            values fed to net.inputs[i]
  top_diff_<name idx>  the diff set on output blob i of blob_names (absent for loss outputs)
  data_<i>, diff_<i>   every blob after forward / backward (diff_* only when the case runs backward)
  param_fp_<j>_<k>     SHA-256 (values.fingerprint) of the initial value of blob k of param layer j (values.fingerprint)
  param_data_<j>_<k>   its value after forward (stored only when forward changed it: BatchNorm TRAIN)
  param_diff_<j>_<k>   its diff after backward
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
from google.protobuf import text_format

from magic_init.proto import caffe_pb2

from .cases import all_cases, case_file_text
from .values import case_param_values, fingerprint, input_values, rng_for


def case_net_text(case):
    """The case's prototxt with its input shapes and force_backward applied (what both sides build)."""
    net = caffe_pb2.NetParameter()
    text_format.Merge(case_file_text(case), net)
    for layer in net.layer:
        if layer.type != "Input":
            continue
        shapes = list(layer.input_param.shape)
        shapes = [shapes[min(i, len(shapes) - 1)] for i in range(len(layer.top))]
        new_shapes = [list(case.inputs.get(top, s.dim)) for top, s in zip(layer.top, shapes)]
        del layer.input_param.shape[:]
        for dims in new_shapes:
            layer.input_param.shape.add(dim=dims)
    net.force_backward = case.force_backward
    return text_format.MessageToString(net)


def fill_net(net, case, arrays):
    """Seeded inputs and parameters; records inputs and parameter fingerprints in `arrays`."""
    rng = rng_for(case.seed, "inputs")
    for i, name in enumerate(net.inputs):
        values = input_values(rng, case.fill.get(name, "gaussian"), net.blobs[name].data.shape)
        net.blobs[name].data[...] = values
        arrays["input_%d" % i] = values
    types = dict(zip(net._layer_names, [l.type for l in net.layers]))
    for j, (layer, blobs) in enumerate(net.params.items()):
        for k, blob in enumerate(blobs):
            blob.data[...] = case_param_values(case, layer, types[layer], k, blob.data.shape)
            arrays["param_fp_%d_%d" % (j, k)] = fingerprint(blob.data)


def set_top_diffs(net, case, arrays):
    """Random diffs on output blobs that carry no loss weight (loss outputs keep Caffe's)."""
    rng = rng_for(case.seed, "top_diffs")
    names = list(net._blob_names)
    loss_weights = dict(zip(names, net._blob_loss_weights))
    for name in net.outputs:
        if loss_weights[name] != 0:
            continue
        diff = rng.standard_normal(net.blobs[name].diff.shape).astype(np.float32)
        net.blobs[name].diff[...] = diff
        arrays["top_diff_%d" % names.index(name)] = diff


def describe(net, text, case):
    """Everything about the net's structure a host test compares or needs."""
    return {
        "prototxt": np.array(text), "phase": np.array(case.phase),
        "layer_names": np.array(list(net._layer_names)), "layer_types": np.array([l.type for l in net.layers]),
        "blob_names": np.array(list(net._blob_names)), "inputs": np.array(list(net.inputs)),
        "outputs": np.array(list(net.outputs)),
        "tops_json": np.array(json.dumps(list(net.top_names.items()))),
        "bottoms_json": np.array(json.dumps(list(net.bottom_names.items()))),
        "param_layers": np.array(list(net.params.keys())),
        "param_counts": np.array([len(b) for b in net.params.values()], dtype=np.int64),
    }


def run_case(caffe, case, outdir):
    """Build, fill, forward, backward one case and write its .npz."""
    text = case_net_text(case)
    path = os.path.join(outdir, case.name + ".prototxt")
    with open(path, "w") as f:
        f.write(text)
    caffe.set_random_seed(case.seed)
    net = caffe.Net(path, caffe.TRAIN if case.phase == "train" else caffe.TEST)
    arrays = describe(net, text, case)
    fill_net(net, case, arrays)
    initial = [[b.data.copy() for b in blobs] for blobs in net.params.values()]
    net.forward()
    for i, blob in enumerate(net.blobs.values()):
        arrays["data_%d" % i] = blob.data.copy()
    for j, blobs in enumerate(net.params.values()):
        for k, blob in enumerate(blobs):
            if not np.array_equal(blob.data, initial[j][k]):
                arrays["param_data_%d_%d" % (j, k)] = blob.data.copy()
    if case.backward:
        set_top_diffs(net, case, arrays)
        net.clear_param_diffs()
        net.backward()
        for i, blob in enumerate(net.blobs.values()):
            arrays["diff_%d" % i] = blob.diff.copy()
        for j, blobs in enumerate(net.params.values()):
            for k, blob in enumerate(blobs):
                arrays["param_diff_%d_%d" % (j, k)] = blob.diff.copy()
    np.savez(os.path.join(outdir, case.name + ".npz"), **arrays)


def main(argv):
    os.environ.setdefault("GLOG_minloglevel", "2")
    import caffe
    caffe.set_mode_cpu()
    outdir, names = argv[0], set(argv[1:])
    os.makedirs(outdir, exist_ok=True)
    for case in all_cases():
        if not names or case.name in names:
            run_case(caffe, case, outdir)
    with open(os.path.join(outdir, "DONE"), "w") as f:
        f.write("\n".join(c.name for c in all_cases() if not names or c.name in names))


if __name__ == "__main__":
    main(sys.argv[1:])

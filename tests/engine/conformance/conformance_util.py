"""Load a real-Caffe reference (.npz from tests/caffe_ref/generate.py) into our engine and compare.

Comparison rule: float32 results agree when ``max|ours - caffe| <= rtol * max|caffe| + ATOL``,
i.e. the error is measured against the scale of the whole array, not element by element (an
element that is the difference of two large numbers carries the absolute error of those).
"""
from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
from google.protobuf import text_format

from caffe_ref.cases import CASES, all_cases
from caffe_ref.values import case_param_values, fingerprint
from magic_init.proto import caffe_pb2

ATOL = 1e-7


class Reference:
    """The arrays Caffe produced for one case, addressed by blob and parameter names."""

    def __init__(self, folder, name):
        all_cases()
        self.case = CASES[name]
        self.z = np.load(str(folder / (name + ".npz")))
        s = lambda key: [str(v) for v in self.z[key]]  # noqa: E731
        self.prototxt = str(self.z["prototxt"])
        self.phase = str(self.z["phase"])
        self.layer_names, self.layer_types = s("layer_names"), s("layer_types")
        self.blob_names, self.inputs, self.outputs = s("blob_names"), s("inputs"), s("outputs")
        self.param_layers = s("param_layers")
        self.param_counts = [int(c) for c in self.z["param_counts"]]
        self.top_names = OrderedDict(json.loads(str(self.z["tops_json"])))
        self.bottom_names = OrderedDict(json.loads(str(self.z["bottoms_json"])))
        self.has_backward = "diff_0" in self.z

    def net_parameter(self):
        net = caffe_pb2.NetParameter()
        text_format.Merge(self.prototxt, net)
        return net

    def layer_type(self, layer):
        return self.layer_types[self.layer_names.index(layer)]

    def data(self, blob):
        return self.z["data_%d" % self.blob_names.index(blob)]

    def diff(self, blob):
        return self.z["diff_%d" % self.blob_names.index(blob)]

    def top_diff(self, blob):
        key = "top_diff_%d" % self.blob_names.index(blob)
        return self.z[key] if key in self.z else None

    def param_after_forward(self, j, k):
        """Caffe's parameter value after forward: changed only by BatchNorm in TRAIN."""
        key = "param_data_%d_%d" % (j, k)
        return self.z[key] if key in self.z else None


def build_net(ref, device):
    """Our engine's Net for the exact prototxt Caffe ran, with Caffe's inputs and parameters."""
    from magic_init.engine import Net
    net = Net(ref.net_parameter(), phase=ref.phase, device=device)
    for i, name in enumerate(ref.inputs):
        net.blobs[name].data[...] = ref.z["input_%d" % i]
    for j, layer in enumerate(ref.param_layers):
        for k, blob in enumerate(net.params[layer]):
            values = case_param_values(ref.case, layer, ref.layer_type(layer), k, blob.data.shape)
            assert str(fingerprint(values)) == str(ref.z["param_fp_%d_%d" % (j, k)]), (
                "regenerated parameter %s[%d] differs from what Caffe was given" % (layer, k))
            blob.data[...] = values
    return net


def forward_teacher_forced(net, ref):
    """Forward layer by layer; where a blob gets its final value (the last layer of an in-place
    chain), record ours, then overwrite it with Caffe's, so the next layers start from Caffe's
    exact inputs.

    Deep nets have kinks (ReLU at 0, MAX pooling near-ties): rounding-level differences in the
    order of summation push a few units to the other side, and one such unit changes the gradient
    of everything below it by far more than rounding. Forcing keeps both engines on the same side
    of every kink that lies between in-place chains, so the comparison measures each layer's own
    error; it also makes the layers after a TRAIN-phase Dropout comparable.
    """
    last_writer = {}
    for i, layer in enumerate(ref.layer_names):
        for top in ref.top_names[layer]:
            last_writer[top] = i
    data = OrderedDict()
    for i, layer in enumerate(ref.layer_names):
        net.forward(start=layer, end=layer)
        for top in ref.top_names[layer]:
            if last_writer[top] == i:
                data[top] = np.array(net.blobs[top].data)
                net.blobs[top].data[...] = ref.data(top)
    for name in ref.inputs:
        data[name] = np.array(net.blobs[name].data)
    return data


def run_net(net, ref, teacher_forcing=False):
    """forward() (or forward_teacher_forced); then, when Caffe ran backward: clear param diffs,
    set Caffe's top diffs, backward(). Returns every blob's data right after forward."""
    if teacher_forcing:
        data = forward_teacher_forced(net, ref)
    else:
        net.forward()
        data = OrderedDict((name, np.array(net.blobs[name].data)) for name in net.blobs)
    if ref.has_backward:
        net.clear_param_diffs()
        for name in ref.outputs:
            top_diff = ref.top_diff(name)
            if top_diff is not None:
                net.blobs[name].diff[...] = top_diff
        net.backward()
    return data


class Mismatches:
    """Collects every disagreement of one case, so a failure reports all of them at once."""

    def __init__(self, rtol):
        self.rtol = rtol
        self.errors = []

    def compare(self, what, ours, caffe):
        ours = np.asarray(ours)
        if ours.shape != caffe.shape:
            self.errors.append("%s: shape %s, Caffe %s" % (what, ours.shape, caffe.shape))
            return
        if caffe.size == 0:
            return
        err = float(np.max(np.abs(ours.astype(np.float64) - caffe)))
        scale = float(np.max(np.abs(caffe)))
        if not err <= self.rtol * scale + ATOL:  # also catches NaN
            self.errors.append("%s: max|ours-caffe| = %.3g, max|caffe| = %.3g (rel %.2g > rtol %.0e)"
                               % (what, err, scale, err / max(scale, 1e-30), self.rtol))

    def check_equal(self, what, ours, caffe):
        if list(ours) != list(caffe):
            self.errors.append("%s: ours %s, Caffe %s" % (what, list(ours), list(caffe)))

    def assert_none(self, case_name):
        assert not self.errors, "%s disagrees with Caffe:\n  %s" % (case_name, "\n  ".join(self.errors))


def compare_structure(m, net, ref):
    """Layer names/types (splits included), blob names, tops/bottoms, inputs/outputs, params."""
    m.check_equal("layer_names", net.layer_names, ref.layer_names)
    m.check_equal("layer_types", net.layer_types, ref.layer_types)
    m.check_equal("blob names", list(net.blobs), ref.blob_names)
    m.check_equal("inputs", net.inputs, ref.inputs)
    m.check_equal("outputs", net.outputs, ref.outputs)
    m.check_equal("param layers", list(net.params), ref.param_layers)
    m.check_equal("param counts", [len(b) for b in net.params.values()], ref.param_counts)
    for layer, tops in ref.top_names.items():
        m.check_equal("tops of " + layer, net.top_names.get(layer, []), tops)
    for layer, bottoms in ref.bottom_names.items():
        m.check_equal("bottoms of " + layer, net.bottom_names.get(layer, []), bottoms)


def compare_values(m, net, ref, data, blobs=None, diffs=True):
    """Blob data (for `blobs`, default all), then blob diffs, parameter values and diffs."""
    for name in ref.blob_names if blobs is None else blobs:
        m.compare("data[%s]" % name, data[name], ref.data(name))
    for j, layer in enumerate(ref.param_layers):
        for k, blob in enumerate(net.params[layer]):
            after = ref.param_after_forward(j, k)
            if after is not None:
                m.compare("params[%s][%d].data after forward" % (layer, k), blob.data, after)
    if not (diffs and ref.has_backward):
        return
    for name in ref.blob_names:
        if name not in ref.case.skip_diff:
            m.compare("diff[%s]" % name, net.blobs[name].diff, ref.diff(name))
    for j, layer in enumerate(ref.param_layers):
        for k, blob in enumerate(net.params[layer]):
            m.compare("params[%s][%d].diff" % (layer, k), blob.diff, ref.z["param_diff_%d_%d" % (j, k)])

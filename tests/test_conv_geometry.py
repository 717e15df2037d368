"""magic_init.conv_geometry: Caffe's kernel/pad/stride/dilation resolution and output sizes.

Pure-Python tests (asymmetric values, every way of writing them, Caffe's checks, output-size
properties, the engine and the algorithm reading one geometry), then the same cases against real
Caffe in the chroot: top shapes, check-failure messages, and top values compared with the patches
the algorithm gathers and with the engine's convolution.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from google.protobuf import text_format

from magic_init import conv_geometry as geometry
from magic_init.adapters.caffe import convolution_geometry
from magic_init.algorithm import patches
from magic_init.conv_geometry import ConvGeometry, pool_window, pooled_size
from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2

#: kernel 3x5, pad 1x2, stride 2x1, dilation 1x2, written in every form Caffe accepts.
ASYMMETRIC = (3, 5), (1, 2), (2, 1), (1, 2)
ASYMMETRIC_FORMS = [
    "kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2 stride_h: 2 stride_w: 1 dilation: 1 dilation: 2",
    "kernel_size: 3 kernel_size: 5 pad: 1 pad: 2 stride: 2 stride: 1 dilation: 1 dilation: 2",
    "kernel_size: 3 kernel_size: 5 pad_h: 1 pad_w: 2 stride: 2 stride: 1 dilation: 1 dilation: 2",
    "kernel_h: 3 kernel_w: 5 pad: 1 pad: 2 stride_h: 2 stride_w: 1 dilation: 1 dilation: 2",
]

#: (convolution_param text, spatial axes, Caffe's message) for every check of LayerSetUp.
BAD = [
    ("kernel_h: 3 kernel_w: 3", 3, "kernel_h & kernel_w can only be used for 2D convolution."),
    ("kernel_size: 3 kernel_h: 3 kernel_w: 3", 2,
     "Either kernel_size or kernel_h/w should be specified; not both."),
    ("kernel_size: 3 kernel_size: 3 kernel_size: 3", 2,
     "kernel_size must be specified once, or once per spatial dimension (kernel_size specified 3 times; "
     "2 spatial dims)."),
    ("pad: 1", 2, "kernel_size must be specified once, or once per spatial dimension (kernel_size specified "
     "0 times; 2 spatial dims)."),
    ("kernel_h: 3", 2, "Filter dimensions must be nonzero."),
    ("kernel_size: 3 kernel_size: 0", 2, "Filter dimensions must be nonzero."),
    ("kernel_size: 3 stride_h: 2 stride_w: 1", 3, "stride_h & stride_w can only be used for 2D convolution."),
    ("kernel_size: 3 stride: 2 stride_w: 1", 2, "Either stride or stride_h/w should be specified; not both."),
    ("kernel_size: 3 stride: 1 stride: 1 stride: 1", 2,
     "stride must be specified once, or once per spatial dimension (stride specified 3 times; 2 spatial dims)."),
    ("kernel_size: 3 stride: 0", 2, "Stride dimensions must be nonzero."),
    ("kernel_size: 3 pad_h: 1", 3, "pad_h & pad_w can only be used for 2D convolution."),
    ("kernel_size: 3 pad: 1 pad_h: 1", 2, "Either pad or pad_h/w should be specified; not both."),
    ("kernel_size: 3 pad: 1 pad: 1 pad: 1", 2,
     "pad must be specified once, or once per spatial dimension (pad specified 3 times; 2 spatial dims)."),
    ("kernel_size: 3 dilation: 1 dilation: 2 dilation: 1", 2,
     "dilation must be specified once, or once per spatial dimension (dilation specified 3 times; "
     "2 spatial dims)."),
]


def _conv(text):
    return text_format.Merge(text, caffe_pb2.ConvolutionParameter())


def _pool(text):
    return text_format.Merge(text, caffe_pb2.PoolingParameter())


# ----------------------------------------------------------------------------- resolution

@pytest.mark.parametrize("text", ASYMMETRIC_FORMS)
def test_asymmetric_values_in_every_form(text):
    g = geometry.convolution(_conv(text + " group: 2"), 2)
    assert (g.kernel, g.pad, g.stride, g.dilation) == ASYMMETRIC
    assert g.group == 2


def test_one_value_for_every_axis_and_defaults():
    g = geometry.convolution(_conv("kernel_size: 3"), 3)
    assert g == ConvGeometry((3, 3, 3), (0, 0, 0), (1, 1, 1), (1, 1, 1), 1)
    g = geometry.convolution(_conv("kernel_size: 3 kernel_size: 1 kernel_size: 2 pad: 1 stride: 2 dilation: 3"), 3)
    assert g == ConvGeometry((3, 1, 2), (1, 1, 1), (2, 2, 2), (3, 3, 3), 1)


def test_one_of_h_w_given_leaves_the_other_zero():
    """Caffe reads pad_w (default 0) as soon as pad_h is set; for the kernel that is an error."""
    assert geometry.convolution(_conv("kernel_size: 3 pad_h: 2"), 2).pad == (2, 0)
    assert geometry.convolution(_conv("kernel_size: 3 pad_w: 2"), 2).pad == (0, 2)


@pytest.mark.parametrize("text, num_spatial, message", BAD)
def test_caffe_checks_with_its_messages_naming_the_layer(text, num_spatial, message):
    with pytest.raises(NetDefinitionError) as info:
        geometry.convolution(_conv(text), num_spatial, "layer 'c' (Convolution)")
    assert str(info.value) == "layer 'c' (Convolution): " + message


def test_degenerate_values_caffe_does_not_check_are_refused():
    """A zero stride_w makes Caffe divide by zero; a zero dilation cannot be computed by torch."""
    with pytest.raises(NetDefinitionError, match="Stride dimensions must be nonzero"):
        geometry.convolution(_conv("kernel_size: 3 stride_h: 2"), 2)
    with pytest.raises(NetDefinitionError, match="dilation must be positive"):
        geometry.convolution(_conv("kernel_size: 3 dilation: 0"), 2)


def test_kaffe_p_w_bug_class_is_refused_by_the_algorithm():
    """The old resolver took the last of three pads on a 2-D convolution and ignored pad_h next to
    pad; the algorithm now reads Caffe's resolution (and refuses what Caffe refuses)."""
    with pytest.raises(NetDefinitionError, match="pad specified 3 times"):
        _adapter_geometry("kernel_size: 3 pad: 1 pad: 2 pad: 3", (4, 3, 3, 3))
    with pytest.raises(NetDefinitionError, match="Either pad or pad_h/w"):
        _adapter_geometry("kernel_size: 3 pad: 1 pad_w: 2", (4, 3, 3, 3))
    with pytest.raises(NetDefinitionError, match="does not match the weight blob"):
        _adapter_geometry("kernel_size: 3", (4, 3, 3, 5))


@pytest.mark.parametrize("text", ASYMMETRIC_FORMS)
def test_algorithm_reads_the_same_geometry(text):
    assert _adapter_geometry(text + " group: 2", (4, 3, 3, 5)) == ConvGeometry(*ASYMMETRIC, group=2)


def _adapter_geometry(text, weight_shape):
    """The geometry the Caffe adapter gives the algorithm for convolution ``c`` with ``text`` as its
    convolution_param and a weight blob of ``weight_shape``."""
    layer = caffe_pb2.LayerParameter(name="c", type="Convolution")
    text_format.Merge(text, layer.convolution_param)
    return convolution_geometry("c", layer, weight_shape)


# ----------------------------------------------------------------------------- output size

def _windows_that_fit(size, kernel, pad, stride, dilation):
    """Count output positions o >= 0 whose window o·s .. o·s + extent - 1 lies in the padded input."""
    extent = dilation * (kernel - 1) + 1
    return sum(1 for o in range(size + 2 * pad + 1) if o * stride + extent <= size + 2 * pad)


def test_conv_output_size_counts_the_windows_that_fit():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        size, kernel, pad, stride, dilation = (int(v) for v in rng.integers([1, 1, 0, 1, 1], [40, 8, 5, 5, 4]))
        out = geometry.conv_output_size(size, kernel, pad, stride, dilation)
        if size + 2 * pad >= dilation * (kernel - 1) + 1:
            assert out == _windows_that_fit(size, kernel, pad, stride, dilation)
        # Caffe's int division truncates toward zero
        span = size + 2 * pad - (dilation * (kernel - 1) + 1)
        assert out == int(span / stride) + 1


def test_deconvolution_is_the_inverse_of_convolution():
    rng = np.random.default_rng(1)
    for _ in range(2000):
        size, kernel, pad, stride, dilation = (int(v) for v in rng.integers([1, 1, 0, 1, 1], [30, 8, 4, 5, 4]))
        out = geometry.deconv_output_size(size, kernel, pad, stride, dilation)
        assert out == stride * (size - 1) + dilation * (kernel - 1) + 1 - 2 * pad
        if out >= 1:
            assert geometry.conv_output_size(out, kernel, pad, stride, dilation) == size


def test_output_spatial_asymmetric_and_window_that_does_not_fit():
    g = ConvGeometry(*ASYMMETRIC)
    # H: (9 + 2 - 3) / 2 + 1 = 5; W: (11 + 4 - 9) / 1 + 1 = 7
    assert geometry.output_spatial(g, (9, 11)) == (5, 7)
    # deconvolution: H: 2·(5 - 1) + 3 - 2 = 9; W: 1·(7 - 1) + 9 - 4 = 11
    assert geometry.output_spatial(g, (5, 7), transposed=True) == (9, 11)
    assert patches.output_extent((2, 4, 9, 11), g) == (5, 7)
    # Caffe computes (2 - 3) / 2 + 1 = 1 (C truncation) and reads outside the image; we refuse
    small = ConvGeometry((3, 3), (0, 0), (2, 2), (1, 1))
    assert geometry.conv_output_size(2, 3, 0, 2) == 1
    with pytest.raises(NetDefinitionError, match="layer 'c' .*does not fit"):
        geometry.output_spatial(small, (2, 5), where="layer 'c' (Convolution)")


# ----------------------------------------------------------------------------- pooling

def test_pool_h_w_and_global():
    w = pool_window(_pool("kernel_h: 2 kernel_w: 4 stride_h: 1 stride_w: 3 pad_h: 1 pad_w: 0"), (9, 9))
    assert w.kernel == (2, 4) and w.stride == (1, 3) and w.pad == (1, 0)
    g = pool_window(_pool("global_pooling: true kernel_size: 3 pad: 1"), (6, 7))
    assert g.kernel == (6, 7) and g.stride == (1, 1) and g.pad == (0, 0)
    with pytest.raises(NetDefinitionError):
        pool_window(_pool("kernel_size: 3 pad_h: 1"), (9, 9))   # Caffe wants pad_h and pad_w


@pytest.mark.parametrize("size, kernel, stride, pad, expected", [
    (55, 3, 2, 0, 27),       # CaffeNet pool1: exact
    (13, 3, 2, 0, 6),        # CaffeNet pool5
    (112, 3, 2, 0, 56),      # GoogLeNet pool1: ceil rounds up (floor would give 55)
    (6, 2, 2, 1, 4),         # ceil gives 4 windows; the 4th starts at 6 - 1 = 5 < 6 + 1: kept
    (5, 2, 2, 1, 3),         # ceil gives 4, but the 4th window starts at 3 * 2 = 6 >= 5 + 1: 3
])
def test_pooled_size_matches_caffe_formula(size, kernel, stride, pad, expected):
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    assert pooled_size(size, kernel, stride, pad) == out == expected


def test_pooled_size_drops_window_starting_in_padding():
    # ceil((4 + 2 - 2) / 3) + 1 = 3 and (3 - 1) * 3 = 6 >= 4 + 1 -> 2
    assert pooled_size(4, 2, 3, 1) == 2
    # without padding Caffe does not apply the correction
    assert pooled_size(5, 1, 3, 0) == 3
    assert pooled_size(5, 1, 3, 1, padded=False) == 3
    assert pooled_size(7, 3, 2, 0, ceil=False) == 3


# ----------------------------------------------------------------------------- the engine

def _net_text(kind, text, shape, num_output=4):
    dims = " ".join("dim: %d" % d for d in shape)
    return ('layer { name: "x" type: "Input" top: "x" input_param { shape { %s } } }\n'
            'layer { name: "c" type: "%s" bottom: "x" top: "y" convolution_param { num_output: %d %s } }\n'
            % (dims, kind, num_output, text))


#: (type, convolution_param text, input shape) run through Caffe, the engine and the patches.
VALID = [("Convolution", form + " group: 2", (2, 4, 9, 11)) for form in ASYMMETRIC_FORMS] + [
    ("Convolution", "kernel_size: 3 pad: 1 stride: 2 dilation: 2", (2, 3, 8, 7)),
    ("Convolution", "kernel_size: 3 pad_h: 2", (1, 2, 5, 6)),
    ("Convolution", "kernel_size: 3 kernel_size: 1 kernel_size: 2 pad: 1 stride: 2 stride: 1 stride: 1",
     (1, 2, 5, 6, 7)),
    ("Deconvolution", ASYMMETRIC_FORMS[0] + " group: 2", (2, 4, 5, 7)),
    ("Deconvolution", ASYMMETRIC_FORMS[1], (1, 3, 4, 3)),
]


@pytest.mark.parametrize("kind, text, shape", VALID)
def test_engine_top_shapes_follow_the_geometry(tmp_path, kind, text, shape):
    torch = pytest.importorskip("torch")  # noqa: F841
    from magic_init import Net
    path = tmp_path / "net.prototxt"
    path.write_text(_net_text(kind, text, shape))
    net = Net(str(path))
    g = geometry.convolution(_conv(text), len(shape) - 2)
    spatial = geometry.output_spatial(g, shape[2:], transposed=kind == "Deconvolution")
    assert net.blobs["y"].data.shape == (shape[0], 4) + spatial


@pytest.mark.parametrize("text, num_spatial, message", BAD)
def test_engine_refuses_with_caffe_messages(tmp_path, text, num_spatial, message):
    pytest.importorskip("torch")
    from magic_init import Net
    path = tmp_path / "net.prototxt"
    path.write_text(_net_text("Convolution", text, (1, 2) + (7,) * num_spatial))
    with pytest.raises(NetDefinitionError) as info:
        Net(str(path))
    assert "layer 'c' (Convolution): " + message in str(info.value)


# ----------------------------------------------------------------------------- real Caffe

_CAFFE_CASES = r"""
import json, os, subprocess, sys
folder = sys.argv[1]
cases = json.load(open(os.path.join(folder, "cases.json")))
worker = '''
import sys, numpy as np, caffe
net = caffe.Net(sys.argv[1], caffe.TEST)
out = sys.argv[2]
if out != "-":
    rng = np.random.RandomState(0)
    net.blobs["x"].data[...] = rng.randn(*net.blobs["x"].data.shape)
    for blob in net.params["c"]:
        blob.data[...] = rng.randn(*blob.data.shape)
    net.forward()
    np.savez(out, x=net.blobs["x"].data, w=net.params["c"][0].data, b=net.params["c"][1].data,
             y=net.blobs["y"].data)
print("SHAPE", list(net.blobs["y"].data.shape))
'''
results = []
for i, case in enumerate(cases):
    path = os.path.join(folder, "net%d.prototxt" % i)
    open(path, "w").write(case["net"])
    out = os.path.join(folder, "out%d.npz" % i) if case["forward"] else "-"
    proc = subprocess.run([sys.executable, "-c", worker, path, out], capture_output=True, text=True,
                          env=dict(os.environ, GLOG_minloglevel="2"))
    shape = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("SHAPE ")]
    results.append({"returncode": proc.returncode, "shape": json.loads(shape[0]) if shape else None,
                    "stderr": proc.stderr[-2000:]})
json.dump(results, open(os.path.join(folder, "results.json"), "w"))
"""


def test_geometry_against_real_caffe(caffe_env):
    """Caffe's top shapes and check messages equal ours; its top values equal those computed from
    the patches the algorithm gathers (Convolution) and the engine's (when torch is installed)."""
    host, inside = caffe_env.tmpdir()
    cases = [{"net": _net_text(kind, text, shape), "forward": True} for kind, text, shape in VALID]
    cases += [{"net": _net_text("Convolution", text, (1, 2) + (7,) * n), "forward": False} for text, n, _ in BAD]
    # C's truncating division: the window does not fit and Caffe still reports a 1-pixel output
    cases.append({"net": _net_text("Convolution", "kernel_size: 3 stride: 2", (1, 2, 2, 5)), "forward": False})
    (host / "cases.json").write_text(json.dumps(cases))
    caffe_env.python(_CAFFE_CASES, inside, timeout=600)
    results = json.loads((host / "results.json").read_text())

    for i, (kind, text, shape) in enumerate(VALID):
        assert results[i]["returncode"] == 0, results[i]["stderr"]
        g = geometry.convolution(_conv(text), len(shape) - 2)
        spatial = geometry.output_spatial(g, shape[2:], transposed=kind == "Deconvolution")
        assert tuple(results[i]["shape"]) == (shape[0], 4) + spatial, (kind, text)
        ref = np.load(host / ("out%d.npz" % i))
        if kind == "Convolution" and len(shape) == 4:
            _check_patches_against(ref, g)
        _check_engine_against(ref, kind, text, shape)

    for j, (text, _, message) in enumerate(BAD):
        result = results[len(VALID) + j]
        assert result["returncode"] != 0 and message in result["stderr"], (text, result["stderr"])

    last = results[-1]
    assert last["returncode"] == 0 and last["shape"] == [1, 4, 1, 2]
    assert geometry.conv_output_size(2, 3, 0, 2) == 1 and geometry.conv_output_size(5, 3, 0, 2) == 2


def _check_patches_against(ref, g):
    """Caffe's top at every output location from the algorithm's patches: W_g · patch + b."""
    x, w, b, y = ref["x"], ref["w"], ref["b"], ref["y"]
    n, out_h, out_w = y.shape[0], y.shape[2], y.shape[3]
    images, ys, xs = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(out_h), np.arange(out_w),
                                                     indexing="ij"))
    groups = patches.patches_at(x, g, images, (ys, xs))
    per_group = w.shape[0] // g.group
    ours = np.concatenate([groups[k] @ w[k * per_group:(k + 1) * per_group].reshape(per_group, -1).T
                           for k in range(g.group)], axis=1) + b
    expected = y.transpose(0, 2, 3, 1).reshape(-1, w.shape[0])
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def _check_engine_against(ref, kind, text, shape):
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    import tempfile
    from pathlib import Path

    from magic_init import Net
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "net.prototxt"
        path.write_text(_net_text(kind, text, shape))
        net = Net(str(path))
    net.params["c"][0].data[...] = ref["w"]
    net.params["c"][1].data[...] = ref["b"]
    y = net.forward(x=ref["x"])["y"]
    np.testing.assert_allclose(y, ref["y"], rtol=1e-4, atol=1e-4, err_msg="%s %s" % (kind, text))

"""Top shapes that layers compute themselves (``same_shape``/``output_shapes``) equal the shapes
their forward produces on shape-only tensors, for every conformance case and models/ net (the
conformance suite then checks every blob shape against real Caffe); and bad shapes fail at build."""
from __future__ import annotations

import pytest
from google.protobuf import text_format

from caffe_ref.cases import all_cases, case_file_text
from magic_init.engine import Net, building
from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2


def _nets():
    for case in all_cases():
        yield case.name, case_file_text(case), case.phase, case.inputs


@pytest.mark.parametrize("name,text,phase,inputs", list(_nets()), ids=[c.name for c in all_cases()])
def test_computed_top_shapes_equal_forward_on_meta_tensors(name, text, phase, inputs):
    net_param = caffe_pb2.NetParameter()
    text_format.Merge(text, net_param)
    net = Net(net_param, phase=phase, input_shapes={k: tuple(v) for k, v in inputs.items()})
    for layer, bottoms, tops in zip(net.layers, net.bottom_names.values(), net.top_names.values()):
        if layer.type == "Input":
            continue
        bottom_shapes = [net.blobs[b].shape for b in bottoms]
        on_meta = building._run_on(layer, bottom_shapes, [b.shape for b in layer.blobs], "meta")
        assert [net.blobs[t].shape for t in tops] == on_meta, layer.name


def _net_text(body, shapes):
    tops = "".join('top: "%s" ' % n for n in shapes)
    dims = "".join("shape { %s } " % " ".join("dim: %d" % d for d in s) for s in shapes.values())
    return 'layer { name: "in" type: "Input" %s input_param { %s } }\n%s' % (tops, dims, body)


@pytest.mark.parametrize("body,shapes,message", [
    ('layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "y" }',
     {"a": (2, 3, 4, 4), "b": (2, 3, 1, 1)}, "same shape"),
    ('layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" }',
     {"a": (2, 3, 4, 4), "b": (2, 3, 5, 4)}, "differ outside axis 1"),
    ('layer { name: "l" type: "SoftmaxWithLoss" bottom: "a" bottom: "b" top: "y" }',
     {"a": (2, 3, 4, 4), "b": (2, 8)}, "16 labels for 32 predictions"),
    ('layer { name: "conv" type: "Convolution" bottom: "a" top: "y" '
     'convolution_param { num_output: 2 kernel_size: 5 } }', {"a": (1, 3, 4, 4)}, "does not fit"),
])
def test_shape_errors_name_the_layer_at_build(tmp_path, body, shapes, message):
    path = tmp_path / "net.prototxt"
    path.write_text(_net_text(body, shapes))
    with pytest.raises(NetDefinitionError, match=message):
        Net(str(path))

"""Our schema (proto/caffe.proto -> magic_init/proto/caffe_pb2.py) against Debian pycaffe's."""
from __future__ import annotations

import base64
import importlib.util
import os

import pytest
from google.protobuf import descriptor_pb2

from magic_init.proto import caffe_pb2

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def file_proto(serialized: bytes) -> "descriptor_pb2.FileDescriptorProto":
    return descriptor_pb2.FileDescriptorProto.FromString(serialized)


def messages_by_name(proto):
    """Every message (nested ones included) by full name."""
    found = {}

    def visit(message, prefix):
        name = prefix + message.name
        found[name] = message
        for nested in message.nested_type:
            visit(nested, name + ".")
    for message in proto.message_type:
        visit(message, "")
    return found


def enums_by_name(proto):
    found = {e.name: e for e in proto.enum_type}
    for name, message in messages_by_name(proto).items():
        found.update({name + "." + e.name: e for e in message.enum_type})
    return found


def field_signature(field):
    """What must agree: number, type (and referenced type), label, default."""
    return (field.number, field.type, field.type_name.lstrip("."), field.label,
            field.default_value if field.HasField("default_value") else None)


@pytest.fixture(scope="module")
def pycaffe_schema(caffe_env):
    out = caffe_env.python("import base64; from caffe.proto import caffe_pb2; "
                           "print(base64.b64encode(caffe_pb2.DESCRIPTOR.serialized_pb).decode())").stdout
    return file_proto(base64.b64decode(out.strip().splitlines()[-1]))


def test_every_pycaffe_field_exists_in_ours_with_the_same_signature(pycaffe_schema):
    ours = messages_by_name(file_proto(caffe_pb2._SERIALIZED))
    problems = []
    for name, theirs in messages_by_name(pycaffe_schema).items():
        if name not in ours:
            problems.append("message %s missing" % name)
            continue
        our_fields = {f.name: f for f in ours[name].field}
        for field in theirs.field:
            if field.name not in our_fields:
                problems.append("%s.%s missing" % (name, field.name))
            elif field_signature(our_fields[field.name]) != field_signature(field):
                problems.append("%s.%s: ours %s, pycaffe %s" % (
                    name, field.name, field_signature(our_fields[field.name]), field_signature(field)))
    assert problems == []
    assert len(messages_by_name(pycaffe_schema)) > 50  # the comparison really ran (63 in Debian 1.0)


def test_every_pycaffe_enum_value_exists_in_ours(pycaffe_schema):
    ours = enums_by_name(file_proto(caffe_pb2._SERIALIZED))
    for name, theirs in enums_by_name(pycaffe_schema).items():
        assert name in ours, name
        our_values = {v.name: v.number for v in ours[name].value}
        for value in theirs.value:
            assert our_values.get(value.name) == value.number, (name, value.name)


def test_our_caffe_pb2_imports_and_works_under_protobuf_3_12(caffe_env):
    out = caffe_env.python(
        "import google.protobuf as p; from magic_init.proto import caffe_pb2 as c; "
        "n = c.NetParameter(); n.layer.add(name='x', type='ReLU'); "
        "m = c.NetParameter.FromString(n.SerializeToString()); "
        "print(p.__version__, m.layer[0].type, c.TEST, c.PoolingParameter.AVE)").stdout.split()
    assert out[0].startswith("3.12") and out[1:] == ["ReLU", "1", "1"]


def test_our_caffe_pb2_works_under_host_protobuf():
    net = caffe_pb2.NetParameter(name="n")
    net.layer.add(name="x", type="ReLU")
    assert caffe_pb2.NetParameter.FromString(net.SerializeToString()) == net
    assert caffe_pb2.TRAIN == 0 and caffe_pb2.V1LayerParameter.INNER_PRODUCT == 14


def test_committed_caffe_pb2_is_what_the_generator_writes_now():
    pytest.importorskip("grpc_tools")
    spec = importlib.util.spec_from_file_location("gen_caffe_pb2", os.path.join(REPO, "scripts", "gen_caffe_pb2.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    with open(os.path.join(REPO, "magic_init", "proto", "caffe_pb2.py")) as f:
        committed = f.read()
    assert committed == gen.module_text(gen.compile_descriptor()), \
        "magic_init/proto/caffe_pb2.py is stale: run python scripts/gen_caffe_pb2.py"

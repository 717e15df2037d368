def test_caffe_env_imports_caffe_and_our_schema(caffe_env):
    out = caffe_env.python(
        "import caffe; from magic_init.proto import caffe_pb2; print(caffe_pb2.TEST, caffe.__file__)").stdout
    assert out.split()[0] == "1"

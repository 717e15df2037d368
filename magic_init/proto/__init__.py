"""The Caffe schema (``proto/caffe.proto``) as Python message classes: ``from magic_init.proto import caffe_pb2``."""

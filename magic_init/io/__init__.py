"""Caffe model files without Caffe: prototxt, caffemodel (binary/text/HDF5), binaryproto means,
legacy-format upgrades, blob <-> array conversion, atomic writes and weight copy by name."""
from magic_init.io.atomic import atomic_write
from magic_init.io.blobs import array_to_blob, blob_to_array
from magic_init.io.caffemodel import CaffeModel, read_caffemodel, write_caffemodel
from magic_init.io.mean import read_mean_file
from magic_init.io.outputs import STDOUT, check_output, file_kind, same_file
from magic_init.io.prototxt import parse_prototxt, read_prototxt
from magic_init.io.upgrade import upgrade_net
from magic_init.io.weights import copy_weights, match_weights

__all__ = [
    "STDOUT", "CaffeModel", "array_to_blob", "atomic_write", "blob_to_array", "check_output", "copy_weights",
    "file_kind", "match_weights", "parse_prototxt", "read_caffemodel", "read_mean_file", "read_prototxt",
    "same_file", "upgrade_net", "write_caffemodel",
]

"""Our sample pipeline against real Caffe's ImageData and Data layers (scripts/caffe-env).

Reference arrays come from pycaffe forward passes in the chroot; ours from magic_init.data on the
host. Decoding, crop, mean and scale are exact; resize is our numpy re-implementation of OpenCV's
INTER_LINEAR, which is bit-exact with Debian's OpenCV 4.5.1, so every comparison is exact.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from google.protobuf import text_format

from magic_init.data import LmdbDatums, SampleReader, Transform, read_image_list, source_from_layer
from magic_init.data.images import read_image
from magic_init.proto import caffe_pb2

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "images")
LIST = os.path.join(EXAMPLES, "list.txt")

RUN_LAYER = r"""
import json, sys, tempfile, numpy as np, caffe
caffe.set_mode_cpu()
layer, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
f = tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False)
f.write(layer); f.close()
net = caffe.Net(f.name, caffe.TEST)
arrays = {}
for i in range(n):
    net.forward()
    arrays["data%d" % i] = net.blobs["data"].data[0].copy()
    arrays["label%d" % i] = net.blobs["label"].data[0].copy()
np.savez(out, **arrays)
"""


def caffe_forward(caffe_env, layer_text, n):
    """Run a one-layer net (batch_size 1) n times in real Caffe; return [(data, label)]."""
    host, inside = caffe_env.tmpdir()
    caffe_env.python(RUN_LAYER, layer_text, str(n), inside + "/out.npz")
    ref = np.load(os.path.join(str(host), "out.npz"))
    return [(ref["data%d" % i], ref["label%d" % i]) for i in range(n)]


def image_data_layer(list_path, root, h=0, w=0, is_color=True, transform=""):
    """A one-layer ImageData net as prototxt text (root_folder is prepended to the listed names)."""
    return """layer { name: "data" type: "ImageData" top: "data" top: "label"
      image_data_param { source: "%s" root_folder: "%s/" batch_size: 1
                         new_height: %d new_width: %d is_color: %s }
      transform_param { %s } }""" % (list_path, root, h, w, "true" if is_color else "false", transform)


IMAGE_DATA_CASES = {
    "downscale_227_mean": dict(h=227, w=227, transform="mean_value: 104 mean_value: 117 mean_value: 123"),
    "upscale_aspect_crop_scale": dict(h=351, w=402, transform="crop_size: 300 mean_value: 100 scale: 0.017"),
    "resize_256_crop_227": dict(h=256, w=256, transform="crop_size: 227 mean_value: 104 mean_value: 117 "
                                                        "mean_value: 123 scale: 0.5"),
    "exact_half": dict(h=100, w=150, transform=""),  # 200x300 photos take OpenCV's INTER_AREA path
    "gray": dict(h=120, w=90, is_color=False, transform="mean_value: 128 scale: 0.00390625"),
    "no_resize_crop": dict(transform="crop_size: 199 mean_value: 1 mean_value: 2 mean_value: 3"),
}


@pytest.mark.parametrize("case", sorted(IMAGE_DATA_CASES))
def test_image_data_layer_matches_caffe_exactly(caffe_env, case):
    params = IMAGE_DATA_CASES[case]
    expected = caffe_forward(caffe_env, image_data_layer(caffe_env.to_chroot(LIST),
                                                         caffe_env.to_chroot(EXAMPLES), **params), 8)
    net = caffe_pb2.NetParameter()
    text_format.Merge(image_data_layer(os.path.abspath(LIST), os.path.abspath(EXAMPLES), **params), net)
    source, transform = source_from_layer(net.layer[0])
    for i, (want, want_label) in enumerate(expected):
        image, label = source.read(i)
        got = transform(image, name=source.item_name(i))
        assert got.shape == want.shape, source.item_name(i)
        np.testing.assert_array_equal(got, want, err_msg=source.item_name(i))
        assert label == int(want_label)


def test_mean_file_matches_caffe(caffe_env):
    host, inside = caffe_env.tmpdir()
    mean = np.random.RandomState(3).uniform(0, 255, (3, 256, 256)).astype(np.float32)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([1, 3, 256, 256])
    blob.data.extend(mean.ravel().tolist())
    with open(os.path.join(str(host), "mean.binaryproto"), "wb") as f:
        f.write(blob.SerializeToString())
    transform_text = 'crop_size: 227 mean_file: "%s/mean.binaryproto" scale: 0.25' % inside
    expected = caffe_forward(caffe_env, image_data_layer(caffe_env.to_chroot(LIST), caffe_env.to_chroot(EXAMPLES),
                                                         256, 256, transform=transform_text), 8)
    files = read_image_list(LIST)
    param = caffe_pb2.TransformationParameter(crop_size=227, scale=0.25,
                                              mean_file=os.path.join(str(host), "mean.binaryproto"))
    transform = Transform.from_proto(param, resize=(256, 256))
    for i, (want, _) in enumerate(expected):
        np.testing.assert_array_equal(transform(files.read(i)[0]), want, err_msg=files.paths[i])


def write_datum_lmdb(path, encoded):
    """Examples as Datums: raw CHW BGR uint8 bytes, or the JPEG file bytes (encoded: true)."""
    lmdb = pytest.importorskip("lmdb")
    files = read_image_list(LIST)
    with lmdb.open(path, map_size=1 << 26) as env, env.begin(write=True) as txn:
        for i, image_path in enumerate(files.paths):
            datum = caffe_pb2.Datum(label=files.labels[i])
            if encoded:
                with open(image_path, "rb") as f:
                    datum.data, datum.encoded = f.read(), True
            else:
                image = read_image(image_path)
                datum.channels, datum.height, datum.width = image.shape[2], image.shape[0], image.shape[1]
                datum.data = image.transpose(2, 0, 1).tobytes()
            txn.put(b"%08d" % i, datum.SerializeToString())
    return len(files)


@pytest.mark.parametrize("encoded", [False, True], ids=["raw", "encoded"])
def test_lmdb_data_layer_matches_caffe(caffe_env, encoded):
    host, inside = caffe_env.tmpdir()
    n = write_datum_lmdb(os.path.join(str(host), "db"), encoded)
    layer_template = """layer { name: "data" type: "Data" top: "data" top: "label"
      data_param { source: "%s" backend: LMDB batch_size: 1 }
      transform_param { crop_size: 190 mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.125 %s } }"""
    # the gray JPEG decodes to 1 channel natively; Caffe then needs force_color for 3 mean values
    force = "force_color: true" if encoded else ""
    expected = caffe_forward(caffe_env, layer_template % (inside + "/db", force), n)
    net = caffe_pb2.NetParameter()
    text_format.Merge(layer_template % (os.path.join(str(host), "db"), force), net)
    source, transform = source_from_layer(net.layer[0])
    assert isinstance(source, LmdbDatums) and len(source) == n
    reader = SampleReader(source, transform, num_images=n)
    got = [batch for batch in reader.batches(batch_size=1)]
    for (want, want_label), batch in zip(expected, got):
        np.testing.assert_array_equal(batch.data[0], want, err_msg=batch.names[0])
        assert batch.labels[0] == int(want_label)


def test_pipeline_gives_the_same_sample_on_python39_numpy119(caffe_env):
    """The pycaffe backend runs in the chroot (older numpy/PIL/protobuf): same bytes as on the host."""
    host, inside = caffe_env.tmpdir()
    code = ("import sys, numpy as np; from magic_init.data import load_sample, Transform; "
            "s = load_sample(sys.argv[1], Transform.imagenet(size=(61, 67)).with_options(scale=0.5), "
            "num_images=6, seed=4); np.savez(sys.argv[2], data=s.data, labels=s.labels)")
    caffe_env.python(code, caffe_env.to_chroot(LIST), inside + "/s.npz")
    theirs = np.load(os.path.join(str(host), "s.npz"))
    from magic_init.data import load_sample
    ours = load_sample(LIST, Transform.imagenet(size=(61, 67)).with_options(scale=0.5), num_images=6, seed=4)
    np.testing.assert_array_equal(ours.data, theirs["data"])
    np.testing.assert_array_equal(ours.labels, theirs["labels"])

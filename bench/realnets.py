"""The real-nets corpus (issue 11): every published net in ``../shared/realnets/``, run as a new user would.

    python bench/realnets.py [--corpus ../shared/realnets] [--num-images 8] [--batch-size 4] \
        [--small] [--nets NAME,...] [--no-caffe] [--json FILE] [--markdown FILE]

Per net, one fresh process runs the command a user would type::

    magic_init NET OUT.caffemodel --data examples/images/list.txt --num-images 8 --batch-size 4

with ``--size`` only where the net itself gives no input size (its data layer reads a database
or a Python layer; ``NATURAL_SIZE`` names the size its data has). ``--small`` runs every net at
the smallest input its geometry accepts (``SMALL_SIZE``, for the CI test) with fewer images.
Recorded: the exit code, the wall time and the process's peak RSS (``os.wait4``), the last line
of the log (the error, for a net that fails), and whether the written model loads and runs
forward in real Caffe: ``caffe.Net(prototxt, model, caffe.TEST)`` in ``scripts/caffe-env``, with
random inputs, every output finite. Nets with data layers go to real Caffe as the instantiated
prototxt (data layers replaced by ``Input`` layers of the shape the run used); the others as
published. The table goes to stdout (and ``--markdown``), everything to ``--json``.

Expected outcomes (``EXPECTED``): ``ok`` (runs, loads in real Caffe) or ``unsupported`` (fails
with one line naming a layer that only a Caffe fork or a Python module provides).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

import common  # bench/common.py: `python bench/X.py` puts bench/ first on sys.path

CORPUS = common.REPO.parent / "shared" / "realnets"
IMAGES = common.REPO / "examples" / "images" / "list.txt"

#: Nets whose prototxt gives no input size (a database or Python data layer): the size of their data.
NATURAL_SIZE = {
    "bvlc_cifar10__cifar10_full_sigmoid_train_test_bn": 32,
    "bvlc_mnist__lenet_train_test": 28,
    "nin__cifar10_nin_train_val": 32,
    "fcn__voc-fcn32s_train": 500,
}

#: The smallest input (height = width) each net's geometry accepts, or a little above it (--small).
SMALL_SIZE = {
    "bigan__alexnet_deploy": 67, "bvlc_alexnet__deploy": 67, "bvlc_rcnn_ilsvrc13__deploy": 67,
    "finetune_flickr_style__deploy": 67, "v0_bvlc2014__imagenet_deploy": 67,
    "v1_bvlc2014__imagenet_deploy": 67, "bvlc_reference_caffenet__train_val": 67,
    "bvlc_googlenet__deploy": 224, "inception__deploy_inception-v2": 231,
    "inception__deploy_inception-v3": 299, "resnet__ResNet-50-deploy": 224,
    "resnet__ResNet-101-deploy": 224, "mobilenet__mobilenet_deploy": 224,
    "squeezenet__v1.0_deploy": 64, "squeezenet__v1.1_deploy": 64,
    "vgg__VGG_ILSVRC_19_layers_deploy": 224, "colorization__colorization_deploy_v2": 64,
    "fcn__voc-fcn8s_deploy": 64, "fcn__voc-fcn32s_train": 64,
    "bvlc_cifar10__cifar10_full_sigmoid_train_test_bn": 32, "bvlc_mnist__lenet_train_test": 28,
    "nin__cifar10_nin_train_val": 32,
}

OK, UNSUPPORTED = "ok", "unsupported"
#: What each net is expected to do (a net not listed is expected to run).
EXPECTED = {
    "fasterrcnn__ZF_end2end_test": UNSUPPORTED,       # Python (proposal layer), ROIPooling
    "fastrcnn__VGG16_fast_rcnn_test": UNSUPPORTED,    # ROIPooling
    "segnet__segnet_inference": UNSUPPORTED,          # Upsample (SegNet's fork)
    "ssd__MobileNetSSD_deploy": UNSUPPORTED,          # Permute, PriorBox, DetectionOutput (SSD's fork)
}

# Inside the chroot: load each (prototxt, model) in real Caffe, forward random inputs, report.
CAFFE_CHECK = r"""
import json, sys
import numpy as np
import caffe
caffe.set_mode_cpu()
for prototxt, model in json.loads(sys.argv[1]):
    try:
        net = caffe.Net(prototxt, model, caffe.TEST)
        rng = np.random.RandomState(0)
        for name in net.inputs:
            blob = net.blobs[name]
            blob.data[...] = rng.uniform(0, 1, blob.data.shape) if blob.data.ndim < 4 else \
                rng.normal(0, 50, blob.data.shape)
        out = net.forward()
        bad = [k for k, v in out.items() if not np.all(np.isfinite(v))]
        print(json.dumps({"model": model, "loads": True, "finite": not bad,
                          "error": "non-finite output %s" % bad if bad else None}))
    except Exception as exc:
        print(json.dumps({"model": model, "loads": False, "finite": False, "error": repr(exc)[:300]}))
"""


# With the written model, on the sample images (built-in engine): the loss a softmax head starts
# from under uniform random labels, E[−log p_y] = mean over classes of −log softmax(z), per head.
START_LOSS = r"""
import json, sys
import numpy as np
import magic_init
proto, model_path, data, n, b, size = sys.argv[1:7]
size = None if size == "-" else (int(size), int(size))
model = magic_init.read_model(proto, model_path)
net = magic_init.build_net(model, backend="torch", batch_size=int(b), size=size)
sample = magic_init.load_sample(net, model, data=data, num_images=int(n), batch_size=int(b))
heads = {}
for layer in model.net.layer:
    if layer.type == "Softmax" and layer.top[0] in net.blobs:
        heads[layer.top[0]] = "prob"
    elif layer.type == "SoftmaxWithLoss" and layer.bottom[0] in net.blobs:
        heads[layer.bottom[0]] = "logits"
x = sample.data if not isinstance(sample.data, dict) else sample.data[net.inputs[0]]
losses = {h: [] for h in heads}
for i in range(0, len(x), int(b)):
    net.blobs[net.inputs[0]].data[...] = x[i:i + int(b)]
    net.forward()
    for h, kind in heads.items():
        z = np.asarray(net.blobs[h].data, np.float64)
        z = np.moveaxis(z.reshape(z.shape[0], z.shape[1], -1), 1, 2).reshape(-1, z.shape[1])
        if kind == "logits":
            z = z - z.max(1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        else:
            logp = np.log(np.maximum(z, 1e-45))
        losses[h].append(-logp.mean(1))
print(json.dumps({h: {"loss": float(np.concatenate(v).mean()), "classes": int(net.blobs[h].data.shape[1])}
                  for h, v in losses.items()}))
"""


def corpus(folder, names=None):
    """The corpus's prototxt files, sorted by name (``names``: only these stems)."""
    paths = sorted(Path(folder).glob("*.prototxt"))
    return [p for p in paths if names is None or p.stem in names]


def size_for(stem, small):
    """The ``--size`` to pass: the net's small size with ``small``, else its natural size or None."""
    return SMALL_SIZE.get(stem) if small else NATURAL_SIZE.get(stem)


def run_net(path, work, num_images, batch_size, size, timeout, data=IMAGES):
    """Run magic_init on one net (``data``: the sample's list file); return its record (outcome, wall
    time, peak RSS, last log line)."""
    out = Path(work) / (path.stem + ".caffemodel")
    argv = ["timeout", str(timeout), sys.executable, "-m", "magic_init", str(path), str(out),
            "--data", str(data), "--num-images", str(num_images), "--batch-size", str(batch_size), "-q"]
    if size is not None:
        argv += ["--size", str(size)]
    result = common.run_measured(argv)
    log = [line for line in result["stderr"].splitlines() if line.strip()]
    return {"net": path.stem, "size": size, "rc": result["rc"], "wall_s": round(result["wall_s"], 2),
            "peak_rss_mb": round(result["peak_rss_mb"], 1), "last_line": log[-1] if log else "",
            "log_lines": len(log), "traceback": "Traceback" in result["stderr"],
            "model": str(out) if result["rc"] == 0 and out.exists() else None}


def start_loss(record, path, num_images, batch_size):
    """Add ``start_loss``: per softmax head, the loss under uniform labels and ln(classes)."""
    size = "-" if record["size"] is None else str(record["size"])
    result = common.run_measured([sys.executable, "-c", START_LOSS, str(path), record["model"], str(IMAGES),
                                  str(num_images), str(batch_size), size])
    record["start_loss"] = common.last_json_line(result["stdout"]) or {}


def caffe_prototxt(path, size, batch_size, folder, model_path):
    """The prototxt real Caffe gets: the published one, or (data layers) the instantiated one; where
    ``--size`` changed a layer's weights, the prototxt the run wrote beside the model instead."""
    import magic_init
    from magic_init import layer_facts, load
    from google.protobuf import text_format

    if size is not None:
        fitting = Path(model_path).with_suffix(".size%dx%d.prototxt" % (size, size))
        path = fitting if fitting.exists() else path
    model = magic_init.read_model(str(path))
    if not any(layer_facts.is_data_layer(layer) for layer in model.net.layer):
        target = Path(folder) / path.name
        if Path(path).resolve() != target.resolve():
            shutil.copyfile(path, target)
        return target
    size = None if size is None else (size, size)
    net = load.instantiate_for_run(model, 1, size)
    target = Path(folder) / (path.stem + ".instantiated.prototxt")
    target.write_text(text_format.MessageToString(net))
    return target


def check_in_caffe(record):
    """Add ``loads``/``finite``/``caffe_error`` to a record with a written model (its own chroot
    process: a failed CHECK in Caffe aborts the process)."""
    pair = [(common.chroot_tmp(record["caffe_prototxt"]), common.chroot_tmp(record["model"]))]
    proc = common.run_measured(common.caffe_env_argv(["python3", "-c", CAFFE_CHECK, json.dumps(pair)]))
    item = common.last_json_line(proc["stdout"])
    if item is None:
        lines = [line for line in proc["stderr"].splitlines() if "Check failed" in line or "Error" in line]
        item = {"loads": False, "finite": False,
                "error": (lines[-1] if lines else "real Caffe exited with %d" % proc["rc"])[:300]}
    record.update(loads=item["loads"], finite=item["finite"], caffe_error=item["error"])


def outcome(record):
    """``ok`` when the run succeeded (and, where checked, real Caffe loads and runs the model)."""
    if record["rc"] == 0:
        return OK if record.get("loads", True) and record.get("finite", True) else "wrong"
    return UNSUPPORTED if "does not support it" in record["last_line"] else "failed"


def loss_ratio(record):
    """The largest start loss / ln(classes) over the net's softmax heads (None without one)."""
    heads = record.get("start_loss") or {}
    ratios = [h["loss"] / np.log(h["classes"]) for h in heads.values() if h["classes"] > 1]
    return max(ratios) if ratios else None


def table(records):
    rows = []
    for r in records:
        ratio = loss_ratio(r)
        rows.append([r["net"], r["size"] or "-", r["outcome"], EXPECTED.get(r["net"], OK),
                     "%.1f" % r["wall_s"], "%.0f" % r["peak_rss_mb"],
                     {True: "yes", False: "NO"}.get(r.get("loads"), "-"),
                     "-" if ratio is None else "%.2f" % ratio,
                     (r["last_line"] if r["rc"] else (r.get("caffe_error") or ""))[:110]])
    return common.format_table(["net", "--size", "outcome", "expected", "wall s", "peak MB",
                                "loads in Caffe", "start loss / ln C", "message"], rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=str(CORPUS))
    parser.add_argument("--nets", help="comma-separated net names (file stems)")
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--small", action="store_true", help="each net at its smallest input size")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per net")
    parser.add_argument("--no-caffe", action="store_true", help="skip the real-Caffe check")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)

    names = set(args.nets.split(",")) if args.nets else None
    nets = corpus(args.corpus, names)
    if not nets:
        raise SystemExit("no nets in %s" % args.corpus)
    work = Path(tempfile.mkdtemp(prefix="realnets-", dir=str(common.chroot_tmp_root()))) \
        if not args.no_caffe else Path(tempfile.mkdtemp(prefix="realnets-"))
    records = []
    try:
        for path in nets:
            size = size_for(path.stem, args.small)
            record = run_net(path, work, args.num_images, args.batch_size, size, args.timeout)
            if record["model"]:
                record["caffe_prototxt"] = str(caffe_prototxt(path, size, args.batch_size, work, record["model"]))
                start_loss(record, path, args.num_images, args.batch_size)
                if not args.no_caffe:
                    check_in_caffe(record)
                Path(record["model"]).unlink()
            records.append(record)
            print("%-55s rc %d  %6.1f s  %6.0f MB  %s" % (record["net"], record["rc"], record["wall_s"],
                                                       record["peak_rss_mb"], record["last_line"][:100]),
                  flush=True)
        for r in records:
            r["outcome"] = outcome(r)
            r["expected"] = EXPECTED.get(r["net"], OK)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(records)
    print(text)
    report = {"machine": common.machine(), "load_average": common.load_average(), "small": args.small,
              "num_images": args.num_images, "batch_size": args.batch_size, "nets": records}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()

"""Real-Caffe side of the Fashion-MNIST benchmarks (runs in the chroot: Python 3.9, pycaffe, no torch).

    python3 bench/fashion_caffe.py fill PROTOTXT FILLER_NAME SEED OUT.caffemodel
    python3 bench/fashion_caffe.py train SOLVER WEIGHTS ITERS EVAL_EVERY OUT.json [SNAPSHOT.caffemodel]
    python3 bench/fashion_caffe.py original SNAPSHOT_DIR TRAIN_PROTOTXT OUT.caffemodel SEED [ORIGINAL'S FLAGS]
    python3 bench/fashion_caffe.py agree TRAIN_PROTOTXT MODEL_A MODEL_B BLOB TEST_ITER OUT.json
    python3 bench/fashion_caffe.py start TRAIN_PROTOTXT MODEL BATCHES OUT.json

``fill`` saves the weights Caffe's own fillers give an untouched TRAIN net (``caffe.set_random_seed``),
the baseline "Caffe filler" init. ``train`` is ``caffe train --weights WEIGHTS`` with pycaffe's
``SGDSolver``, measuring test accuracy (mean of the TEST net's Accuracy over ``test_iter`` batches)
every EVAL_EVERY iterations, including iteration 0. ``original`` runs the original research code
(github philkr/magic_init, from a snapshot folder outside the project) on the train prototxt with its
own data layer, on the CPU (its ``set_mode_gpu``/``set_device`` calls become CPU mode), seeded.
``agree`` compares two models' predictions on the TEST batches. ``start`` describes where SGD starts
from a model: over BATCHES training batches (TRAIN phase, dropout active, seeded), the loss, the std of
the last affine layer's output (the logits), and per affine layer ‖∂loss/∂W‖/‖W‖, the relative size of
the first SGD step per unit learning rate. Used by train_few_labels.py and
rescale_pretrained.py.
"""
from __future__ import annotations

import json
import math
import sys
import time


def _caffe():
    import caffe  # only inside the real-Caffe environment
    caffe.set_mode_cpu()
    return caffe


def fill(prototxt, seed, out):
    """Weights of a freshly built TRAIN net: Caffe's fillers, seeded."""
    caffe = _caffe()
    caffe.set_random_seed(int(seed))
    net = caffe.Net(prototxt, caffe.TRAIN)
    net.save(out)


def test_accuracy(solver, test_iter):
    """(accuracy, loss) averaged over ``test_iter`` TEST batches (the solver's shared-weight test net)."""
    net = solver.test_nets[0]
    net.share_with(solver.net)  # what Solver::Test does first; pycaffe's test_nets hold their own copies
    acc = loss = 0.0
    for _ in range(test_iter):
        out = net.forward()
        acc += float(out["accuracy"])
        loss += float(out["loss"])
    return acc / test_iter, loss / test_iter


def train(solver_path, weights, iters, eval_every, out_json, snapshot=None, test_iter=10):
    """SGD from ``weights``; JSON with the test-accuracy curve, final train loss and wall time.

    Stops at the first non-finite training loss (``diverged``): Caffe's Accuracy layer sorts NaN
    scores with std::partial_sort, which is undefined behaviour and can crash the process.
    """
    caffe = _caffe()
    solver = caffe.SGDSolver(solver_path)
    solver.net.copy_from(weights)
    curve, start, done, diverged = [], time.time(), 0, False
    while True:
        train_loss = float(solver.net.blobs["loss"].data) if done else None
        if done and not math.isfinite(train_loss):
            diverged = True
            curve.append({"iter": done, "test_accuracy": None, "test_loss": None, "train_loss": train_loss})
            break
        acc, loss = test_accuracy(solver, test_iter)
        curve.append({"iter": done, "test_accuracy": acc, "test_loss": loss, "train_loss": train_loss})
        if done >= iters:
            break
        step = min(eval_every, iters - done)
        solver.step(step)
        done += step
    if snapshot:
        solver.net.save(snapshot)
    result = {"curve": curve, "final_test_accuracy": curve[-1]["test_accuracy"], "diverged": diverged,
              "seconds": time.time() - start, "iters": iters, "weights": weights, "solver": solver_path}
    with open(out_json, "w") as f:
        json.dump(result, f, indent=1)


def original(snapshot, prototxt, out, seed, flags):
    """``python magic_init.py PROTOTXT OUT FLAGS`` of the original, in this process, CPU-only and seeded."""
    import importlib.util
    import numpy as np
    caffe = _caffe()
    caffe.set_mode_gpu = caffe.set_mode_cpu          # Debian's Caffe is CPU-only
    caffe.set_device = lambda device: None
    caffe.set_random_seed(int(seed))
    np.random.seed(int(seed))
    sys.path.insert(0, snapshot)                     # its `import load`
    spec = importlib.util.spec_from_file_location("original_magic_init", snapshot + "/magic_init.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.argv = ["magic_init.py", prototxt, out] + list(flags)
    module.main()


def agree(prototxt, model_a, model_b, blob, test_iter, out_json):
    """Both models on the TEST net's batches (unshuffled test list): how many predictions (argmax of
    ``blob``) agree, and max |z_b − c·z_a| / max |c·z_a| with c the least-squares common factor."""
    import numpy as np
    caffe = _caffe()
    outputs = []
    for model in (model_a, model_b):
        net = caffe.Net(prototxt, model, caffe.TEST)
        outputs.append(np.concatenate([np.array(net.forward(blobs=[blob])[blob], dtype=np.float64)
                                       for _ in range(int(test_iter))]))
    a, b = outputs
    c = float((a * b).sum() / (a * a).sum())
    result = {"images": len(a), "agreement": float((a.argmax(1) == b.argmax(1)).mean()), "factor": c,
              "deviation": float(np.abs(b - c * a).max() / np.abs(c * a).max())}
    with open(out_json, "w") as f:
        json.dump(result, f)


def start(prototxt, model, batches, out_json):
    """Loss, logits std and per-layer relative gradient ‖∂L/∂W‖/‖W‖ at the start of training."""
    import numpy as np
    caffe = _caffe()
    caffe.set_random_seed(0)
    net = caffe.Net(prototxt, model, caffe.TRAIN)
    affine = [name for name, layer in zip(net._layer_names, net.layers)
              if layer.type in ("Convolution", "InnerProduct", "Deconvolution")]
    logits = net.bottom_names[[n for n, l in zip(net._layer_names, net.layers) if l.type == "SoftmaxWithLoss"][0]][0]
    loss, std, rel = [], [], {name: [] for name in affine}
    for _ in range(int(batches)):
        for name in affine:
            for blob in net.params[name]:
                blob.diff[...] = 0
        out = net.forward()
        net.backward()
        loss.append(float(out["loss"]))
        std.append(float(net.blobs[logits].data.std()))
        for name in affine:
            w = net.params[name][0]
            rel[name].append(float(np.sqrt((w.diff.astype(np.float64) ** 2).sum() / (w.data.astype(np.float64) ** 2).sum())))
    result = {"model": model, "batches": int(batches), "loss": float(np.mean(loss)), "logits": logits,
              "logits_std": float(np.mean(std)), "relative_gradient": {k: float(np.mean(v)) for k, v in rel.items()}}
    with open(out_json, "w") as f:
        json.dump(result, f)


def main(argv):
    if argv[0] == "fill":
        fill(argv[1], argv[3], argv[4])  # argv[2] (filler name) only labels the call
    elif argv[0] == "train":
        train(argv[1], argv[2], int(argv[3]), int(argv[4]), argv[5], argv[6] if len(argv) > 6 else None)
    elif argv[0] == "agree":
        agree(*argv[1:7])
    elif argv[0] == "start":
        start(*argv[1:5])
    elif argv[0] == "original":
        original(argv[1], argv[2], argv[3], argv[4], argv[5:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

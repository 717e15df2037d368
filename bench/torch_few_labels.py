"""PyTorch training with few labels: which init trains best (issue 14), and rescaling a trained model.

Data: Debian's dataset-fashion-mnist, 1,000 balanced training labels (100 per class), 1,000 balanced
test images, pixels / 256 (as the Caffe suite, ``bench/train_few_labels.py``).

Nets (PyTorch):

- ``caffenet``: the Caffe suite's Fashion CaffeNet layer for layer (5 convs, groups 2, two LRNs,
  ceil-mode max pooling, fc6/fc7 with ReLU and dropout, fc8);
- ``resnet``: a ResNet without BatchNorm: a 3x3 stem, two stages of two residual blocks
  (conv-ReLU-conv + identity, ReLU; a strided 1x1 projection between the stages), global average
  pooling, a linear classifier.

Arms, every one trained with the same SGD schedule (momentum 0.9, batch 32, weight decay 5e-4 on
weights, biases at twice the learning rate without decay, as the Caffe suite; 1,200 steps at lr
0.01, x0.1 after 800), per seed s (the seed of the init, the batch order and the dropout masks):

- ``torch-default``: the modules' own init (kaiming_uniform with a = sqrt(5));
- ``kaiming``: kaiming_normal_ (fan_in, ReLU gain) weights, zero biases;
- ``lsuv``: PyPI's ``lsuv`` 0.3.0 (orthonormal weights, then each layer's output scaled to unit std
  on one batch: our 160 sample images), installed with ``pip install 'magic_init[bench]'``;
- ``ours-gaussian``, ``ours-kmeans`` (``magic_init.torch.initialize``, 160 of the training images,
  seed s) without Algorithm 2, and ``+alg2`` with it.

The rescaling experiment (``--rescale``): a ``kaiming`` caffenet trained above (seed s) is
re-parameterized with conv3 x10 and conv4 / 10 (only ReLU between them: the same function); then
``magic_init.torch.rescale`` on the 160 sample images. Checked: the rescaled outputs equal the
skewed model's up to one positive factor on the 1,000 test images (max relative error), and the
original, the skewed and the rescaled model are fine-tuned on 1,000 other labels (300 steps, lr 0.01).

Runs are cached in OUT/runs (delete to redo). Writes OUT/torch_few_labels.json, a table
(OUT/torch_few_labels.md) and the learning curves (OUT/torch_few_labels.png):

    python bench/torch_few_labels.py --seeds 5 [--nets caffenet,resnet] [--arms ...] [--jobs 2] [--out DIR]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

import train_few_labels as tfl  # the Caffe suite: Fashion-MNIST files and helpers (bench/ is sys.path[0])

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST, N_SAMPLE = 1000, 1000, 160
STEPS, BASE_LR, STEP_AT, EVAL_EVERY, BATCH = 1200, 0.01, 800, 100, 32
FINETUNE_STEPS, FINETUNE_LR = 300, 0.01
ARMS = ["torch-default", "kaiming", "lsuv", "ours-gaussian", "ours-gaussian+alg2", "ours-kmeans", "ours-kmeans+alg2"]
NETS = ["caffenet", "resnet"]
SKEW = 10.0


# --- data -------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def fashion():
    """(train x, train y, test x, test y, finetune x, finetune y): float32 (N, 1, 28, 28) / 256, int64;
    read once per process (a worker runs many jobs). Callers do not write into the arrays."""
    images = tfl.read_idx(tfl.FASHION / "train-images-idx3-ubyte.gz")
    labels = tfl.read_idx(tfl.FASHION / "train-labels-idx1-ubyte.gz")
    test_images = tfl.read_idx(tfl.FASHION / "t10k-images-idx3-ubyte.gz")
    test_labels = tfl.read_idx(tfl.FASHION / "t10k-labels-idx1-ubyte.gz")
    train = tfl.balanced_indices(labels, N_TRAIN // 10)
    rest = np.setdiff1d(np.arange(len(labels)), train)
    finetune = rest[tfl.balanced_indices(labels[rest], N_TRAIN // 10)]
    test = tfl.balanced_indices(test_labels, N_TEST // 10)

    def x(a, idx):
        return (a[idx].astype(np.float32) / 256.0)[:, None]
    return (x(images, train), labels[train].astype(np.int64), x(test_images, test), test_labels[test].astype(np.int64),
            x(images, finetune), labels[finetune].astype(np.int64))


def sample_of(x, seed=0):
    """The init sample: N_SAMPLE of the training images, a seeded choice in file order."""
    return x[np.sort(np.random.RandomState(seed).permutation(len(x))[:N_SAMPLE])]


# --- nets -------------------------------------------------------------------------------------------
def caffenet():
    from torch import nn

    class FashionCaffeNet(nn.Module):
        """models/fashion_caffenet_deploy.prototxt as an nn.Module."""

        def __init__(self):
            super().__init__()
            self.conv1, self.relu1 = nn.Conv2d(1, 24, 5, padding=2), nn.ReLU()
            self.pool1, self.norm1 = nn.MaxPool2d(3, 2, ceil_mode=True), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)
            self.conv2, self.relu2 = nn.Conv2d(24, 48, 5, padding=2, groups=2), nn.ReLU()
            self.pool2, self.norm2 = nn.MaxPool2d(3, 2, ceil_mode=True), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)
            self.conv3, self.relu3 = nn.Conv2d(48, 64, 3, padding=1), nn.ReLU()
            self.conv4, self.relu4 = nn.Conv2d(64, 64, 3, padding=1, groups=2), nn.ReLU()
            self.conv5, self.relu5 = nn.Conv2d(64, 48, 3, padding=1, groups=2), nn.ReLU()
            self.pool5 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.fc6, self.relu6, self.drop6 = nn.Linear(48 * 3 * 3, 256), nn.ReLU(), nn.Dropout(0.5)
            self.fc7, self.relu7, self.drop7 = nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.5)
            self.fc8 = nn.Linear(256, 10)

        def forward(self, x):
            x = self.norm1(self.pool1(self.relu1(self.conv1(x))))
            x = self.norm2(self.pool2(self.relu2(self.conv2(x))))
            x = self.pool5(self.relu5(self.conv5(self.relu4(self.conv4(self.relu3(self.conv3(x)))))))
            x = self.drop6(self.relu6(self.fc6(x.flatten(1))))
            return self.fc8(self.drop7(self.relu7(self.fc7(x))))
    return FashionCaffeNet()


def resnet():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, channels, 3, padding=1)

        def forward(self, x):
            return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))

    class PlainResNet(nn.Module):
        """A ResNet without BatchNorm for 28x28 gray images."""

        def __init__(self, width=16):
            super().__init__()
            self.stem = nn.Conv2d(1, width, 3, padding=1)
            self.stage1 = nn.Sequential(Block(width), Block(width))
            self.down = nn.Conv2d(width, 2 * width, 1, stride=2)
            self.stage2 = nn.Sequential(Block(2 * width), Block(2 * width))
            self.fc = nn.Linear(2 * width, 10)

        def forward(self, x):
            x = self.stage1(torch.relu(self.stem(x)))
            x = self.stage2(self.down(x))
            return self.fc(x.mean((2, 3)))
    return PlainResNet()


BUILDERS = {"caffenet": caffenet, "resnet": resnet}


# --- inits ------------------------------------------------------------------------------------------
def affine_modules(model):
    from torch import nn
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def init_model(net, arm, seed, sample):
    """A freshly built ``net`` initialized by ``arm`` (seed ``seed``) and the seconds the init took."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = BUILDERS[net]()
    began = time.perf_counter()
    if arm == "kaiming":
        for m in affine_modules(model):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    elif arm == "lsuv":
        import lsuv
        lsuv.lsuv_with_singlebatch(model, torch.from_numpy(sample), verbose=False)
    elif arm.startswith("ours-"):
        import magic_init.torch as mt
        init, _, alg2 = arm[len("ours-"):].partition("+")
        mt.initialize(model, torch.from_numpy(sample), init=init, between_layer=bool(alg2), seed=seed)
    elif arm != "torch-default":
        raise ValueError("unknown arm %r" % arm)
    return model, time.perf_counter() - began


# --- training ---------------------------------------------------------------------------------------
def accuracy(model, x, y):
    import torch
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i:i + 250])) for i in range(0, len(x), 250)])
    model.train()
    if not bool(torch.isfinite(logits).all()):
        return None
    return float((logits.argmax(1).numpy() == y).mean())


def train(model, x, y, xt, yt, seed, steps=STEPS, base_lr=BASE_LR, step_at=STEP_AT, eval_every=EVAL_EVERY):
    """SGD as the Caffe suite; the test accuracy every ``eval_every`` steps: [{"iter", "test_accuracy"}]."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    optimizer = torch.optim.SGD([{"params": weights, "lr": base_lr, "weight_decay": 5e-4},
                                 {"params": biases, "lr": 2 * base_lr, "weight_decay": 0.0}], momentum=0.9)
    order = np.random.RandomState(seed)
    curve, perm, position = [{"iter": 0, "test_accuracy": accuracy(model, xt, yt)}], order.permutation(len(x)), 0
    model.train()
    for step in range(1, steps + 1):
        if step_at and step == step_at + 1:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
        if position + BATCH > len(x):
            perm, position = order.permutation(len(x)), 0
        idx = perm[position:position + BATCH]
        position += BATCH
        loss = F.cross_entropy(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % eval_every == 0:
            curve.append({"iter": step, "test_accuracy": accuracy(model, xt, yt),
                          "loss": float(loss.detach()) if bool(torch.isfinite(loss)) else None})
    return curve


def run_one(job):
    """One (net, arm, seed) run in a worker: init, train, cached JSON (and the trained model for --rescale)."""
    import torch
    torch.set_num_threads(1)
    net, arm, seed, out = job
    path = Path(out) / "runs" / ("%s_%s_%d.json" % (net, arm, seed))
    if path.exists():
        return json.loads(path.read_text())
    x, y, xt, yt, _, _ = fashion()
    model, init_seconds = init_model(net, arm, seed, sample_of(x, seed))
    began = time.perf_counter()
    curve = train(model, x, y, xt, yt, seed)
    result = {"net": net, "arm": arm, "seed": seed, "init_seconds": init_seconds,
              "train_seconds": time.perf_counter() - began, "curve": curve}
    if arm == "kaiming" and net == "caffenet":
        torch.save(model.state_dict(), path.with_suffix(".pt"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


# --- rescaling a trained model ----------------------------------------------------------------------
def rescale_one(job):
    """The rescaling experiment for one seed (see the module docstring)."""
    import torch
    import magic_init.torch as mt
    torch.set_num_threads(1)
    seed, out = job
    path = Path(out) / "runs" / ("rescale_%d.json" % seed)
    if path.exists():
        return json.loads(path.read_text())
    x, y, xt, yt, xf, yf = fashion()
    state = torch.load(Path(out) / "runs" / ("caffenet_kaiming_%d.pt" % seed), weights_only=True)
    models = {}
    for name in ("original", "skewed", "rescaled"):
        models[name] = caffenet()
        models[name].load_state_dict(state)
    for name in ("skewed", "rescaled"):
        with torch.no_grad():
            models[name].conv3.weight.mul_(SKEW)
            models[name].conv3.bias.mul_(SKEW)
            models[name].conv4.weight.div_(SKEW)
    began = time.perf_counter()
    report = mt.rescale(models["rescaled"], torch.from_numpy(sample_of(x, seed)), seed=seed)
    seconds = time.perf_counter() - began
    outputs = {}
    for name, model in models.items():
        model.eval()
        with torch.no_grad():
            outputs[name] = model(torch.from_numpy(xt)).double()
    factor = float((outputs["rescaled"] * outputs["skewed"]).sum() / (outputs["skewed"] ** 2).sum())
    error = float((outputs["rescaled"] - factor * outputs["skewed"]).abs().max() / (factor * outputs["skewed"]).abs().max())
    skew_error = float((outputs["skewed"] - outputs["original"]).abs().max() / outputs["original"].abs().max())
    result = {"seed": seed, "rescale_seconds": seconds, "output_factor": factor, "reported_output_scale":
              report["BetweenLayer"].get("output_scale"), "max_relative_error": error,
              "skew_max_relative_error": skew_error, "spread_before": report["BetweenLayer"]["spread_before"],
              "spread_predicted": report["BetweenLayer"]["spread_predicted"], "finetune": {}}
    for name, model in models.items():
        result["finetune"][name] = train(model, xf, yf, xt, yt, seed, steps=FINETUNE_STEPS, base_lr=FINETUNE_LR,
                                         step_at=None, eval_every=50)
    path.write_text(json.dumps(result))
    return result


# --- report -----------------------------------------------------------------------------------------
def mean_std(values):
    values = [v if v is not None else 0.1 for v in values]      # a diverged run scores chance
    return float(np.mean(values)), float(np.std(values))


def summarize(results):
    """Per (net, arm): final accuracy and the mean of the last three checkpoints, mean and std over seeds."""
    rows = []
    for net in sorted({r["net"] for r in results}):
        for arm in ARMS:
            runs = [r for r in results if r["net"] == net and r["arm"] == arm]
            if not runs:
                continue
            final = mean_std([r["curve"][-1]["test_accuracy"] for r in runs])
            last3 = mean_std([np.mean([c["test_accuracy"] if c["test_accuracy"] is not None else 0.1
                                       for c in r["curve"][-3:]]) for r in runs])
            rows.append({"net": net, "arm": arm, "seeds": len(runs), "final_mean": final[0], "final_std": final[1],
                         "last3_mean": last3[0], "last3_std": last3[1],
                         "init_seconds": float(np.mean([r["init_seconds"] for r in runs])),
                         "diverged": sum(r["curve"][-1]["test_accuracy"] is None for r in runs)})
    return rows


def verdict(rows, judged="ours-kmeans+alg2"):
    """Per net: does ``judged`` beat every other arm by more than the seed spread (the larger std)?"""
    out = {}
    for net in sorted({r["net"] for r in rows}):
        mine = next((r for r in rows if r["net"] == net and r["arm"] == judged), None)
        others = [r for r in rows if r["net"] == net and r["arm"] != judged]
        if mine is None or not others:
            continue
        best = max(others, key=lambda r: r["final_mean"])
        margin = mine["final_mean"] - best["final_mean"]
        out[net] = {"best_other": best["arm"], "margin": margin, "spread": max(mine["final_std"], best["final_std"]),
                    "beats_by_more_than_spread": margin > max(mine["final_std"], best["final_std"])}
    return out


def table(rows, verdicts, rescales):
    lines = ["| net | arm | seeds | final test acc. (%) | last 3 checkpoints (%) | init s | diverged |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %d | %.2f ± %.2f | %.2f ± %.2f | %.2f | %d |" % (
            r["net"], r["arm"], r["seeds"], 100 * r["final_mean"], 100 * r["final_std"], 100 * r["last3_mean"],
            100 * r["last3_std"], r["init_seconds"], r["diverged"]))
    for net, v in verdicts.items():
        lines.append("")
        lines.append("%s: ours-kmeans+alg2 %s the best other arm (%s) by %+.2f points (seed spread %.2f)" % (
            net, "beats" if v["beats_by_more_than_spread"] else "does not beat", v["best_other"], 100 * v["margin"],
            100 * v["spread"]))
    if rescales:
        lines += ["", "Rescaling a trained caffenet (conv3 x%g, conv4 / %g), %d seeds:" % (SKEW, SKEW, len(rescales)),
                  "max relative output error after rescaling: %.2e (worst seed); skewing alone: %.2e" % (
                      max(r["max_relative_error"] for r in rescales), max(r["skew_max_relative_error"] for r in rescales)),
                  "change-rate spread %.2f -> %.3f (predicted); rescale took %.2f s" % (
                      np.mean([r["spread_before"] for r in rescales]), np.mean([r["spread_predicted"] for r in rescales]),
                      np.mean([r["rescale_seconds"] for r in rescales])),
                  "", "| model | fine-tuned test acc. (%%), %d steps at lr %g |" % (FINETUNE_STEPS, FINETUNE_LR),
                  "|---|---|"]
        for name in ("original", "skewed", "rescaled"):
            m, s = mean_std([r["finetune"][name][-1]["test_accuracy"] for r in rescales])
            lines.append("| %s | %.2f ± %.2f |" % (name, 100 * m, 100 * s))
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    nets = sorted({r["net"] for r in results})
    fig, axes = plt.subplots(1, len(nets), figsize=(6 * len(nets), 4.2), squeeze=False)
    for ax, net in zip(axes[0], nets):
        for arm in ARMS:
            runs = [r for r in results if r["net"] == net and r["arm"] == arm]
            if not runs:
                continue
            its = [c["iter"] for c in runs[0]["curve"]]
            acc = 100 * np.array([[c["test_accuracy"] if c["test_accuracy"] is not None else 0.1 for c in r["curve"]]
                                  for r in runs])
            line, = ax.plot(its, acc.mean(0), marker="o", ms=3, label=arm)
            ax.fill_between(its, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.12)
        ax.set_title("%s, %d labels" % (net, N_TRAIN))
        ax.set_xlabel("SGD step (batch %d)" % BATCH)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--rescale", action="store_true", help="also the rescaling experiment (caffenet, kaiming)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "out" / "torch_few_labels"))
    args = parser.parse_args(argv)
    nets, arms = args.nets.split(","), args.arms.split(",")
    if "lsuv" in arms:
        try:
            import lsuv  # noqa: F401
        except ImportError:
            raise SystemExit("torch_few_labels: the lsuv arm needs PyPI's lsuv 0.3.0: pip install 'magic_init[bench]'")
    if args.rescale and ("caffenet" not in nets or "kaiming" not in arms):
        raise SystemExit("torch_few_labels: --rescale needs the caffenet net and the kaiming arm")
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    jobs = [(net, arm, seed, str(out)) for net in nets for arm in arms for seed in range(args.seeds)]
    began, load = time.time(), os.getloadavg()
    with get_context("spawn").Pool(args.jobs) as pool:
        results = pool.map(run_one, jobs, chunksize=1)
        rescales = pool.map(rescale_one, [(seed, str(out)) for seed in range(args.seeds)]) if args.rescale else []
    rows = summarize(results)
    verdicts = verdict(rows)
    text = table(rows, verdicts, rescales)
    print(text)
    (out / "torch_few_labels.md").write_text(text)
    plot(results, out / "torch_few_labels.png")
    (out / "torch_few_labels.json").write_text(json.dumps(
        {"rows": rows, "verdict": verdicts, "rescale": rescales, "runs": results, "seconds": time.time() - began,
         "load_average_start": load, "load_average_end": os.getloadavg(),
         "schedule": {"steps": STEPS, "base_lr": BASE_LR, "step_at": STEP_AT, "batch": BATCH}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

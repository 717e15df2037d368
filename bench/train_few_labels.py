"""Training with few labels (issue 6 part 3; paper Tables 1-2 scaled to a 2-core CPU).

A CaffeNet-style small net (models/fashion_small_*.prototxt) is trained from scratch in real Caffe
(pycaffe SGDSolver, scripts/caffe-env) on N balanced Fashion-MNIST training images with one fixed
SGD schedule, from 5 inits x {without, with Alg. 2} x SEEDS seeds:

- Caffe fillers gaussian(0.01) / xavier / msra: weights of an untouched Caffe net (seeded);
  "with Alg. 2" = ``magic_init deploy --load filler.caffemodel`` (between-layer only).
- ours gaussian / ours k-means: ``magic_init deploy --init {gaussian,kmeans} [--no-between-layer]``
  with the N training images as --data (built-in torch engine).

Prints a table of final test accuracy (mean +/- std over seeds), writes JSON and a learning-curve
PNG. Runs are cached in the work folder (delete it to redo):

    python bench/train_few_labels.py [--n 1000] [--iters 1000] [--seeds 3] [--work DIR]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
SCALE = "0.00390625"  # the train prototxt's transform_param scale (1/256, Caffe's LeNet value)
FILLERS = {"gaussian": 'type: "gaussian" std: 0.01', "xavier": 'type: "xavier"', "msra": 'type: "msra"'}
NUM_SAMPLE = 160  # images magic_init samples from the N training images (its default, the paper's 160)
INITS = ["caffe-gaussian", "caffe-xavier", "caffe-msra", "ours-gaussian", "ours-kmeans"]


def caffe_env_root() -> Path:
    """Host folder of the real-Caffe chroot; files under its tmp/ are at /tmp/... inside."""
    out = subprocess.run([str(REPO / "scripts/caffe-env"), "path"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


class Work:
    """The work folder, seen from the host (``host``) and from inside the chroot (``inside``)."""

    def __init__(self, name="fashion_bench"):
        self.host = caffe_env_root() / "tmp" / name
        self.inside = "/tmp/" + name
        self.host.mkdir(parents=True, exist_ok=True)

    def chroot(self, path: Path) -> str:
        return self.inside + "/" + str(Path(path).relative_to(self.host))


# --- data -------------------------------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip): magic (2 zero bytes, dtype 0x08 = uint8, ndim), big-endian dims, data."""
    raw = gzip.open(path, "rb").read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def balanced_indices(labels: np.ndarray, per_class: int) -> np.ndarray:
    """The first ``per_class`` indices of each class, in file order."""
    keep = [np.flatnonzero(labels == c)[:per_class] for c in range(10)]
    return np.sort(np.concatenate(keep))


def write_split(work: Work, name: str, images, labels, idx) -> Path:
    """PNGs under work/name/ and an ImageData list work/name.txt ("name/00001.png label")."""
    from PIL import Image
    (work.host / name).mkdir(exist_ok=True)
    lines = []
    for i in idx:
        rel = "%s/%05d.png" % (name, i)
        if not (work.host / rel).exists():
            Image.fromarray(images[i]).save(work.host / rel)
        lines.append("%s %d" % (rel, labels[i]))
    list_path = work.host / (name + ".txt")
    list_path.write_text("\n".join(lines) + "\n")
    return list_path


def prepare_data(work: Work, n_train: int, n_test: int):
    train = write_split(work, "train", read_idx(FASHION / "train-images-idx3-ubyte.gz"),
                        read_idx(FASHION / "train-labels-idx1-ubyte.gz"),
                        balanced_indices(read_idx(FASHION / "train-labels-idx1-ubyte.gz"), n_train // 10))
    test_labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    test = write_split(work, "test", read_idx(FASHION / "t10k-images-idx3-ubyte.gz"), test_labels,
                       balanced_indices(test_labels, n_test // 10))
    return train, test


# --- prototxts --------------------------------------------------------------------------------------
def train_prototxt(work: Work, filler: str) -> Path:
    """The train prototxt with absolute data paths (inside the chroot) and ``filler`` on every layer."""
    text = (REPO / "models/fashion_small_train.prototxt").read_text()
    text = text.replace('source: "fashion/', 'source: "%s/' % work.inside)
    text = text.replace('root_folder: "fashion/"', 'root_folder: "%s/"' % work.inside)
    text = text.replace('weight_filler { type: "gaussian" std: 0.01 }', "weight_filler { %s }" % FILLERS[filler])
    path = work.host / ("train_%s.prototxt" % filler)
    path.write_text(text)
    return path


def solver_prototxt(work: Work, net: Path, seed: int, iters: int, tag: str, base_lr=None) -> Path:
    """models/fashion_small_solver.prototxt with this run's net, max_iter and random_seed."""
    text = (REPO / "models/fashion_small_solver.prototxt").read_text()
    text = text.replace('net: "models/fashion_small_train.prototxt"', 'net: "%s"' % work.chroot(net))
    text = text.replace("max_iter: 1000", "max_iter: %d" % iters).replace("random_seed: 0", "random_seed: %d" % seed)
    if base_lr is not None:
        text = text.replace("base_lr: 0.01", "base_lr: %g" % base_lr)
    path = work.host / ("solver_%s.prototxt" % tag)
    path.write_text(text)
    return path


# --- running ------------------------------------------------------------------------------------------
def caffe_run(*argv, threads=1, check=True):
    """Run ``argv`` in the real-Caffe chroot (checkout at /src); OpenBLAS limited to ``threads``."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    return subprocess.run([str(REPO / "scripts/caffe-env"), "run", *argv], check=check, env=env).returncode


def magic_init(out: Path, list_path: Path, work: Work, seed: int, *options):
    """``python -m magic_init`` on the deploy prototxt with the training list as the sample."""
    argv = [sys.executable, "-m", "magic_init", "init", str(REPO / "models/fashion_small_deploy.prototxt"),
            str(out), "--data", str(list_path), "--root", str(work.host), "--mean", "0", "--scale", SCALE,
            "--num-images", str(NUM_SAMPLE), "--seed", str(seed), "--backend", "torch", "-q", *options]
    subprocess.run(argv, check=True, cwd=str(REPO))



def make_init(work: Work, init: str, alg2: bool, seed: int, list_path: Path) -> Path:
    """The initial caffemodel for one (init, alg2, seed), created once."""
    out = work.host / "inits" / ("%s%s_s%d.caffemodel" % (init, "+alg2" if alg2 else "", seed))
    if out.exists():
        return out
    out.parent.mkdir(exist_ok=True)
    kind, name = init.split("-")
    if kind == "caffe":
        base = out.with_name("%s_s%d.caffemodel" % (init, seed))
        if not base.exists():
            caffe_run("python3", "bench/fashion_caffe.py", "fill", work.chroot(train_prototxt(work, name)),
                      name, str(seed), work.chroot(base))
        if alg2:
            magic_init(out, list_path, work, seed, "--load", str(base), "--no-within-layer")
        return out
    magic_init(out, list_path, work, seed, "--init", name, *([] if alg2 else ["--no-between-layer"]))
    return out


def train_run(work: Work, weights: Path, seed: int, iters: int, eval_every: int, tag: str,
              snapshot: Path = None, base_lr=None) -> dict:
    """Train from ``weights`` in real Caffe (cached by ``tag``); the run's JSON result."""
    result = work.host / "runs" / (tag + ".json")
    if not result.exists():
        result.parent.mkdir(exist_ok=True)
        solver = solver_prototxt(work, train_prototxt(work, "gaussian"), seed, iters, tag, base_lr)
        argv = ["python3", "bench/fashion_caffe.py", "train", work.chroot(solver), work.chroot(weights),
                str(iters), str(eval_every), work.chroot(result)]
        # A diverged (NaN) run can abort in Caffe's teardown ("double free") after its JSON is written.
        rc = caffe_run(*argv, *([work.chroot(snapshot)] if snapshot else []), check=False)
        if not result.exists():
            raise RuntimeError("training %s failed in real Caffe (exit %d)" % (tag, rc))
    return json.loads(result.read_text())


# --- experiment and report ----------------------------------------------------------------------------
def run_tag(init: str, alg2: bool, seed: int) -> str:
    return "%s%s_s%d" % (init, "+alg2" if alg2 else "", seed)


def run_all(work: Work, list_path: Path, seeds, iters: int, eval_every: int, jobs: int) -> dict:
    """Every (init, alg2, seed): make the init (one at a time), and train it as soon as it exists."""
    from concurrent.futures import ThreadPoolExecutor
    configs = [(init, alg2, seed) for seed in seeds for init in INITS for alg2 in (False, True)]

    def train(config, weights):
        result = train_run(work, weights, config[2], iters, eval_every, run_tag(*config) + "_it%d" % iters)
        print("trained %-24s test acc %s (%.0f s)" % (run_tag(*config), result["final_test_accuracy"],
                                                       result["seconds"]), flush=True)
        return result

    with ThreadPoolExecutor(jobs) as pool:
        futures = {}
        for config in configs:
            t0 = time.time()
            weights = make_init(work, config[0], config[1], config[2], list_path)
            print("init %-24s %.1f s" % (run_tag(*config), time.time() - t0), flush=True)
            futures[config] = pool.submit(train, config, weights)
        return {config: future.result() for config, future in futures.items()}


def finished_runs(work: Work, seeds, iters: int) -> dict:
    """The runs of this experiment already in the work folder (a partial experiment's report)."""
    results = {}
    for config in [(init, alg2, seed) for seed in seeds for init in INITS for alg2 in (False, True)]:
        path = work.host / "runs" / (run_tag(*config) + "_it%d.json" % iters)
        if path.exists():
            results[config] = json.loads(path.read_text())
    return results


def accuracy_or_chance(acc):
    """A diverged run (no accuracy: its scores are NaN) counts as chance, 1/10."""
    return 0.1 if acc is None else acc


def runs_by_arm(results: dict):
    """(init, alg2, [runs over seeds]) for every arm of the experiment that has runs."""
    for init in INITS:
        for alg2 in (False, True):
            runs = [r for (i, a, _), r in sorted(results.items()) if i == init and a == alg2]
            if runs:
                yield init, alg2, runs


def summarize(results: dict) -> list:
    """One row per (init, alg2): final and early test accuracy, mean and std over seeds."""
    rows = []
    for init, alg2, runs in runs_by_arm(results):
        final = np.array([accuracy_or_chance(r["final_test_accuracy"]) for r in runs])
        early = np.array([accuracy_or_chance(r["curve"][1]["test_accuracy"]) for r in runs])
        rows.append({"init": init, "alg2": alg2, "seeds": len(runs), "final_mean": final.mean(),
                     "final_std": final.std(ddof=1) if len(runs) > 1 else 0.0, "early_mean": early.mean(),
                     "early_iter": runs[0]["curve"][1]["iter"], "diverged": sum(r["diverged"] for r in runs)})
    return rows


def print_table(rows, iters):
    print("\n| init | Alg. 2 | test acc @%d (mean ± std) | test acc @%d | diverged |" % (iters, rows[0]["early_iter"]))
    print("|---|---|---|---|---|")
    for r in rows:
        std = "%.2f" % (100 * r["final_std"]) if r["seeds"] > 1 else "n/a"
        print("| %s | %s | %.2f ± %s %% | %.2f %% | %d/%d |" % (
            r["init"], "yes" if r["alg2"] else "no", 100 * r["final_mean"], std,
            100 * r["early_mean"], r["diverged"], r["seeds"]))


def checkpoint_rows(results: dict) -> list:
    """Test accuracy (mean, std over seeds) at a few iterations along the schedule, per (init, alg2)."""
    iters = [c["iter"] for c in next(iter(results.values()))["curve"]]
    shown = sorted({iters[1], iters[min(2, len(iters) - 1)], iters[len(iters) // 3], iters[len(iters) // 2],
                    iters[-1]})
    rows = []
    for init, alg2, runs in runs_by_arm(results):
        acc = {it: [accuracy_or_chance(c["test_accuracy"]) for r in runs for c in r["curve"] if c["iter"] == it]
               for it in shown}
        rows.append({"init": init, "alg2": alg2, "at": {it: (float(np.mean(a)), float(np.std(a, ddof=1))
                                                             if len(a) > 1 else 0.0) for it, a in acc.items()}})
    return rows


def print_checkpoints(rows):
    shown = list(rows[0]["at"])
    print("\n| init | Alg. 2 | " + " | ".join("@%d" % it for it in shown) + " |")
    print("|---|---|" + "---|" * len(shown))
    for r in rows:
        print("| %s | %s | %s |" % (r["init"], "yes" if r["alg2"] else "no",
                                    " | ".join("%.1f ± %.1f" % (100 * m, 100 * s) for m, s in r["at"].values())))


def plot_curves(results: dict, path: Path):
    """Mean test accuracy vs iteration (band: min..max over seeds), one panel per Alg. 2 setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for init, alg2, runs in runs_by_arm(results):
        ax = axes[int(alg2)]
        its = [c["iter"] for c in runs[0]["curve"]]
        acc = np.array([[accuracy_or_chance(c["test_accuracy"]) for c in r["curve"]] for r in runs]) * 100
        line, = ax.plot(its, acc.mean(0), marker="o", ms=3, label=init)
        ax.fill_between(its, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.15)
    for ax, alg2 in zip(axes, (False, True)):
        ax.set_title("with Alg. 2 (between-layer)" if alg2 else "without Alg. 2")
        ax.set_xlabel("SGD iteration (batch 32)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle("Fashion-MNIST, %d labelled images, real Caffe SGD; mean and min-max of seeds" % N_TRAIN)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


N_TRAIN = 1000


def main(argv=None):
    global N_TRAIN
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="labelled training images (balanced)")
    ap.add_argument("--n-test", type=int, default=1000, help="test images (balanced; test_iter x 100)")
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="trainings run side by side (1 core each)")
    ap.add_argument("--report-only", action="store_true",
                    help="no new runs: table, JSON and plot from the finished runs in the work folder")
    ap.add_argument("--out", default=str(REPO / "out" / "train_few_labels"), help="JSON and PNG folder")
    args = ap.parse_args(argv)
    N_TRAIN = args.n
    work = Work()
    list_path, _ = prepare_data(work, args.n, args.n_test)
    t0 = time.time()
    if args.report_only:
        results = finished_runs(work, range(args.seeds), args.iters)
    else:
        results = run_all(work, list_path, range(args.seeds), args.iters, args.eval_every, args.jobs)
    rows = summarize(results)
    print_table(rows, args.iters)
    checkpoints = checkpoint_rows(results)
    print_checkpoints(checkpoints)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(results, out / "learning_curves.png")
    payload = {"args": vars(args), "seconds": time.time() - t0, "rows": rows, "checkpoints": checkpoints,
               "runs": {run_tag(*k): v for k, v in results.items()}}
    (out / "train_few_labels.json").write_text(json.dumps(payload, indent=1, default=float))
    print("wrote %s, %s" % (out / "train_few_labels.json", out / "learning_curves.png"))


if __name__ == "__main__":
    main()

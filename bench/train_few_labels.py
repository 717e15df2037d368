"""The benchmark suite that judges inits: training with few labels in real Caffe (issue 16).

Nets (models/fashion_*_{train,deploy}.prototxt, 28x28 gray Fashion-MNIST, 10 classes):

- ``small``: conv-pool-LRN-conv-pool-fc-dropout-fc (4 affine layers);
- ``caffenet``: CaffeNet's layout (5 convs, groups 2, two LRNs, fc6/fc7 with dropout, fc8);
- ``vgg``: 8 3x3 convs in 4 stages, no LRN, fc with dropout, fc (10 affine layers).

Schedules (plain SGD, momentum 0.9, weight decay 5e-4, batch 32, N = 1000 labelled images):
``short`` 300 steps at lr 0.001; ``long`` 1200 steps at lr 0.01, x0.1 after 800.

Arms (each "with Alg. 2" or not; an arm name alone means without, ``+alg2`` with):

- ``caffe-gaussian`` (sigma 0.01), ``caffe-xavier``, ``caffe-msra``: the weights of an untouched,
  seeded Caffe TRAIN net; "+alg2" = ``magic_init deploy --load that --no-within-layer``.
- ``orig-kmeans``, ``orig-elwise``: the original research code (github philkr/magic_init, run from
  the snapshot given by ``--original``, never copied into the project) on the train prototxt in
  real Caffe: ``magic_init.py -z -t kmeans|elwise [-cs]``, its own data layer and batches.
- ``ours-gaussian``, ``ours-pca``, ``ours-kmeans``: ``magic_init deploy --init ...
  [--no-between-layer]`` with 160 of the N training images as the sample (built-in engine).
- ``ours-LABEL`` from ``--variant LABEL="magic_init options"``: experiments with our options.

Every run trains in real Caffe (pycaffe SGDSolver, scripts/caffe-env) and records the test
accuracy on 1000 test images along the schedule. Inits and runs are cached in the work folder
(delete it, or the ``inits/`` of an arm, to redo). An ``ours-*`` arm's cache name holds its options
(hashed, for variants) but not magic_init's defaults: after a default changes, move that arm's
inits and runs aside (or rename them to a variant that spells the old default out). Prints per (net, schedule) a table of final
accuracy mean +/- std over seeds and checkpoints, writes JSON and learning-curve PNGs:

    python bench/train_few_labels.py --nets small,caffenet,vgg --schedules short,long --seeds 5 \\
        --original /path/to/magic_init-snapshot [--arms ...] [--out DIR]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
SCALE = "0.00390625"  # the train prototxts' transform_param scale (1/256, Caffe's LeNet value)
FILLERS = {"gaussian": 'type: "gaussian" std: 0.01', "xavier": 'type: "xavier"', "msra": 'type: "msra"'}
NUM_SAMPLE = 160  # images magic_init samples from the N training images (its default, the paper's 160)
NETS = {"small": "fashion_small", "caffenet": "fashion_caffenet", "vgg": "fashion_vgg"}
Schedule = namedtuple("Schedule", "iters base_lr eval_every stepsize")
SCHEDULES = {"short": Schedule(300, 0.001, 50, None), "long": Schedule(1200, 0.01, 100, 800),
             # diagnostics, not part of the suite: the learning rate x0.8 (long) and x1.43 (long, short)
             "long-lr0.008": Schedule(1200, 0.008, 100, 800),
             "long-lr0.0143": Schedule(1200, 0.0143, 100, 800), "short-lr0.00143": Schedule(300, 0.00143, 50, None)}
#: The arms of the suite (each with and without Alg. 2).
ARMS = ["caffe-gaussian", "caffe-xavier", "caffe-msra", "orig-kmeans", "orig-elwise",
        "ours-gaussian", "ours-pca", "ours-kmeans"]
#: Our arms judged against the rivals: the CLI's default (`magic_init`: gaussian + both steps) and k-means.
JUDGED_ARMS = (("ours-gaussian", True), ("ours-kmeans", True))


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
def model_file(net: str, kind: str) -> Path:
    """models/<net's stem>_<kind>.prototxt (kind: train or deploy)."""
    return REPO / "models" / ("%s_%s.prototxt" % (NETS[net], kind))


def train_prototxt(work: Work, filler: str, net: str = "small") -> Path:
    """The net's train prototxt with absolute data paths (inside the chroot) and ``filler`` on every layer."""
    text = model_file(net, "train").read_text()
    text = text.replace('source: "fashion/', 'source: "%s/' % work.inside)
    text = text.replace('root_folder: "fashion/"', 'root_folder: "%s/"' % work.inside)
    text = re.sub(r"weight_filler\s*\{[^}]*\}", "weight_filler { %s }" % FILLERS[filler], text)
    path = work.host / ("train_%s_%s.prototxt" % (net, filler))
    path.write_text(text)
    return path


def solver_prototxt(work: Work, net: Path, seed: int, iters: int, tag: str, base_lr=None, stepsize=None) -> Path:
    """models/fashion_small_solver.prototxt with this run's net, max_iter, random_seed, learning rate
    and, with ``stepsize``, Caffe's "step" policy (lr x0.1 every ``stepsize`` iterations)."""
    text = (REPO / "models/fashion_small_solver.prototxt").read_text()
    text = text.replace('net: "models/fashion_small_train.prototxt"', 'net: "%s"' % work.chroot(net))
    text = text.replace("max_iter: 1000", "max_iter: %d" % iters).replace("random_seed: 0", "random_seed: %d" % seed)
    if base_lr is not None:
        text = text.replace("base_lr: 0.01", "base_lr: %g" % base_lr)
    if stepsize:
        text = text.replace('lr_policy: "fixed"', 'lr_policy: "step"\ngamma: 0.1\nstepsize: %d' % stepsize)
    path = work.host / ("solver_%s.prototxt" % tag)
    path.write_text(text)
    return path


# --- making inits -------------------------------------------------------------------------------------
def caffe_run(*argv, threads=1, check=True):
    """Run ``argv`` in the real-Caffe chroot (checkout at /src); OpenBLAS limited to ``threads``."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    return subprocess.run([str(REPO / "scripts/caffe-env"), "run", *argv], check=check, env=env).returncode


def magic_init(out: Path, list_path: Path, work: Work, seed: int, *options, net: str = "small"):
    """``python -m magic_init`` on the net's deploy prototxt with the training list as the sample."""
    argv = [sys.executable, "-m", "magic_init", "init", str(model_file(net, "deploy")),
            str(out), "--data", str(list_path), "--root", str(work.host), "--mean", "0", "--scale", SCALE,
            "--num-images", str(NUM_SAMPLE), "--seed", str(seed), "--backend", "torch", "-q", *options]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one core per job: trainings run beside it
    subprocess.run(argv, check=True, cwd=str(REPO), env=env)


def install_original(work: Work, source) -> str:
    """Copy the original research code's snapshot (a checkout or a bare git folder) into the work
    folder, where the chroot sees it; returns its path inside the chroot. Never part of the project."""
    dest = work.host / "original_magic_init"
    if not (dest / "magic_init.py").exists():
        source = Path(source)
        dest.mkdir(parents=True, exist_ok=True)
        if (source / "magic_init.py").exists():
            for name in ("magic_init.py", "load.py"):
                shutil.copy(source / name, dest / name)
        else:
            archive = subprocess.run(["git", "--git-dir", str(source), "archive", "HEAD", "magic_init.py", "load.py"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return work.chroot(dest)


def arm_tag(arm: str, alg2: bool) -> str:
    return arm + ("+alg2" if alg2 else "")


class InitMaker:
    """Makes (once, cached) the initial caffemodel of an (arm, alg2, seed) on one net."""

    def __init__(self, work: Work, list_path: Path, original=None, variants=None):
        self.work, self.list_path, self.original = work, list_path, original
        self.variants = variants or {}

    def path(self, net, arm, alg2, seed) -> Path:
        options = self.variants.get(arm[len("ours-"):]) if arm.startswith("ours-") else None
        key = "" if options is None else "_" + hashlib.sha1(options.encode()).hexdigest()[:8]
        return self.work.host / "inits" / net / ("%s%s_s%d.caffemodel" % (arm_tag(arm, alg2), key, seed))

    def __call__(self, net, arm, alg2, seed) -> Path:
        out = self.path(net, arm, alg2, seed)
        if out.exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        kind, name = arm.split("-", 1)
        if kind == "caffe":
            base = out.with_name("%s_s%d.caffemodel" % (arm, seed))
            if not base.exists():
                prototxt = self.work.chroot(train_prototxt(self.work, name, net))
                caffe_run("python3", "bench/fashion_caffe.py", "fill", prototxt, name, str(seed), self.work.chroot(base))
            if alg2:
                magic_init(out, self.list_path, self.work, seed, "--load", str(base), "--no-within-layer", net=net)
        elif kind == "orig":
            if self.original is None:
                raise SystemExit("arm %s needs --original (a snapshot of github philkr/magic_init)" % arm)
            caffe_run("python3", "bench/fashion_caffe.py", "original", install_original(self.work, self.original),
                      self.work.chroot(train_prototxt(self.work, "gaussian", net)), self.work.chroot(out), str(seed),
                      "-z", "-t", name, *(["-cs"] if alg2 else []))
        else:
            options = shlex.split(self.variants.get(name, "--init " + name))
            magic_init(out, self.list_path, self.work, seed, *options,
                       *([] if alg2 else ["--no-between-layer"]), net=net)
        if not out.exists():
            raise RuntimeError("no init written for %s on %s" % (arm_tag(arm, alg2), net))
        return out


# --- training -----------------------------------------------------------------------------------------
def train_run(work: Work, weights: Path, seed: int, iters: int, eval_every: int, tag: str,
              snapshot: Path = None, base_lr=None, net: str = "small", stepsize=None) -> dict:
    """Train ``net`` from ``weights`` in real Caffe (cached by ``tag``); the run's JSON result."""
    result = work.host / "runs" / (tag + ".json")
    if not result.exists():
        result.parent.mkdir(exist_ok=True)
        solver = solver_prototxt(work, train_prototxt(work, "gaussian", net), seed, iters, tag, base_lr, stepsize)
        argv = ["python3", "bench/fashion_caffe.py", "train", work.chroot(solver), work.chroot(weights),
                str(iters), str(eval_every), work.chroot(result)]
        # A diverged (NaN) run can abort in Caffe's teardown ("double free") after its JSON is written.
        rc = caffe_run(*argv, *([work.chroot(snapshot)] if snapshot else []), check=False)
        if not result.exists():
            raise RuntimeError("training %s failed in real Caffe (exit %d)" % (tag, rc))
    return json.loads(result.read_text())


Config = namedtuple("Config", "net schedule arm alg2 seed")


def run_tag(config: Config) -> str:
    return "%s_%s_%s_s%d" % (config.net, config.schedule, arm_tag(config.arm, config.alg2), config.seed)


def run_key(config: Config, maker: InitMaker) -> str:
    """The cache name of a run: its tag plus its init file's name (variants carry an options hash)."""
    return "%s_%s_%s" % (config.net, config.schedule, maker.path(config.net, config.arm, config.alg2,
                                                                  config.seed).stem)


def train_config(work: Work, maker: InitMaker, config: Config, weights: Path) -> dict:
    s = SCHEDULES[config.schedule]
    return train_run(work, weights, config.seed, s.iters, s.eval_every, run_key(config, maker),
                     base_lr=s.base_lr, net=config.net, stepsize=s.stepsize)


def configs_of(nets, schedules, arms, seeds, alg2s=(False, True)):
    """Every run of the experiment, seeds outermost so that a partial run covers all arms evenly."""
    return [Config(net, schedule, arm, alg2, seed) for seed in seeds for net in nets for schedule in schedules
            for arm in arms for alg2 in alg2s]


def run_all(work: Work, maker: InitMaker, configs, jobs: int) -> dict:
    """Make each init (one at a time) and train it as soon as it exists, ``jobs`` trainings side by side."""
    from concurrent.futures import ThreadPoolExecutor

    def train(config, weights):
        result = train_config(work, maker, config, weights)
        print("trained %-44s test acc %s (%.0f s)" % (run_tag(config), result["final_test_accuracy"],
                                                       result["seconds"]), flush=True)
        return result

    with ThreadPoolExecutor(jobs) as pool:
        futures = {}
        for config in configs:
            t0 = time.time()
            weights = maker(config.net, config.arm, config.alg2, config.seed)
            print("init %-47s %.1f s" % (run_tag(config), time.time() - t0), flush=True)
            futures[config] = pool.submit(train, config, weights)
        return {config: future.result() for config, future in futures.items()}


def finished_runs(work: Work, maker: InitMaker, configs) -> dict:
    """The runs of this experiment already in the work folder (a partial experiment's report)."""
    results = {}
    for config in configs:
        path = work.host / "runs" / (run_key(config, maker) + ".json")
        if path.exists():
            results[config] = json.loads(path.read_text())
    return results


# --- report ---------------------------------------------------------------------------------------------
def accuracy_or_chance(acc):
    """A diverged run (no accuracy: its scores are NaN) counts as chance, 1/10."""
    return 0.1 if acc is None else acc


def runs_by_arm(results: dict):
    """(arm, alg2, [runs over seeds]) for every arm of ``results`` (one net and schedule) that has runs."""
    arms = sorted({(c.arm, c.alg2) for c in results}, key=lambda a: (ARMS.index(a[0]) if a[0] in ARMS else 99,
                                                                      a[0], a[1]))
    for arm, alg2 in arms:
        runs = [r for c, r in sorted(results.items()) if c.arm == arm and c.alg2 == alg2]
        yield arm, alg2, runs


def mean_std(values):
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(results: dict) -> list:
    """One row per (arm, alg2) of one net and schedule: final and early accuracy, mean and std over seeds."""
    rows = []
    for arm, alg2, runs in runs_by_arm(results):
        final = mean_std([accuracy_or_chance(r["final_test_accuracy"]) for r in runs])
        early = mean_std([accuracy_or_chance(r["curve"][1]["test_accuracy"]) if len(r["curve"]) > 1 else 0.1
                          for r in runs])
        rows.append({"init": arm, "alg2": alg2, "seeds": len(runs), "final_mean": final[0], "final_std": final[1],
                     "early_mean": early[0], "early_iter": runs[0]["curve"][1]["iter"],
                     "diverged": sum(r["diverged"] for r in runs),
                     "first_loss": mean_std([r["curve"][1]["train_loss"] if len(r["curve"]) > 1 else np.nan
                                             for r in runs])[0]})
    return rows


def table_lines(rows, title):
    """Markdown: one row per arm with final accuracy (mean ± std), accuracy at the first check, diverged runs."""
    lines = ["### %s" % title, "",
             "| init | Alg. 2 | final test acc (mean ± std) | @%d | diverged | seeds |" % rows[0]["early_iter"],
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %.2f ± %.2f %% | %.1f %% | %d | %d |" % (
            r["init"], "yes" if r["alg2"] else "no", 100 * r["final_mean"], 100 * r["final_std"],
            100 * r["early_mean"], r["diverged"], r["seeds"]))
    return lines


def checkpoint_rows(results: dict) -> list:
    """Test accuracy (mean, std over seeds) at a few iterations along the schedule, per (arm, alg2)."""
    iters = [c["iter"] for c in max(results.values(), key=lambda r: len(r["curve"]))["curve"]]
    shown = sorted({iters[1], iters[len(iters) // 3], iters[len(iters) // 2], iters[-1]})
    rows = []
    for arm, alg2, runs in runs_by_arm(results):
        acc = {it: [accuracy_or_chance(c["test_accuracy"]) for r in runs for c in r["curve"] if c["iter"] == it]
               for it in shown}
        rows.append({"init": arm, "alg2": alg2, "at": {it: mean_std(a) if a else (0.1, 0.0) for it, a in acc.items()}})
    return rows


def checkpoint_lines(rows):
    """Markdown: accuracy (mean ± std) at a few iterations along the schedule, per arm."""
    shown = list(rows[0]["at"])
    lines = ["| init | Alg. 2 | " + " | ".join("@%d" % it for it in shown) + " |", "|---|---|" + "---|" * len(shown)]
    for r in rows:
        cells = " | ".join("%.1f ± %.1f" % (100 * m, 100 * s) for m, s in r["at"].values())
        lines.append("| %s | %s | %s |" % (r["init"], "yes" if r["alg2"] else "no", cells))
    return lines


def verdict_line(judged):
    """Markdown: our default arm against the best filler and the best original arm."""
    parts = ["**%s %.2f ± %.2f %%**" % (judged["ours"], 100 * judged["ours_mean"], 100 * judged["ours_std"])]
    for label in ("filler", "original", "original, same init"):
        if label in judged:
            j = judged[label]
            parts.append("best %s %s %.2f ± %.2f %%: %+.2f points, %s" % (
                label, j["best"], 100 * j["mean"], 100 * j["std"], 100 * j["margin"], j["outcome"]))
    return "Verdict: " + "; ".join(parts) + "."


#: The original's arm with the same weight init as ours (its "elwise" is a gaussian draw).
SAME_INIT_IN_ORIGINAL = {"ours-gaussian": "orig-elwise", "ours-kmeans": "orig-kmeans"}


def judged_arms(judge=None):
    """The (arm, with Alg. 2) pairs the verdict lines judge: ``judge`` (the arm that stands for our
    default, e.g. a variant spelling out the default with another sample size) first, if given."""
    if not judge:
        return JUDGED_ARMS
    return ((judge, True),) + tuple(arm for arm in JUDGED_ARMS if arm[0] != judge)


def verdict(rows, default=JUDGED_ARMS[0]) -> dict:
    """Our arm ``default`` against the best Caffe filler, the best original arm and the original arm
    with the same init (all with the seed spread: "within" when |margin| <= the larger std)."""
    by = {(r["init"], r["alg2"]): r for r in rows}
    if default not in by:
        return {}
    ours = by[default]
    out = {"ours": arm_tag(*default), "ours_mean": ours["final_mean"], "ours_std": ours["final_std"]}
    same = SAME_INIT_IN_ORIGINAL.get(default[0], "orig-kmeans" if "kmeans" in default[0] else "orig-elwise")
    for label, pick in (("filler", lambda r: r["init"].startswith("caffe-")),
                        ("original", lambda r: r["init"].startswith("orig-")),
                        ("original, same init", lambda r: (r["init"], r["alg2"]) == (same, default[1]))):
        rivals = [r for r in rows if pick(r)]
        if not rivals:
            continue
        best = max(rivals, key=lambda r: r["final_mean"])
        margin = ours["final_mean"] - best["final_mean"]
        spread = max(ours["final_std"], best["final_std"])
        outcome = "within seed spread" if abs(margin) <= spread else ("ahead" if margin > 0 else "behind")
        out[label] = {"best": arm_tag(best["init"], best["alg2"]), "mean": best["final_mean"],
                      "std": best["final_std"], "margin": margin, "outcome": outcome}
    return out


def plot_curves(results: dict, path: Path, title: str):
    """Mean test accuracy vs iteration (band: min..max over seeds), one panel per Alg. 2 setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for arm, alg2, runs in runs_by_arm(results):
        ax = axes[int(alg2)]
        length = min(len(r["curve"]) for r in runs)
        its = [c["iter"] for c in runs[0]["curve"][:length]]
        acc = np.array([[accuracy_or_chance(c["test_accuracy"]) for c in r["curve"][:length]] for r in runs]) * 100
        line, = ax.plot(its, acc.mean(0), marker="o", ms=3, label=arm)
        ax.fill_between(its, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.15)
    for ax, alg2 in zip(axes, (False, True)):
        ax.set_title("with Alg. 2 (between-layer)" if alg2 else "without Alg. 2")
        ax.set_xlabel("SGD iteration (batch 32)")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(loc="lower right", fontsize=7)
    axes[0].set_ylabel("test accuracy (%)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(results: dict, out: Path, args, seconds: float) -> dict:
    """Tables, verdicts, plots and JSON for every (net, schedule) that has runs; the tables are also
    written as train_few_labels.md (what docs/TRAINING.md quotes)."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {"args": vars(args), "seconds": seconds, "load_average": os.getloadavg(), "suites": {}}
    markdown = []
    for net in NETS:
        for schedule in SCHEDULES:
            part = {c: r for c, r in results.items() if c.net == net and c.schedule == schedule}
            if not part:
                continue
            s = SCHEDULES[schedule]
            title = "%s net, %s schedule (%d steps, lr %g%s)" % (
                net, schedule, s.iters, s.base_lr, ", x0.1 after %d" % s.stepsize if s.stepsize else "")
            rows = summarize(part)
            checkpoints = checkpoint_rows(part)
            judged = [v for v in (verdict(rows, arm) for arm in judged_arms(args.judge)) if v]
            png = out / ("curves_%s_%s.png" % (net, schedule))
            markdown += table_lines(rows, title) + [""] + checkpoint_lines(checkpoints) + [""]
            markdown += [line for v in judged for line in (verdict_line(v), "")] + ["![%s](%s)" % (title, png.name), ""]
            plot_curves(part, png, "Fashion-MNIST, %d labels, real Caffe SGD: %s" % (args.n, title))
            payload["suites"]["%s/%s" % (net, schedule)] = {
                "title": title, "rows": rows, "checkpoints": checkpoints, "verdict": judged, "plot": png.name,
                "runs": {run_tag(c): r for c, r in sorted(part.items())}}
    print("\n".join(markdown))
    (out / "train_few_labels.md").write_text("\n".join(markdown))
    path = out / "train_few_labels.json"
    path.write_text(json.dumps(payload, indent=1, default=float))
    print("wrote %s, train_few_labels.md and curves_*.png" % path)
    return payload


def parse_variants(items):
    """``LABEL=OPTIONS`` pairs (ours-LABEL arms with these magic_init options)."""
    variants = {}
    for item in items or []:
        label, _, options = item.partition("=")
        if not options:
            raise SystemExit("--variant wants LABEL=\"magic_init options\", got %r" % item)
        variants[label] = options
    return variants


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="small,caffenet,vgg")
    ap.add_argument("--schedules", default="short,long")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms (ours-LABEL for --variant)")
    ap.add_argument("--alg2", default="both", choices=("both", "with", "without"))
    ap.add_argument("--variant", action="append", metavar='LABEL="OPTIONS"',
                    help="an extra arm ours-LABEL made with these magic_init options")
    ap.add_argument("--original", help="snapshot of github philkr/magic_init (checkout or bare git folder)")
    ap.add_argument("--n", type=int, default=1000, help="labelled training images (balanced)")
    ap.add_argument("--n-test", type=int, default=1000, help="test images (balanced; test_iter x 100)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="trainings run side by side (1 core each)")
    ap.add_argument("--report-only", action="store_true",
                    help="no new runs: tables, JSON and plots from the finished runs in the work folder")
    ap.add_argument("--out", default=str(REPO / "out" / "train_few_labels"), help="JSON and PNG folder")
    ap.add_argument("--judge", help="the arm the verdict lines judge as our default (besides ours-gaussian "
                                    "and ours-kmeans), e.g. a variant")
    args = ap.parse_args(argv)
    nets, schedules = args.nets.split(","), args.schedules.split(",")
    for name, known in ((nets, NETS), (schedules, SCHEDULES)):
        unknown = [n for n in name if n not in known]
        if unknown:
            raise SystemExit("unknown %s; choose from %s" % (unknown, ", ".join(known)))
    alg2s = {"both": (False, True), "with": (True,), "without": (False,)}[args.alg2]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    work = Work()
    list_path, _ = prepare_data(work, args.n, args.n_test)
    maker = InitMaker(work, list_path, args.original, parse_variants(args.variant))
    configs = configs_of(nets, schedules, args.arms.split(","), seeds, alg2s)
    t0 = time.time()
    results = finished_runs(work, maker, configs) if args.report_only else run_all(work, maker, configs, args.jobs)
    report(results, Path(args.out), args, time.time() - t0)


if __name__ == "__main__":
    main()

"""Benchmark (issue 6.1): wall time and peak RSS of magic_init on CaffeNet, 160 real photos, batch 16.

    python bench/bench_init.py [--images 160] [--repeats 1] [--engines torch-cpu,caffe-cpu] [--json FILE]

Configurations (each one CLI run, ``python -m magic_init models/caffenet.prototxt OUT --data LIST``,
in a fresh process): gaussian + Alg. 1 (``--no-between-layer``), gaussian + both, kmeans + both,
pca + both. Engines: the built-in engine on the CPU (and on CUDA when torch sees a device) and
pycaffe on the CPU in the real-Caffe chroot (``scripts/caffe-env run python3 -m magic_init ...
--backend caffe``, Debian's Caffe on OpenBLAS). Repeats interleave engines and configurations, so
the neighbours' load hits all of them alike; the table shows the median over repeats.

Per engine, a separate process also times one forward+backward pass over the same sample (the
same API calls the algorithm makes: batches of 16 loaded into the input, forward, a Gaussian top
diff on the output, backward; the best of ``--pass-repeats`` passes after one warm-up pass, taken
before every repeat and once more at the end, and the best of those used). Each
configuration's time is then given as a multiple of that pass, twice: the CLI's whole wall time
(start-up, reading 160 JPEGs, writing the model included) and the algorithm alone (the
WithinLayer + BetweenLayer step times the CLI logs with -v).

Targets (issue 6): kmeans + both under 54 s on this CPU (under 3 s on an H100); gaussian + both
at most 4 forward+backward passes (algorithm time); peak RSS under 2 GB.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import common  # bench/common.py: `python bench/X.py` puts bench/ first on sys.path

MODEL = common.REPO / "models" / "caffenet.prototxt"
OUT = common.REPO / "out" / "bench-init"
CONFIGS = [("gaussian + Alg. 1", ["--init", "gaussian", "--no-between-layer"]),
           ("gaussian + both", ["--init", "gaussian"]),
           ("kmeans + both", ["--init", "kmeans"]),
           ("pca + both", ["--init", "pca"])]
TARGET_KMEANS_S = {"cpu": 54.0, "cuda": 3.0}
TARGET_GAUSSIAN_PASSES = 4.0
TARGET_RSS_MB = 2048.0

# One forward+backward pass over the sample, through the public API (runs on both backends).
PASS_WORKER = r"""
import json, sys, time
import numpy as np
import magic_init
from magic_init.algorithm.runner import SampleRunner
prototxt, data, backend, device, images, repeats = sys.argv[1:7]
began = time.perf_counter()
model = magic_init.read_model(prototxt)
net = magic_init.build_net(model, backend=backend, device=device, batch_size=16)
sample = magic_init.load_sample(net, model, data=data, num_images=int(images))
setup = time.perf_counter() - began
runner = SampleRunner(net, sample.data, 16)
rng = np.random.RandomState(0)
top = net.outputs[0]

def one_pass():
    t = time.perf_counter()
    for _ in runner.full_passes():
        net.forward()
        net.blobs[top].diff[...] = rng.standard_normal(net.blobs[top].diff.shape)
        net.backward()
    return time.perf_counter() - t

def forward_pass():
    t = time.perf_counter()
    for _ in runner.full_passes():
        net.forward()
    return time.perf_counter() - t

one_pass()
passes = [one_pass() for _ in range(int(repeats))]
forwards = [forward_pass() for _ in range(int(repeats))]
print(json.dumps({"setup_s": setup, "fb_pass_s": min(passes), "fb_passes_s": passes,
                  "forward_pass_s": min(forwards), "images": int(len(sample.data))}))
"""


def engines(names):
    """``{name: (argv prefix, backend, device, path mapper)}`` for the requested engines that exist."""
    table = {"torch-cpu": ([sys.executable], "torch", "cpu", str),
             "torch-cuda": ([sys.executable], "torch", "cuda", str),
             "caffe-cpu": (common.caffe_env_argv(["python3"]), "caffe", "cpu", common.chroot_path)}
    chosen = {}
    for name in names:
        if name == "torch-cuda" and not common.torch_cuda_available():
            continue
        chosen[name] = table[name]
    return chosen


def init_argv(engine, config_args, data, output):
    """The CLI command line of one configuration on one engine."""
    prefix, backend, device, path = engine
    return prefix + ["-m", "magic_init", path(MODEL), path(output), "--data", path(data), "--root",
                     path(Path(data).parent), "--backend", backend, "--device", device, "-v"] + config_args


def pass_argv(engine, data, images, repeats, model=MODEL):
    prefix, backend, device, path = engine
    return prefix + ["-c", PASS_WORKER, path(model), path(data), backend, device, images, repeats]


def run_init(engine, config_args, data, output):
    """One CLI run: wall, peak RSS and the algorithm's step times; raises on failure."""
    result = common.run_measured(init_argv(engine, config_args, data, output))
    if result["rc"] != 0:
        raise SystemExit("magic_init failed (rc %d):\n%s" % (result["rc"], result["stderr"][-3000:]))
    steps = common.step_seconds(result["stderr"])
    return {"wall_s": result["wall_s"], "cpu_s": result["cpu_s"], "peak_rss_mb": result["peak_rss_mb"],
            "steps_s": steps, "algorithm_s": sum(steps.values())}


def run_pass(engine, data, images, repeats, model=MODEL):
    """The forward+backward pass worker on ``model``: its JSON plus its peak RSS."""
    result = common.run_measured(pass_argv(engine, data, images, repeats, model))
    report = common.last_json_line(result["stdout"])
    if result["rc"] != 0 or report is None:
        raise SystemExit("pass worker failed (rc %d):\n%s" % (result["rc"], result["stderr"][-3000:]))
    report["peak_rss_mb"] = result["peak_rss_mb"]
    return report


def median_of(runs, key):
    return statistics.median(run[key] for run in runs)


def summarize(name, runs, fb_pass):
    """Medians over repeats and the multiples of one forward+backward pass."""
    wall, algo = median_of(runs, "wall_s"), median_of(runs, "algorithm_s")
    cpu = statistics.median(run.get("cpu_s", float("nan")) for run in runs)
    return {"wall_s": wall, "cpu_s": cpu, "algorithm_s": algo, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "wall_passes": wall / fb_pass, "algorithm_passes": algo / fb_pass, "runs": runs}


def verdicts(engine, results):
    """Pass/fail of the issue's targets for one engine's results."""
    device = "cuda" if engine.endswith("cuda") else "cpu"
    kmeans, gaussian = results["kmeans + both"], results["gaussian + both"]
    limit = TARGET_KMEANS_S[device]
    return {"kmeans + both under %g s (wall)" % limit: kmeans["wall_s"] < limit,
            "kmeans + both under %g s (algorithm)" % limit: kmeans["algorithm_s"] < limit,
            "gaussian + both <= %g fb passes (algorithm)" % TARGET_GAUSSIAN_PASSES:
                gaussian["algorithm_passes"] <= TARGET_GAUSSIAN_PASSES,
            "peak RSS < %g MB (all configs)" % TARGET_RSS_MB:
                all(r["peak_rss_mb"] < TARGET_RSS_MB for r in results.values())}


def measure_all(chosen, data, args):
    """Interleaved runs: for each repeat, the pass worker and every configuration on every engine."""
    raw = {name: {"pass": [], "configs": {label: [] for label, _ in CONFIGS}} for name in chosen}
    loads = []
    def time_passes(repeat):
        for name, engine in chosen.items():
            raw[name]["pass"].append(run_pass(engine, data, args.images, args.pass_repeats))
            print("[%d] %s: fb pass %.2f s" % (repeat, name, raw[name]["pass"][-1]["fb_pass_s"]), file=sys.stderr)

    for repeat in range(args.repeats):
        time_passes(repeat)
        for label, config_args in CONFIGS:
            for name, engine in chosen.items():
                loads.append(common.load_average())
                output = OUT / ("%s-%s.caffemodel" % (name, label.split()[0] + ("-alg1" if "1" in label else "")))
                run = run_init(engine, config_args, data, output)
                raw[name]["configs"][label].append(run)
                print("[%d] %s %s: %.1f s, %.0f MB" % (repeat, name, label, run["wall_s"], run["peak_rss_mb"]),
                      file=sys.stderr)
    time_passes(args.repeats)  # once more at the end: the load may change while the configurations run
    return raw, loads


def build_report(raw, loads, args):
    report = {"machine": common.machine(), "model": "models/caffenet.prototxt", "images": args.images,
              "batch": 16, "size": "227x227", "repeats": args.repeats, "load_average_1m": loads, "engines": {}}
    for name, parts in raw.items():
        fb = min(p["fb_pass_s"] for p in parts["pass"])
        results = {label: summarize(label, runs, fb) for label, runs in parts["configs"].items()}
        report["engines"][name] = {"fb_pass_s": fb, "forward_pass_s": min(p["forward_pass_s"] for p in parts["pass"]),
                                   "pass_peak_rss_mb": max(p["peak_rss_mb"] for p in parts["pass"]),
                                   "configs": results, "targets": verdicts(name, results)}
    return report


def print_report(report):
    rows = []
    for name, engine in report["engines"].items():
        rows.append([name, "forward pass", "%.2f" % engine["forward_pass_s"], "", "", "", "", ""])
        rows.append([name, "forward+backward pass", "%.2f" % engine["fb_pass_s"], "", "", "1.0", "1.0",
                     "%.0f" % engine["pass_peak_rss_mb"]])
        for label, r in engine["configs"].items():
            rows.append([name, label, "%.1f" % r["wall_s"], "%.1f" % r["cpu_s"], "%.1f" % r["algorithm_s"],
                         "%.1f" % r["wall_passes"], "%.1f" % r["algorithm_passes"], "%.0f" % r["peak_rss_mb"]])
    print(common.format_table(["engine", "job", "wall s", "CPU s", "algorithm s", "wall / fb pass",
                               "algorithm / fb pass", "peak RSS MB"], rows))
    names = list(report["engines"])
    if "caffe-cpu" in names:
        for name in names:
            if name != "caffe-cpu":
                print("\n%s vs caffe-cpu (wall time ratio, > 1: %s faster):" % (name, name))
                for label in report["engines"][name]["configs"]:
                    print("  %-20s %.2fx" % (label, report["engines"]["caffe-cpu"]["configs"][label]["wall_s"]
                                            / report["engines"][name]["configs"][label]["wall_s"]))
    for name, engine in report["engines"].items():
        print("\ntargets, %s:" % name)
        for target, ok in engine["targets"].items():
            print("  %-45s %s" % (target, "PASS" if ok else "FAIL"))
    print("\nmachine: %s; 1-min load average during the runs: %s" % (
        report["machine"], ", ".join("%.1f" % x for x in report["load_average_1m"])))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--pass-repeats", type=int, default=2)
    parser.add_argument("--engines", default="torch-cpu,torch-cuda,caffe-cpu")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    photos = common.ensure_photos(args.images)
    data, _ = common.split_photos(photos, args.images, 0)
    OUT.mkdir(parents=True, exist_ok=True)
    chosen = engines(args.engines.split(","))
    raw, loads = measure_all(chosen, data, args)
    report = build_report(raw, loads, args)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

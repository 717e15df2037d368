"""Side by side with the original research code: speed, memory and passes (issue 15's tables).

    python bench/vs_original.py --original /path/to/philkr-magic_init [--nets caffenet,small5] \\
        [--images 160] [--repeats 3] [--parts vs,passes,scaling,corpus] [--scaling 40,160,640,1280] \\
        [--corpus ../shared/realnets] [--no-original] [--settle 0] [--out DIR]

Prints a markdown report and, with ``--out DIR``, writes ``DIR/vs_original.json`` (every run) and
``DIR/vs_original.md``. Run it on a quiet machine: every run records the 1-minute load average
before and after it, the report the machine and the load averages at its start and end. Every
measured run is a fresh process; wall time is the whole process (start-up and image reading
included), peak RSS its ``ru_maxrss`` (``common.run_measured``), both processes use every core.
Repeats interleave the runs (repeat 1 of everything, then repeat 2, ...); tables show the median
wall time and the largest peak RSS over repeats. Parts (``--parts``):

- ``vs``: per net (``caffenet`` = models/caffenet.prototxt at 227x227, ``small5`` =
  models/small5.prototxt at 64x64) and init, on the same ``--images`` benchmark photos, batch 16:
  *original*: the research code (github philkr/magic_init; ``--original``: a checkout or a bare git
  folder, copied to the real-Caffe chroot's /tmp, never into the project) in the chroot (Debian's
  pycaffe, CPU), through ``bench/fashion_caffe.py original``, seeded, ``-z -cs -t kmeans`` (k-means)
  or ``-z -cs -t elwise`` (gaussian), ``-d '<the photos>/*.jpg' -bs 16 -nit images/16``, on the
  net's prototxt with its Input layer turned into ``input_dim`` (what the original's loader reads);
  *ours*: ``python -m magic_init NET OUT --data LIST --num-images N --init kmeans|gaussian -q`` on
  the host (built-in engine, default options: both steps). Columns: wall s, peak RSS MiB, CPU s of
  each, **ratio = original wall / ours wall** (> 1: ours faster), and, measured after all repeats
  (untimed, ``magic_init stats`` on the same sample), the change-rate spread of the model each side
  wrote last (max/min of the layers' mean change rates; 1 = equal).
- ``passes``: per net, our forward and backward passes over the sample (``magic_init.timing.counting_passes``:
  the most images any layer ran, divided by the sample size) for gaussian with Alg. 1 only,
  gaussian with both steps and kmeans with both (``bench/profile_init.py``); and the time of one
  forward+backward pass over the sample on our engine (``bench_init.PASS_WORKER``: batches of 16,
  the best pass after a warm-up), with **gaussian both / pass** = the gaussian-both run's wall time
  less process start-up and imports, divided by that pass (the issue's target: within 2.5).
- ``scaling``: ours on CaffeNet, ``--init kmeans``, for each ``--scaling`` sample size (the 160
  photos repeated): wall s and peak RSS MiB.
- ``corpus``: ours, ``--init gaussian`` (the default), on four big nets of ``--corpus`` and on
  ResNet-152 (made from the corpus' ResNet-101 by ``deeper_resnet.py``), at their own input size,
  16 images (colorization: 8), ``--batch-size auto`` (the default; ``realnets.run_net``): wall s, peak RSS MiB.

``--no-original`` runs only our side of ``vs``. In ``vs`` the original runs first in even repeats and ours
first in odd ones, and ``--settle S`` waits S idle seconds before each timed run: on the benchmark VM a
run that follows the original's 110 s on both cores took about 1.2 s longer than one that does not
(docs/RESULTS.md 0g).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import bench_init
import common  # bench/common.py: `python bench/X.py` puts bench/ first on sys.path
import realnets
from train_few_labels import Work, install_original

NETS = {"caffenet": common.REPO / "models" / "caffenet.prototxt", "small5": common.REPO / "models" / "small5.prototxt"}
INITS = ("kmeans", "gaussian")
ORIGINAL_TYPE = {"kmeans": "kmeans", "gaussian": "elwise"}  # the original's -t for our --init
PASS_CONFIGS = [("gaussian + Alg. 1", "gaussian", ["--no-between-layer"]), ("gaussian + both", "gaussian", []),
                ("kmeans + both", "kmeans", [])]
CORPUS_NETS = {"resnet__ResNet-101-deploy": 16, "resnet__ResNet-152-deploy": 16, "inception__deploy_inception-v3": 16,
               "vgg__VGG_ILSVRC_19_layers_deploy": 16, "colorization__colorization_deploy_v2": 8}
#: corpus nets made from another one by deeper_resnet.py (not in the real-nets folder): stem -> source stem
MADE_NETS = {"resnet__ResNet-152-deploy": "resnet__ResNet-101-deploy"}
BATCH = 16
PARTS = ("vs", "passes", "scaling", "corpus")
OUT = common.REPO / "out" / "vs-original"


def measured(argv):
    """``common.run_measured`` plus the load average before and after; raises when the run fails."""
    before = common.load_average()
    result = common.run_measured(argv)
    if result["rc"] != 0:
        raise SystemExit("failed (rc %d): %s\n%s" % (result["rc"], " ".join(map(str, argv)), result["stderr"][-3000:]))
    return {"argv": [str(a) for a in argv], "wall_s": result["wall_s"], "cpu_s": result["cpu_s"],
            "peak_rss_mb": result["peak_rss_mb"], "load_before": before, "load_after": common.load_average()}


def summary(runs, key="wall_s"):
    """Median ``key`` (wall s), median CPU s and the largest peak RSS over repeats, with the runs."""
    return {"wall_s": statistics.median(r[key] for r in runs),
            "cpu_s": statistics.median(r.get("cpu_s", math.nan) for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "runs": runs}


# --- the original -----------------------------------------------------------------------------------
def inputdim_prototxt(prototxt, work):
    """The net with its Input layer turned into ``input``/``input_dim`` (the original's loader reads
    the image size there); its path inside the chroot."""
    from google.protobuf import text_format
    from magic_init.proto import caffe_pb2

    net = text_format.Merge(Path(prototxt).read_text(), caffe_pb2.NetParameter())
    layer = next(l for l in net.layer if l.type == "Input")
    net.input.extend(layer.top)
    net.input_dim.extend(layer.input_param.shape[0].dim)
    net.layer.remove(layer)
    out = work.host / (Path(prototxt).stem + "_inputdim.prototxt")
    out.write_text(text_format.MessageToString(net))
    return work.chroot(out)


def chroot_photos(work, data):
    """The list file's photos copied into a folder of their own in the chroot; the glob the
    original's ``-d`` takes (inside the chroot)."""
    lines = Path(data).read_text().split("\n")
    folder = work.host / ("photos%d" % sum(1 for line in lines if line))
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for i, line in enumerate(line for line in lines if line):
        shutil.copy(line.rsplit(" ", 1)[0], folder / ("photo_%04d.jpg" % i))
    return work.chroot(folder) + "/*.jpg"


def original_argv(snapshot, prototxt, out, photos, images, init):
    batch = min(BATCH, images)
    return common.caffe_env_argv(["python3", "bench/fashion_caffe.py", "original", snapshot, prototxt, out, "0",
                                  "-z", "-cs", "-t", ORIGINAL_TYPE[init], "-d", photos, "-bs", batch,
                                  "-nit", -(-images // batch), "-q"])


def ours_argv(prototxt, out, data, images, *options):
    return [sys.executable, "-m", "magic_init", prototxt, out, "--data", data, "--num-images", images, "-q", *options]


# --- the parts ---------------------------------------------------------------------------------------
def run_vs(args, data, repeat, raw):
    """One repeat of the side by side: per net and init, the original (unless --no-original) and ours,
    the original first in even repeats and ours first in odd ones, each after ``--settle`` idle
    seconds (so that neither side runs in the wake of the other's heavy run)."""
    for net in args.nets:
        for init in INITS:
            sides = raw.setdefault("%s/%s" % (net, init), {"original": [], "ours": []})
            runs = {"ours": lambda: ours_argv(NETS[net], OUT / ("%s_%s.caffemodel" % (net, init)), data,
                                              args.images, "--init", init)}
            if args.snapshot:
                out = args.work.chroot(args.work.host / ("original_%s_%s.caffemodel" % (net, init)))
                runs["original"] = lambda: original_argv(args.snapshot, args.inputdim[net], out, args.photos,
                                                         args.images, init)
            order = ["original", "ours"] if repeat % 2 == 0 else ["ours", "original"]
            for side in [s for s in order if s in runs]:
                time.sleep(args.settle)
                sides[side].append(measured(runs[side]()))
            log(repeat, "vs %s %s" % (net, init), sides["original"][-1:] + sides["ours"][-1:])


def measure_spreads(args, data, raw):
    """After the timed runs (untimed): the change-rate spread of the last model each side wrote, per
    net and init, measured by ``magic_init stats`` on the same sample (the gradient definition's
    max/min of the layers' mean change rates, ``summary.orig_rate_spread``; 1 = equal rates)."""
    for net in args.nets:
        for init in INITS:
            models = {"ours": OUT / ("%s_%s.caffemodel" % (net, init))}
            if args.snapshot:
                models["original"] = args.work.host / ("original_%s_%s.caffemodel" % (net, init))
            for side, model in models.items():
                report = OUT / ("spread_%s_%s_%s.json" % (side, net, init))
                result = common.run_measured([sys.executable, "-m", "magic_init", "stats", NETS[net], "--load", model,
                                              "--data", data, "--num-images", args.images, "--backend", "torch",
                                              "--json", report, "-q"])
                spread = None
                if result["rc"] == 0 and report.exists():
                    stats = json.loads(report.read_text())
                    stats = stats["models"][0] if "models" in stats else stats
                    spread = stats.get("summary", {}).get("orig_rate_spread")
                raw.setdefault("%s/%s" % (net, init), {})[side] = spread
                print("spread %s %s %s: %s" % (side, net, init, spread), file=sys.stderr)


def run_passes(args, data, repeat, raw):
    """One repeat of the pass counts and of gaussian-both / one forward+backward pass, per net."""
    engine = bench_init.engines(["torch-cpu"])["torch-cpu"]
    for net in args.nets:
        parts = raw.setdefault(net, {"fb_pass": [], "configs": {label: [] for label, _, _ in PASS_CONFIGS}})
        parts["fb_pass"].append(bench_init.run_pass(engine, data, args.images, 2, model=NETS[net]))
        for label, init, extra in PASS_CONFIGS:
            report = OUT / ("profile_%s.json" % net)
            run = measured([sys.executable, common.REPO / "bench" / "profile_init.py", "--model", NETS[net],
                            "--images", args.images, "--init", init, "--json", report, "--", *extra])
            profile = json.loads(report.read_text())
            run.update(passes=profile["passes"], after_startup_s=profile["total_wall_s"] - profile["rows"][0]["wall_s"])
            parts["configs"][label].append(run)
            log(repeat, "passes %s %s" % (net, label), [run])


def run_scaling(args, repeat, raw):
    for images in args.scaling:
        runs = raw.setdefault(str(images), [])
        runs.append(measured(ours_argv(NETS["caffenet"], OUT / "scaling.caffemodel", common.photo_list(images),
                                       images, "--init", "kmeans")))
        log(repeat, "scaling %d" % images, runs[-1:])


def corpus_path(corpus, stem):
    """The prototxt of corpus net ``stem``: in ``corpus``, or made into OUT from a net there (``MADE_NETS``)."""
    if stem not in MADE_NETS:
        return Path(corpus) / (stem + ".prototxt")
    import deeper_resnet
    from google.protobuf import text_format
    from magic_init.io import read_prototxt
    source = MADE_NETS[stem]
    path = OUT / (stem + ".prototxt")
    OUT.mkdir(parents=True, exist_ok=True)
    net = deeper_resnet.deepen(read_prototxt(str(Path(corpus) / (source + ".prototxt"))),
                               deeper_resnet.RESNET152_BLOCKS)
    path.write_text(text_format.MessageToString(net))
    return path


def run_corpus(args, repeat, raw):
    for stem, images in CORPUS_NETS.items():
        before = common.load_average()
        record = realnets.run_net(corpus_path(args.corpus, stem), OUT, images, "auto", None, 3600,
                                  data=common.photo_list(images))
        record.update(load_before=before, load_after=common.load_average(), images=images)
        raw.setdefault(stem, []).append(record)
        log(repeat, "corpus %s (rc %d)" % (stem, record["rc"]), [record])


def log(repeat, what, runs):
    print("[%d] %s: %s" % (repeat, what, ", ".join("%.1f s %.0f MiB" % (r["wall_s"], r["peak_rss_mb"]) for r in runs)),
          file=sys.stderr)


# --- the report --------------------------------------------------------------------------------------
def build_report(args, raw, started, loads):
    """The JSON report: medians (``summary``) per table row, the raw runs inside them."""
    report = {"machine": common.machine(), "started": started, "load_average_start": loads[0],
              "load_average_end": loads[1], "command": args.command, "images": args.images,
              "repeats": args.repeats, "settle_s": args.settle,
              "original": str(args.original) if args.snapshot else None}
    if "vs" in raw:
        report["vs"] = []
        for key, sides in raw["vs"].items():
            net, init = key.split("/")
            row = {"net": net, "init": init, "images": args.images, "ours": summary(sides["ours"]),
                   "spread": raw.get("spread", {}).get(key, {})}
            if sides["original"]:
                row["original"] = summary(sides["original"])
                row["ratio"] = row["original"]["wall_s"] / row["ours"]["wall_s"]
            report["vs"].append(row)
    if "passes" in raw:
        report["passes"] = {}
        for net, parts in raw["passes"].items():
            configs = {label: dict(summary(runs), passes=runs[0]["passes"],
                                   after_startup_s=statistics.median(r["after_startup_s"] for r in runs))
                       for label, runs in parts["configs"].items()}
            fb = min(p["fb_pass_s"] for p in parts["fb_pass"])
            report["passes"][net] = {"fb_pass_s": fb, "fb_pass_runs": parts["fb_pass"], "configs": configs,
                                     "gaussian_both_per_pass": configs["gaussian + both"]["after_startup_s"] / fb}
    if "scaling" in raw:
        report["scaling"] = [dict(summary(runs), images=int(n)) for n, runs in raw["scaling"].items()]
    if "corpus" in raw:
        report["corpus"] = [dict(summary(runs), net=stem, images=runs[0]["images"], rc=max(r["rc"] for r in runs))
                            for stem, runs in raw["corpus"].items()]
    return report


def loads_of(runs):
    """'lo-hi' of the 1-minute load averages before and after ``runs``."""
    loads = [r[k] for r in runs for k in ("load_before", "load_after")]
    return "%.1f-%.1f" % (min(loads), max(loads))


def cell(side, key, fmt):
    return fmt % side[key] if side else "-"


def vs_rows(report):
    rows = []
    for r in report["vs"]:
        original, ours = r.get("original"), r["ours"]
        spread = r.get("spread", {})
        rows.append([r["net"], r["init"], cell(original, "wall_s", "%.1f"), "%.1f" % ours["wall_s"],
                     "%.2f" % r["ratio"] if "ratio" in r else "-", cell(original, "cpu_s", "%.1f"),
                     "%.1f" % ours["cpu_s"], cell(original, "peak_rss_mb", "%.0f"), "%.0f" % ours["peak_rss_mb"],
                     _spread(spread.get("original")), _spread(spread.get("ours")),
                     loads_of(ours["runs"] + (original["runs"] if original else []))])
    return rows


def _spread(value):
    return "%.2fx" % value if value else "-"


def passes_rows(report):
    return [[net, label, "%g" % c["passes"]["forward"], "%g" % c["passes"]["backward"], "%.2f" % c["after_startup_s"],
             "%.2f" % p["fb_pass_s"], "%.2f" % (c["after_startup_s"] / p["fb_pass_s"])]
            for net, p in report["passes"].items() for label, c in p["configs"].items()]


def ours_rows(rows, first):
    """Rows of our runs alone: ``first(row)`` (the leading cells), then wall, CPU, peak RSS, loads."""
    return [first(r) + ["%.1f" % r["wall_s"], "%.1f" % r["cpu_s"], "%.0f" % r["peak_rss_mb"], loads_of(r["runs"])]
            for r in rows]


OURS_COLUMNS = ["wall s", "CPU s", "peak RSS MiB", "load 1-min"]


def markdown(report):
    """The report as markdown: the machine and command, then a heading and a table per part."""
    loads = ["/".join("%.2f" % x for x in report[k]) for k in ("load_average_start", "load_average_end")]
    lines = ["Machine: %s. Load average (1/5/15 min) at the start %s, at the end %s. Started %s UTC, "
             "%d repeat(s): medians shown (peak RSS: the largest)." % (report["machine"], loads[0], loads[1],
                                                                       report["started"], report["repeats"]),
             "", "    " + report["command"]]
    tables = []
    if "vs" in report:
        tables.append(("Original vs ours (%d images, batch 16; ratio = original wall / ours wall)" % report["images"],
                       ["net", "init", "original wall s", "ours wall s", "ratio", "original CPU s", "ours CPU s",
                        "original peak RSS MiB", "ours peak RSS MiB", "original rate spread", "ours rate spread",
                        "load 1-min"], vs_rows(report)))
    if "passes" in report:
        tables.append(("Our passes over the %d-image sample; wall time after start-up, and / one forward+backward "
                       "pass" % report["images"], ["net", "configuration", "forward passes", "backward passes",
                                                   "s after start-up", "fb pass s", "/ fb pass"], passes_rows(report)))
    if "scaling" in report:
        tables.append(("Sample size (ours, CaffeNet, --init kmeans)", ["images"] + OURS_COLUMNS,
                       ours_rows(report["scaling"], lambda r: [r["images"]])))
    if "corpus" in report:
        tables.append(("Corpus nets (ours, --init gaussian, own input size, --batch-size auto)",
                       ["net", "images", "rc"] + OURS_COLUMNS,
                       ours_rows(report["corpus"], lambda r: [r["net"], r["images"], r["rc"]])))
    for title, headers, rows in tables:
        lines += ["", "### " + title, "", common.markdown_table(headers, rows)]
    if "passes" in report:
        lines += ["", "Gaussian + both within 2.5 forward+backward passes: " + ", ".join(
            "%s %.2f (%s)" % (net, p["gaussian_both_per_pass"], "yes" if p["gaussian_both_per_pass"] <= 2.5 else "no")
            for net, p in report["passes"].items())]
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--original", help="the original research code: a checkout or a bare git folder")
    parser.add_argument("--no-original", action="store_true", help="part vs: only our side")
    parser.add_argument("--nets", default="caffenet,small5", help="for parts vs and passes")
    parser.add_argument("--images", type=int, default=160, help="sample size of parts vs and passes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=0.0,
                        help="part vs: idle seconds before each timed run (the machine settles after the other side's)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated, of " + ", ".join(PARTS))
    parser.add_argument("--scaling", default="40,160,640,1280", help="sample sizes of part scaling")
    parser.add_argument("--corpus", default=str(realnets.CORPUS), help="the real-nets folder (part corpus)")
    parser.add_argument("--out", help="write vs_original.json and vs_original.md here")
    args = parser.parse_args(argv)
    args.command = "python bench/vs_original.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.nets, args.parts = args.nets.split(","), args.parts.split(",")
    args.scaling = [int(n) for n in args.scaling.split(",")]
    if set(args.parts) - set(PARTS) or set(args.nets) - set(NETS):
        parser.error("unknown part or net")
    if "corpus" in args.parts and not Path(args.corpus).is_dir():
        parser.error("part corpus: no folder %s (give --corpus, the real-nets folder)" % args.corpus)
    if "vs" in args.parts and not args.no_original and not args.original:
        parser.error("part vs needs --original PATH (or --no-original)")
    return args


def main(argv=None):
    args = parse_args(argv)
    started, load_start = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"), list(os.getloadavg())
    OUT.mkdir(parents=True, exist_ok=True)
    data = common.photo_list(args.images)
    args.snapshot = None
    if "vs" in args.parts and not args.no_original:
        args.work = Work("vs_original")
        args.snapshot = install_original(args.work, args.original)
        args.photos = chroot_photos(args.work, data)
        args.inputdim = {net: inputdim_prototxt(NETS[net], args.work) for net in args.nets}
    raw = {part: {} for part in args.parts}
    for repeat in range(args.repeats):
        if "vs" in raw:
            run_vs(args, data, repeat, raw["vs"])
        if "passes" in raw:
            run_passes(args, data, repeat, raw["passes"])
        if "scaling" in raw:
            run_scaling(args, repeat, raw["scaling"])
        if "corpus" in raw:
            run_corpus(args, repeat, raw["corpus"])
    if "vs" in raw:
        measure_spreads(args, data, raw.setdefault("spread", {}))
    report = build_report(args, raw, started, (load_start, list(os.getloadavg())))
    text = markdown(report)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "vs_original.json").write_text(json.dumps(report, indent=1))
        (Path(args.out) / "vs_original.md").write_text(text)
    return report


if __name__ == "__main__":
    main()

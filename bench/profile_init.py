"""Where the time of one magic_init run goes (issue 15's time budget), and how many passes it makes.

    python bench/profile_init.py [--model models/caffenet.prototxt] [--images 160] [--init kmeans]
                                 [--json FILE] [-- more magic_init options]

Runs the CLI once in this process on the built-in engine (CPU) with ``magic_init.timing`` recording:
start-up and imports (torch's included, which the CLI imports when it builds the net), building the net, reading
the sample, Algorithm 1 per layer (forward, drawing weights: patches, sample check, whitening,
k-means), Algorithm 2 per round (measuring, analytic steps) and writing the model, each in wall and
CPU seconds; and the forward and backward passes over the sample, counted per layer in images
(the most any layer ran, divided by the sample size). The photos are the benchmark's 160
(``common.photo_list``), repeated when more images are asked for.
"""
from __future__ import annotations

import time

STARTED_WALL, STARTED_CPU = time.perf_counter(), time.process_time()

from magic_init import entry  # noqa: E402

entry.configure_threads()          # as the magic_init command does, before numpy loads

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections import OrderedDict  # noqa: E402

import common  # noqa: E402  (bench/ is on sys.path when this file runs)

from magic_init import cli, timing  # noqa: E402
import magic_init.engine.net  # noqa: E402,F401  (torch: the CLI imports it when it builds the net)

IMPORTED_WALL, IMPORTED_CPU = time.perf_counter(), time.process_time()


def aggregate(records):
    """``{path: [wall, cpu, calls]}`` summed over calls, in the order the paths first closed
    (children before parents); a per-layer Algorithm 1 path keeps its layer."""
    totals = OrderedDict()
    for path, wall, cpu in records:
        entry = totals.setdefault(path, [0.0, 0.0, 0])
        entry[0] += wall
        entry[1] += cpu
        entry[2] += 1
    return totals


def ordered_rows(totals):
    """Rows (depth, name, wall, cpu, calls), parents before their children, in first-seen order."""
    children = OrderedDict()
    for path in totals:
        for depth in range(1, len(path) + 1):
            children.setdefault(path[:depth - 1], OrderedDict())[path[:depth]] = None
    rows = []

    def walk(parent, depth):
        for path in children.get(parent, ()):
            wall, cpu, calls = totals.get(path, (float("nan"), float("nan"), 0))
            rows.append((depth, path[-1], wall, cpu, calls))
            walk(path, depth + 1)
    walk((), 0)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(common.REPO / "models" / "caffenet.prototxt"))
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--init", default="kmeans")
    parser.add_argument("--json", help="write the table here as JSON")
    parser.add_argument("extra", nargs="*", help="more magic_init options (after --)")
    args = parser.parse_args(argv)
    data = common.photo_list(args.images)
    output = common.REPO / "out" / "profile_init.caffemodel"
    output.parent.mkdir(exist_ok=True)
    began_wall, began_cpu = time.perf_counter(), time.process_time()
    with timing.recording() as records, timing.counting_passes() as counted:
        try:
            cli.main([args.model, str(output), "--data", str(data), "--num-images", str(args.images),
                      "--init", args.init, "--backend", "torch", "-q", *args.extra])
        except SystemExit as error:
            if error.code:
                raise
        passes = counted(args.images)
    run_wall, run_cpu = time.perf_counter() - began_wall, time.process_time() - began_cpu
    totals = aggregate(records)
    top = [(wall, cpu) for path, (wall, cpu, _) in totals.items() if len(path) == 1]
    rows = [(0, "start-up and imports (magic_init, click, numpy, torch)", IMPORTED_WALL - STARTED_WALL,
             IMPORTED_CPU - STARTED_CPU, 1)] + ordered_rows(totals)
    rows.append((0, "other (option parsing, checks, logging)", run_wall - sum(w for w, _ in top),
                 run_cpu - sum(c for _, c in top), 1))
    total_wall, total_cpu = IMPORTED_WALL - STARTED_WALL + run_wall, IMPORTED_CPU - STARTED_CPU + run_cpu
    table = [["  " * depth + name, "%.2f" % wall, "%.2f" % cpu, "%.0f%%" % (100 * wall / total_wall), str(calls)]
             for depth, name, wall, cpu, calls in rows]
    table.append(["total", "%.2f" % total_wall, "%.2f" % total_cpu, "100%", ""])
    print("%s, %d images, --init %s %s (built-in engine, CPU, %s threads)"
          % (os.path.basename(args.model), args.images, args.init, " ".join(args.extra),
             os.environ.get("OMP_NUM_THREADS", "all")))
    print(common.format_table(["part", "wall s", "CPU s", "of wall", "calls"], table))
    print("passes over the sample: %g forward, %g backward (per layer, the most any layer ran)"
          % (passes["forward"], passes["backward"]))
    print("machine: %s; 1-min load average at the end: %.2f" % (common.machine(), common.load_average()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "images": args.images, "init": args.init, "extra": args.extra,
                       "rows": [{"depth": d, "part": n, "wall_s": w, "cpu_s": c, "calls": k} for d, n, w, c, k in rows],
                       "total_wall_s": total_wall, "total_cpu_s": total_cpu, "passes": passes,
                       "load_average_1m": common.load_average(), "machine": common.machine()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

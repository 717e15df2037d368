"""Benchmark: forward and forward+backward images/s, our engine vs pycaffe, CaffeNet at batch 16.

    python bench/bench_engine.py [--model models/caffenet.prototxt] [--batch 16] [--repeats 5]

Our engine runs on the CPU (and on CUDA when torch sees a device); pycaffe runs on the CPU in
the real-Caffe chroot (scripts/caffe-env, Debian's Caffe linked to OpenBLAS), as a worker process
that waits for commands on stdin, so the repeats interleave: ours-cpu, [ours-cuda], pycaffe, and
again. Both build the same prototxt with ``force_backward: true`` (a deploy net has no loss: without
it Caffe's backward does nothing), Caffe's fillers, Gaussian input and top diff.

pycaffe's speed on this 2-core machine depends on the process: one process runs CaffeNet's
forward+backward at ~0.69 s per pass throughout, the next at ~0.93 s (bimodal, CPU time grows by the
same factor). So the benchmark runs ``--rounds`` rounds, each with a fresh pycaffe worker, and each
backend's figure is the median over the repeats of its *fastest* round: the figure favours pycaffe.
The JSON keeps every round's median. Prints one JSON line, then a table with ratios
(ours / pycaffe in images/s; > 1 means we are faster) and, on CUDA, peak GPU memory.
``--per-layer`` adds each layer's forward time alone (forward(start=L, end=L)), per backend.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from magic_init.proto import caffe_pb2

REPO = Path(__file__).resolve().parent.parent

# Runs inside the chroot: build caffe.Net, then answer "forward" / "forward_backward" with seconds.
CAFFE_WORKER = r"""
import json, sys, time, numpy as np, caffe
caffe.set_mode_cpu()
net = caffe.Net(sys.argv[1], caffe.TEST)
rng = np.random.RandomState(0)
for name in net.inputs:
    net.blobs[name].data[...] = rng.standard_normal(net.blobs[name].data.shape)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "layers":
        times = []
        for name in net._layer_names:
            t = time.perf_counter()
            net.forward(start=name, end=name)
            times.append([name, time.perf_counter() - t])
        print(json.dumps(times), flush=True)
        continue
    t = time.perf_counter()
    net.forward()
    if line.strip() == "forward_backward":
        for name in net.outputs:
            net.blobs[name].diff[...] = rng.standard_normal(net.blobs[name].diff.shape)
        net.backward()
    print(time.perf_counter() - t, flush=True)
"""


# Default pause before each timed call (--settle): OpenBLAS (pycaffe) and OpenMP (torch) worker
# threads spin for a while after their last call and would otherwise steal the 2 cores from the
# other backend.
SETTLE_S = 0.5


def bench_prototxt(model, batch):
    """The model with batch `batch` on its Input layer and force_backward set, as prototxt text."""
    net = caffe_pb2.NetParameter()
    text_format.Merge(Path(model).read_text(), net)
    for layer in net.layer:
        if layer.type == "Input":
            for shape in layer.input_param.shape:
                shape.dim[0] = batch
    net.force_backward = True
    return text_format.MessageToString(net)


class CaffeWorker:
    """pycaffe in the chroot, kept alive between timed calls."""

    def __init__(self, prototxt_text):
        root = Path(subprocess.check_output([str(REPO / "scripts" / "caffe-env"), "path"], text=True).strip())
        tmp = root / "tmp" / ("bench-%d.prototxt" % os.getpid())
        tmp.write_text(prototxt_text)
        self.tmp = tmp
        self.proc = subprocess.Popen([str(REPO / "scripts" / "caffe-env"), "run", "python3", "-u", "-c",
                                      CAFFE_WORKER, "/tmp/" + tmp.name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("pycaffe worker failed to start")

    def time(self, mode):
        self.proc.stdin.write(mode + "\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def layer_times(self):
        self.proc.stdin.write("layers\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()
        self.tmp.unlink()


class EngineRunner:
    """Our engine on one device, with the same kind of input and top diffs."""

    def __init__(self, prototxt_text, device):
        import torch

        from magic_init.engine import Net
        self.torch, self.device = torch, device
        net_param = caffe_pb2.NetParameter()
        text_format.Merge(prototxt_text, net_param)
        self.net = Net(net_param, phase="test", device=device)
        self.rng = np.random.RandomState(0)
        for name in self.net.inputs:
            self.net.blobs[name].data[...] = self.rng.standard_normal(self.net.blobs[name].data.shape)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()

    def _sync(self):
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def time(self, mode):
        self._sync()
        t = time.perf_counter()
        if mode == "forward":
            self._forward_only()
        else:
            self.net.forward()
            for name in self.net.outputs:
                self.net.blobs[name].diff[...] = self.rng.standard_normal(self.net.blobs[name].diff.shape)
            self.net.backward()
        self._sync()
        return time.perf_counter() - t

    def _forward_only(self):
        """Forward without recording for backward, where the engine offers a way to say so."""
        no_grad = getattr(self.net, "no_grad", None)
        if no_grad is not None:
            with no_grad():
                self.net.forward()
        else:
            self.net.forward()

    def layer_times(self):
        """Seconds of forward(start=layer, end=layer) for each layer, without recording."""
        times = []
        with self.net.no_grad():
            for name in self.net.layer_names:
                self._sync()
                t = time.perf_counter()
                self.net.forward(start=name, end=name)
                self._sync()
                times.append([name, time.perf_counter() - t])
        return times

    def peak_memory_mib(self):
        if not self.device.startswith("cuda"):
            return None
        return self.torch.cuda.max_memory_allocated() / 2.0 ** 20


def caffe_available():
    sys.path.insert(0, str(REPO / "tests"))
    from caffe_env import caffe_env_ready
    return caffe_env_ready()


def run(args):
    """``args.rounds`` rounds, each with a fresh pycaffe process: warm-up, then ``args.repeats``
    interleaved repeats. A backend's figure is its fastest round's median (see the module doc)."""
    text = bench_prototxt(args.model, args.batch)
    runners = {"engine_cpu": EngineRunner(text, "cpu")}
    import torch
    if torch.cuda.is_available() and not args.no_cuda:
        runners["engine_cuda"] = EngineRunner(text, "cuda")
    use_caffe = caffe_available() and not args.no_caffe
    round_medians = {name: {"forward": [], "forward_backward": []}
                     for name in list(runners) + (["pycaffe_cpu"] if use_caffe else [])}
    layers = None
    for round_index in range(args.rounds):
        worker = CaffeWorker(text) if use_caffe else None
        if worker:
            runners["pycaffe_cpu"] = worker
        try:
            times = time_round(runners, args.repeats, args.settle)
            if args.per_layer and round_index == 0:
                layers = per_layer_medians(runners, args.repeats)
        finally:
            if worker:
                worker.close()
        for name, modes in times.items():
            for mode, seconds in modes.items():
                round_medians[name][mode].append(statistics.median(seconds))
    result = summarize(args, round_medians, runners)
    if layers:
        result["layer_forward_s"] = layers
    return result


def time_round(runners, repeats, settle_s):
    """{runner: {mode: [seconds per repeat]}}, runners interleaved, after one warm-up repeat."""
    times = {name: {"forward": [], "forward_backward": []} for name in runners}
    for repeat in range(repeats + 1):
        for name, runner in runners.items():
            for mode in ("forward", "forward_backward"):
                time.sleep(settle_s)
                seconds = runner.time(mode)
                if repeat:
                    times[name][mode].append(seconds)
    return times


def per_layer_medians(runners, repeats):
    """{layer: {runner: median seconds of its forward alone}}, runners interleaved per repeat."""
    samples = {}
    for _ in range(max(repeats, 1)):
        for name, runner in runners.items():
            for layer, seconds in runner.layer_times():
                samples.setdefault(layer, {}).setdefault(name, []).append(seconds)
    return {layer: {name: statistics.median(ts) for name, ts in by.items()} for layer, by in samples.items()}


def summarize(args, round_medians, runners):
    result = {"model": os.path.basename(args.model), "batch": args.batch, "repeats": args.repeats,
              "rounds": args.rounds, "settle_s": args.settle, "torch_threads": __import__("torch").get_num_threads(),
              "cpus": os.cpu_count()}
    for name, modes in round_medians.items():
        entry = {mode + "_ips": args.batch / min(ts) for mode, ts in modes.items()}
        entry.update({mode + "_s": min(ts) for mode, ts in modes.items()})
        entry.update({mode + "_s_per_round": ts for mode, ts in modes.items()})
        peak = getattr(runners.get(name), "peak_memory_mib", lambda: None)()
        if peak is not None:
            entry["peak_gpu_mib"] = peak
        result[name] = entry
    if "pycaffe_cpu" in result:
        for name in ("engine_cpu", "engine_cuda"):
            if name in result:
                for mode in ("forward", "forward_backward"):
                    result["ratio_%s_%s" % (name, mode)] = (
                        result[name][mode + "_ips"] / result["pycaffe_cpu"][mode + "_ips"])
    return result


def print_table(result):
    print("%-12s %14s %14s %12s" % ("backend", "forward img/s", "fwd+bwd img/s", "peak GPU MiB"))
    for name in ("engine_cpu", "engine_cuda", "pycaffe_cpu"):
        if name in result:
            r = result[name]
            peak = "%.0f" % r["peak_gpu_mib"] if "peak_gpu_mib" in r else "-"
            print("%-12s %14.1f %14.1f %12s" % (name, r["forward_ips"], r["forward_backward_ips"], peak))
    for key in sorted(k for k in result if k.startswith("ratio_")):
        print("%-40s %.2fx" % (key, result[key]))
    layers = result.get("layer_forward_s")
    if layers:
        names = list(next(iter(layers.values())))
        print("\nforward per layer, ms: " + "  ".join("%12s" % n for n in names))
        for layer, by in layers.items():
            print("%-22s " % layer + "  ".join("%12.1f" % (1000 * by[n]) for n in names))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "caffenet.prototxt"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each with a fresh pycaffe process")
    parser.add_argument("--settle", type=float, default=SETTLE_S, help="seconds of pause before each timed call")
    parser.add_argument("--no-caffe", action="store_true", help="skip pycaffe (no chroot here)")
    parser.add_argument("--no-cuda", action="store_true")
    parser.add_argument("--per-layer", action="store_true", help="also time each layer's forward alone")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, sort_keys=True))
    print_table(result)


if __name__ == "__main__":
    main()

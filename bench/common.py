"""Helpers shared by the benchmarks: sample photos, measured subprocesses, the real-Caffe chroot, tables.

Peak memory is the child's own ``ru_maxrss`` from ``os.wait4`` (Linux reports kB): the largest
resident set of that process and of the descendants it waited for, so a command run through
``scripts/caffe-env`` (bash -> unshare -> chroot -> python3) reports its Python process.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CAFFE_ENV = REPO / "scripts" / "caffe-env"
PHOTOS = REPO / "out" / "bench-photos"


def ensure_photos(count, folder=PHOTOS):
    """``folder`` with ``count`` real photos (scripts/fetch-sample-images.sh) and its list.txt."""
    folder = Path(folder)
    listing = folder / "list.txt"
    if not listing.exists() or len(listing.read_text().splitlines()) < count:
        subprocess.run(["bash", str(REPO / "scripts" / "fetch-sample-images.sh"), str(folder), str(count)],
                       check=True, stdout=subprocess.DEVNULL)
    return folder


def photo_list(images):
    """A list file (absolute paths) of ``images`` of the benchmark photos, repeated when there are fewer."""
    folder = ensure_photos(160)
    names = sorted(p for p in os.listdir(folder) if p.endswith(".jpg"))
    path = folder / ("profile_%d.txt" % images)
    path.write_text("".join("%s %d\n" % (folder / names[i % len(names)], i % 10) for i in range(images)))
    return path


def write_list(folder, name, lines):
    """Write ``lines`` (``"file label"``) to ``folder/name``; returns the path."""
    path = Path(folder) / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def split_photos(folder, first, rest):
    """Two disjoint list files of ``folder/list.txt``: its first ``first`` lines and the next ``rest``."""
    lines = (Path(folder) / "list.txt").read_text().splitlines()
    if len(lines) < first + rest:
        raise SystemExit("%s has %d photos, need %d" % (folder, len(lines), first + rest))
    return (write_list(folder, "first%d.txt" % first, lines[:first]),
            write_list(folder, "next%d.txt" % rest, lines[first:first + rest]))


def chroot_path(path):
    """The path a file of the checkout has inside the real-Caffe chroot (the checkout is /src)."""
    return "/src/" + str(Path(path).resolve().relative_to(REPO))


def chroot_tmp_root():
    """The host path of the real-Caffe chroot's /tmp (a folder both sides see)."""
    root = Path(subprocess.check_output([str(CAFFE_ENV), "path"], text=True).strip()) / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


def chroot_tmp(path):
    """The chroot's path of a host file under the chroot's /tmp (see ``chroot_tmp_root``)."""
    return "/tmp/" + str(Path(path).resolve().relative_to(chroot_tmp_root().resolve()))


def caffe_env_argv(argv):
    """``argv`` run inside the real-Caffe chroot."""
    return [str(CAFFE_ENV), "run"] + [str(a) for a in argv]


def torch_cuda_available():
    """Whether torch sees a CUDA device (False when torch is missing)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def run_measured(argv, env=None, cwd=REPO):
    """Run ``argv``; return ``{"wall_s", "cpu_s", "peak_rss_mb", "rc", "stdout", "stderr"}``.

    Wall time is perf_counter around the whole process (start-up, imports, I/O included); cpu_s is
    the process tree's user + system CPU time, less sensitive to the neighbours' load."""
    began = time.perf_counter()
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd=str(cwd), text=True)
    out, err = _drain(proc)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024.0,
            "rc": proc.returncode, "stdout": out, "stderr": err}


def _drain(proc):
    """Read both pipes to the end without reaping the process (os.wait4 must see it)."""
    import threading

    chunks = {"err": []}
    reader = threading.Thread(target=lambda: chunks["err"].append(proc.stderr.read()))
    reader.start()
    out = proc.stdout.read()
    reader.join()
    return out, "".join(chunks["err"])


def last_json_line(text):
    """The last line of ``text`` that parses as a JSON object (None when there is none)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def step_seconds(log_text):
    """``{step: seconds}`` from magic_init's "<Step> done in X s" log lines (CLI with -v)."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"(\w+) done in ([0-9.]+) s", log_text)}


def load_average():
    """The 1-minute load average (os.getloadavg), as a note on how busy the machine was."""
    return os.getloadavg()[0]


def machine():
    """A one-line description of the machine: CPU model, cores, memory, Python."""
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return "%s, %d cores, %.0f GiB RAM, Python %s" % (model, os.cpu_count(), mem, sys.version.split()[0])


def markdown_table(headers, rows):
    """GitHub markdown table."""
    lines = ["| " + " | ".join(str(c) for c in row) + " |" for row in [headers] + list(rows)]
    lines.insert(1, "|" + "---|" * len(headers))
    return "\n".join(lines)


def format_table(headers, rows):
    """Plain-text table, columns padded to their widest cell."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

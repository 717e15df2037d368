"""CLI fuzz test (issue 10): random option combinations and corrupted inputs, in process.

Every run must either succeed with a finite model whose affine layers are not all zero, or fail
with one ``magic_init: error: ...`` line (exit 1) or a click usage error (exit 2), never with an
internal error or a traceback; and no input file may change. The case count and seed come from
MAGIC_INIT_FUZZ_CASES (default 200) and MAGIC_INIT_FUZZ_SEED (default 0); a failure prints each
failing command line so that it can be rerun by hand.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from magic_init.cli import main  # noqa: E402
from magic_init.io import read_caffemodel, read_prototxt, write_caffemodel  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny.prototxt"
PHOTOS = REPO / "examples" / "images"
CASES = int(os.environ.get("MAGIC_INIT_FUZZ_CASES", "200"))
SEED = int(os.environ.get("MAGIC_INIT_FUZZ_SEED", "0"))
AFFINE = ("conv1", "conv2", "fc3", "fc4")

OPTIONS = {
    "--init": ["gaussian", "pca", "zca", "kmeans", "rand", "bogus"],
    "--beta": ["0.1", "0", "-0.5", "nan", "inf", "abc"],
    "--alpha": ["0.25", "1", "0", "2", "nan"],
    "--tol": ["0.01", "0", "-1", "inf"],
    "--max-iter": ["0", "1", "3", "-1"],
    "--rounds": ["1", "2", "0"],
    "--seed": ["0", "7", "-1", str(2 ** 40)],
    "--batch-size": ["1", "2", "3", "0"],
    "--num-images": ["1", "2", "3", "0"],
    "--size": ["16", "20,24", "0", "x"],
    "--mean": ["1,2,3", "0", "nan,0,0", "a,b"],
    "--scale": ["0.5", "1", "nan"],
    "--zero-from": ["conv2", "fc4", "nope"],
    "--whitening-eps": ["0.001", "1", "0", "nan"],
    "--device": ["cpu", "gpu", "cuda:x"],
    "--memory-limit": ["16", "64", "1"],
}
FLAGS = ["--no-between-layer", "--no-within-layer", "--zero-all", "--fast", "--data-driven-fc",
         "--no-rate-dropout", "--no-stats-dropout", "-q", "-v"]


def corrupt(data: bytes, rng: random.Random) -> bytes:
    """Truncate, flip bytes, delete a line, or empty ``data``."""
    how = rng.choice(["truncate", "flip", "line", "empty"])
    if how == "truncate":
        return data[:rng.randrange(len(data))]
    if how == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if how == "line":
        lines = data.split(b"\n")
        del lines[rng.randrange(len(lines))]
        return b"\n".join(lines)
    return b""


def make_inputs(folder: Path, rng: random.Random):
    """Good and bad prototxts, models, image lists and images in ``folder``; returns their paths."""
    folder.mkdir()
    net = read_prototxt(str(TINY))
    shapes = {"conv1": [(16, 3, 5, 5), (16,)], "conv2": [(32, 16, 5, 5), (32,)], "fc3": [(64, 2048), (64,)],
              "fc4": [(10, 64), (10,)]}
    weights = {k: [np.random.default_rng(1).standard_normal(s).astype(np.float32) * 0.05 for s in v]
               for k, v in shapes.items()}
    good_model = folder / "good.caffemodel"
    write_caffemodel(str(good_model), net, weights)
    partial = folder / "partial.caffemodel"
    write_caffemodel(str(partial), net, {k: v for k, v in weights.items() if k != "fc4"})
    nan = folder / "nan.caffemodel"
    poisoned = {k: [a.copy() for a in v] for k, v in weights.items()}
    poisoned["fc3"][0][0, 0] = np.nan
    write_caffemodel(str(nan), net, poisoned)
    photos = sorted(str(p) for p in PHOTOS.glob("*.jpg"))[:4]
    bad_image = folder / "bad.jpg"
    bad_image.write_bytes(corrupt(Path(photos[0]).read_bytes(), rng))
    inputs = {"prototxt": [TINY], "model": [good_model, partial, nan], "list": []}
    for i in range(3):
        broken = folder / ("broken%d.prototxt" % i)
        broken.write_bytes(corrupt(TINY.read_bytes(), rng))
        inputs["prototxt"].append(broken)
        model = folder / ("broken%d.caffemodel" % i)
        model.write_bytes(corrupt(good_model.read_bytes(), rng))
        inputs["model"].append(model)
    lists = {"good": photos, "missing": photos[:2] + [str(folder / "missing.jpg")],
             "bad_image": photos[:2] + [str(bad_image)], "empty": [], "garbage": ["\x00\x01 x y z"]}
    for name, paths in lists.items():
        listing = folder / ("%s.txt" % name)
        listing.write_text("".join("%s 0\n" % p for p in paths))
        inputs["list"].append(listing)
    return inputs


def random_case(rng: random.Random, inputs, out: Path):
    """One command line: mostly valid values, some invalid, a few corrupted inputs."""
    command = ["stats"] if rng.random() < 0.15 else []
    prototxt = TINY if rng.random() < 0.7 else rng.choice(inputs["prototxt"])
    listing = inputs["list"][0] if rng.random() < 0.7 else rng.choice(inputs["list"])
    args = command + [str(prototxt)] + ([] if command else [str(out)])
    args += ["--data", str(listing), "--backend", "torch"]
    if rng.random() < 0.3:
        args += ["--load", str(rng.choice(inputs["model"]))]
    for option in rng.sample(sorted(OPTIONS), rng.randint(0, 4)):
        if command and option in ("--init", "--beta", "--alpha", "--tol", "--max-iter", "--rounds", "--zero-from",
                                  "--whitening-eps", "--memory-limit"):
            continue
        values = OPTIONS[option]
        args += [option, values[0] if rng.random() < 0.5 else rng.choice(values)]
    if not command:
        args += rng.sample(FLAGS, rng.randint(0, 2))
    if "--num-images" not in args:
        args += ["--num-images", "2"]
    return args


def digest(folder: Path):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def run(args):
    """(exit code, stderr) of ``magic_init ARGS`` run in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        try:
            main(args)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            for handler in list(root.handlers):
                root.removeHandler(handler)
    return code, err.getvalue()


def check_outcome(code, stderr, out: Path, loaded_zero=()):
    """None when the run kept the promises, else what it broke."""
    if "Traceback" in stderr:
        return "traceback"
    if code == 0:
        if not out.exists():
            return None if "stats" in stderr or not stderr else None
        weights = read_caffemodel(str(out)).weights
        for name in AFFINE:
            if not all(np.isfinite(a).all() for a in weights.get(name, [])):
                return "non-finite weights in %s" % name
            if name in weights and not np.any(weights[name][0]) and name not in loaded_zero:
                return "all-zero weights in %s" % name
        return None
    if code not in (1, 2):
        return "exit code %s: %s" % (code, stderr.strip().splitlines()[-1:] or "")
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if not (last.startswith("magic_init: error:") or last.startswith("Error:")):
        return "last line is not one error line: %r" % last
    if out.exists():
        return "a failed run wrote %s" % out
    return None


def test_random_commands_succeed_cleanly_or_fail_with_one_line(tmp_path):
    rng = random.Random(SEED)
    inputs = make_inputs(tmp_path / "inputs", rng)
    before = digest(tmp_path / "inputs")
    failures, outcomes = [], {0: 0, 1: 0, 2: 0}
    for case in range(CASES):
        out = tmp_path / ("out%d.caffemodel" % case)
        args = random_case(rng, inputs, out)
        code, stderr = run(args)
        outcomes[code] = outcomes.get(code, 0) + 1
        problem = check_outcome(code, stderr, out)
        if problem:
            failures.append("magic_init %s\n    -> %s" % (" ".join(args), problem))
        if out.exists():
            out.unlink()
    print("\n%d cases: %s (exit code: count)" % (CASES, outcomes))
    assert digest(tmp_path / "inputs") == before, "an input file changed"
    assert not failures, "\n".join(failures[:20])
    assert outcomes[0] >= CASES // 10 and outcomes[1] + outcomes[2] >= CASES // 10   # both kinds exercised

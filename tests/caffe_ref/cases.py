"""Conformance cases: small nets that real Caffe runs to produce reference values.

A case names a net (prototxt text, or a path under models/), the phase, the input shapes (they
replace the shapes of the net's Input layers), how to fill each input, and a seed. The generator
(``generate.py``, run inside the Caffe chroot) turns each case into ``<name>.npz``; host tests load
the same inputs and parameters into our engine, so nothing depends on matching random generators.

This module is imported on both sides (Python 3.9 + numpy 1.19 in the chroot, the host's Python
3.11): plain data only, no torch, no caffe.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict, namedtuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

Case = namedtuple("Case", "name net phase inputs fill seed force_backward backward skip_diff zero_params")
Case.__doc__ = """One reference computation.

name: file stem of the .npz.  net: prototxt text, or 'models/<x>.prototxt'.
phase: 'test' | 'train'.  inputs: {input blob: shape} (replaces the Input layers' shapes).
fill: {input blob: 'gaussian' | 'positive' | 'uniform' | 'labels:K'}, gaussian when absent.
force_backward: set NetParameter.force_backward (deploy nets have no loss, so Caffe's backward
  would otherwise skip every layer).  backward: run the backward pass at all.
skip_diff: blobs whose diffs Caffe does not compute here (left at 0 by Caffe, unspecified for us).
zero_params: layers whose parameter blobs are all zero (as in a fresh net: BatchNorm before any
  statistics exist), instead of values.param_values.
"""

CASES = OrderedDict()


def add_case(name, net, inputs, phase="test", fill=None, seed=0, force_backward=True,
             backward=True, skip_diff=(), zero_params=()):
    """Register a case; the seed defaults to a stable hash of its name."""
    if name in CASES:
        raise ValueError("duplicate case %s" % name)
    if not seed:
        seed = int(hashlib.sha1(name.encode()).hexdigest()[:7], 16)
    CASES[name] = Case(name, net, phase, OrderedDict(inputs), dict(fill or {}), seed,
                       force_backward, backward, tuple(skip_diff), tuple(zero_params))


def input_layer(shapes):
    """Prototxt text of one Input layer named 'input' with a top per (name, shape)."""
    tops = "".join('  top: "%s"\n' % name for name, _ in shapes)
    dims = "".join("    shape { %s }\n" % " ".join("dim: %d" % d for d in shape) for _, shape in shapes)
    return 'layer {\n  name: "input"\n  type: "Input"\n%s  input_param {\n%s  }\n}\n' % (tops, dims)


def layer(name, type_, bottoms, tops, body=""):
    """Prototxt text of one layer; body is the inside of the layer (params, rules)."""
    lines = ['layer {', '  name: "%s"' % name, '  type: "%s"' % type_]
    lines += ['  bottom: "%s"' % b for b in bottoms]
    lines += ['  top: "%s"' % t for t in tops]
    if body:
        lines.append("  " + body)
    return "\n".join(lines) + "\n}\n"


def single_layer_case(name, type_, body, shapes, n_tops=1, **kw):
    """A net of an Input layer and one layer of `type_` reading every input blob."""
    names = [s[0] for s in shapes]
    tops = ["y"] if n_tops == 1 else ["y%d" % i for i in range(n_tops)]
    text = input_layer(shapes) + layer(name, type_, names, tops, body)
    add_case(name, text, shapes, **kw)


def case_file_text(case):
    """The prototxt text a case refers to (models/ paths are read relative to the checkout)."""
    if case.net.endswith(".prototxt") and "\n" not in case.net:
        with open(os.path.join(REPO, case.net)) as f:
            return f.read()
    return case.net


def cases_digest(cases):
    """Hash of everything a reference depends on: case definitions, model texts, generator code."""
    h = hashlib.sha256()
    for case in cases:
        h.update(json.dumps([case._asdict(), case_file_text(case)], sort_keys=True, default=list).encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for module in ("generate.py", "cases.py", "layer_cases.py", "model_cases.py", "values.py"):
        with open(os.path.join(here, module), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def all_cases():
    """Every registered case (importing the case modules registers them)."""
    from . import layer_cases, model_cases  # noqa: F401  (registration side effect)
    return list(CASES.values())

"""Seeded fuzzing: corrupted caffemodels and prototxts raise MagicInitError subclasses only."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from magic_init.errors import MagicInitError
from magic_init.io import parse_prototxt, read_caffemodel, read_prototxt, write_caffemodel

DATA = Path(__file__).parent / "data"
PROTOTXTS = sorted(DATA.glob("*.prototxt"))


def model_bytes(tmp_path):
    net = read_prototxt(DATA / "current_with_input_and_bn.prototxt")
    rng = np.random.RandomState(0)
    weights = {"conv1": [rng.randn(4, 3, 3, 3), rng.randn(4)], "bn1": [rng.randn(4)] * 3,
               "scale1": [rng.randn(4), rng.randn(4)]}
    write_caffemodel(tmp_path / "m.caffemodel", net, weights)
    return (tmp_path / "m.caffemodel").read_bytes()


def mutate_bytes(data: bytes, rnd: random.Random) -> bytes:
    data = bytearray(data)
    kind = rnd.randrange(4)
    if kind == 0:  # truncate
        return bytes(data[:rnd.randrange(len(data))])
    if kind == 1:  # flip bits
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    elif kind == 2:  # random bytes
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
    else:  # delete or duplicate a slice
        i, j = sorted(rnd.randrange(len(data)) for _ in range(2))
        data[i:j] = data[i:j] * rnd.randrange(3)
    return bytes(data)


def test_corrupted_caffemodels_raise_only_our_errors(tmp_path):
    original = model_bytes(tmp_path)
    rnd = random.Random(1234)
    path = tmp_path / "fuzz.caffemodel"
    outcomes = {"error": 0, "read": 0}
    for _ in range(400):
        path.write_bytes(mutate_bytes(original, rnd))
        try:
            model = read_caffemodel(path)
        except MagicInitError as error:
            assert "\n" not in str(error) and "fuzz.caffemodel" in str(error)
            outcomes["error"] += 1
        else:
            assert all(a.dtype == np.float32 for arrays in model.weights.values() for a in arrays)
            outcomes["read"] += 1
    assert outcomes["error"] > 100  # the corruption was mostly detected, not silently accepted


PROTOTXT_EDITS = ["{", "}", ":", '"', "layer", " 1e999 ", "-", "\x00", "é", "#", "\n", "input_dim: 5"]


def mutate_text(text: str, rnd: random.Random) -> str:
    i = rnd.randrange(len(text))
    kind = rnd.randrange(3)
    if kind == 0:
        return text[:i] + rnd.choice(PROTOTXT_EDITS) + text[i:]
    if kind == 1:
        return text[:i] + text[i + rnd.randint(1, 20):]
    return text[:i]


@pytest.mark.parametrize("source", PROTOTXTS, ids=[p.stem for p in PROTOTXTS])
def test_edited_prototxts_raise_only_our_errors(source):
    text = source.read_text()
    rnd = random.Random(source.stem)
    for _ in range(150):
        try:
            parse_prototxt(mutate_text(text, rnd), "edited.prototxt")
        except MagicInitError as error:
            assert "\n" not in str(error) and str(error).startswith("edited.prototxt")

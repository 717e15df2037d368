"""The real-nets corpus at a small size (bench/realnets.py --small): every net does what EXPECTED says.

A net expected to run must run end to end on the built-in engine and its written model must load
and run forward in real Caffe, with finite outputs; a net expected to be unsupported must fail
within 10 s with one line (no traceback) naming a layer and its type. Every net with a softmax
head starts training from a sane output: its loss under uniform labels is within 2x ln(classes).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import realnets as corpus  # noqa: E402


def test_every_corpus_net_has_a_small_size_or_is_expected_to_fail(realnets):
    for path in corpus.corpus(realnets):
        assert path.stem in corpus.SMALL_SIZE or corpus.EXPECTED.get(path.stem) == corpus.UNSUPPORTED, path.stem


@pytest.mark.slow
def test_corpus_at_a_small_size(caffe_env, realnets, tmp_path):
    report = corpus.main(["--corpus", str(realnets), "--small", "--num-images", "2", "--batch-size", "2",
                          "--json", str(tmp_path / "realnets.json")])
    records = {r["net"]: r for r in report["nets"]}
    assert len(records) == len(corpus.corpus(realnets)) >= 26
    wrong = {name: (r["outcome"], r["last_line"] or r.get("caffe_error")) for name, r in records.items()
             if r["outcome"] != r["expected"]}
    assert not wrong
    for name, r in records.items():
        assert not r["traceback"], name
        if r["expected"] == corpus.UNSUPPORTED:
            assert r["wall_s"] < 10, (name, r["wall_s"])
            assert re.match(r"magic_init: error: layer '[^']+': type '[^']+' ", r["last_line"]), r["last_line"]
        else:
            assert r["loads"] and r["finite"], (name, r.get("caffe_error"))
            ratio = corpus.loss_ratio(r)     # the output is sane for training: loss within 2x ln(classes)
            assert ratio is None or ratio < 2, (name, r["start_loss"])
    assert sum(corpus.loss_ratio(r) is not None for r in records.values()) >= 15

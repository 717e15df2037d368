"""The case definitions and seeded values the conformance references are built from (no Caffe)."""
from __future__ import annotations

import numpy as np
from google.protobuf import text_format

from caffe_ref import cases as cases_module
from caffe_ref.cases import Case, all_cases, case_file_text, cases_digest
from caffe_ref.values import fingerprint, input_values, param_values
from magic_init.proto import caffe_pb2


def test_every_case_parses_and_declares_its_input_blobs():
    for case in all_cases():
        net = caffe_pb2.NetParameter()
        text_format.Merge(case_file_text(case), net)
        declared = {t for layer in net.layer if layer.type == "Input" for t in layer.top} | set(net.input)
        assert set(case.inputs) <= declared, case.name


def test_digest_follows_case_definitions():
    some = all_cases()[:3]
    changed = [some[0]._replace(seed=some[0].seed + 1)] + some[1:]
    assert cases_digest(some) == cases_digest(list(some))
    assert cases_digest(changed) != cases_digest(some)


def test_param_values_are_seeded_and_he_scaled():
    a = param_values(7, "conv", "Convolution", 0, (64, 32, 3, 3))
    assert np.array_equal(a, param_values(7, "conv", "Convolution", 0, (64, 32, 3, 3)))
    assert not np.array_equal(a, param_values(8, "conv", "Convolution", 0, (64, 32, 3, 3)))
    he_std = np.sqrt(2.0 / (32 * 3 * 3))  # fan_in = C_in * kh * kw
    assert abs(a.std() / he_std - 1) < 0.03  # 18432 samples: the std's own error is ~0.5%
    bn = [param_values(7, "bn", "BatchNorm", k, (5,) if k < 2 else (1,)) for k in range(3)]
    assert bn[2][0] > 0 and np.all(bn[1] > 0)


def test_fingerprint_distinguishes_one_ulp():
    x = np.ones(10, np.float32)
    y = x.copy()
    y[3] = np.nextafter(np.float32(1), np.float32(2))
    assert str(fingerprint(x)) == str(fingerprint(x.copy())) and str(fingerprint(x)) != str(fingerprint(y))


def test_label_inputs_are_integers_in_range():
    labels = input_values(np.random.RandomState(0), "labels:5", (100,))
    assert labels.dtype == np.float32 and set(np.unique(labels)) <= set(range(5))


def test_case_names_are_unique_and_registered_once():
    names = [c.name for c in all_cases()]
    assert len(names) == len(set(names)) == len(cases_module.CASES)
    assert all(isinstance(c, Case) for c in all_cases())

"""bench/train_few_labels.py's suite: nets, prototxts, schedules, arms, verdict (no training here),
and the benchmark nets against real Caffe (they load, train and deploy prototxts agree)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import train_few_labels as tfl  # noqa: E402

from magic_init.io import read_prototxt  # noqa: E402

AFFINE = ("Convolution", "InnerProduct")


def fake_work(tmp_path):
    work = tfl.Work.__new__(tfl.Work)  # no chroot needed
    work.host, work.inside = tmp_path, "/tmp/fb"
    return work


def affine_layers(path):
    return [(l.name, l.type) for l in read_prototxt(str(path)).layer if l.type in AFFINE]


@pytest.mark.parametrize("net", sorted(tfl.NETS))
def test_train_and_deploy_nets_have_the_same_affine_layers(net):
    train, deploy = affine_layers(tfl.model_file(net, "train")), affine_layers(tfl.model_file(net, "deploy"))
    assert train == deploy and len(train) >= 4


def test_the_suite_has_a_deep_net_without_lrn_and_a_caffenet_with_lrn_and_dropout():
    types = {net: [l.type for l in read_prototxt(str(tfl.model_file(net, "deploy"))).layer] for net in tfl.NETS}
    assert types["vgg"].count("Convolution") >= 8 and "LRN" not in types["vgg"]
    assert types["caffenet"].count("LRN") == 2 and types["caffenet"].count("Dropout") == 2
    groups = [l.convolution_param.group for l in read_prototxt(str(tfl.model_file("caffenet", "deploy"))).layer
              if l.type == "Convolution"]
    assert groups == [1, 2, 1, 2, 2]


@pytest.mark.parametrize("net", sorted(tfl.NETS))
def test_train_prototxt_puts_the_filler_on_every_affine_layer(tmp_path, net):
    path = tfl.train_prototxt(fake_work(tmp_path), "xavier", net)
    parsed = read_prototxt(str(path))
    fillers = [(l.convolution_param if l.type == "Convolution" else l.inner_product_param).weight_filler.type
               for l in parsed.layer if l.type in AFFINE]
    assert fillers == ["xavier"] * len(affine_layers(tfl.model_file(net, "train")))
    sources = [l.image_data_param.source for l in parsed.layer if l.type == "ImageData"]
    assert sources == ["/tmp/fb/train.txt", "/tmp/fb/test.txt"]


def test_long_schedule_solver_steps_the_learning_rate(tmp_path):
    s = tfl.SCHEDULES["long"]
    text = tfl.solver_prototxt(fake_work(tmp_path), tmp_path / "n.prototxt", 3, s.iters, "t", s.base_lr,
                               s.stepsize).read_text()
    for line in ('lr_policy: "step"', "gamma: 0.1", "stepsize: %d" % s.stepsize, "max_iter: %d" % s.iters,
                 "base_lr: %g" % s.base_lr, "random_seed: 3"):
        assert line in text
    assert 'lr_policy: "fixed"' not in text


def test_variant_arms_are_cached_under_their_options(tmp_path):
    maker = tfl.InitMaker(fake_work(tmp_path), None, variants=tfl.parse_variants(["a=--init kmeans", "b=--init pca"]))
    paths = {maker.path("small", arm, True, 0) for arm in ("ours-a", "ours-b", "ours-kmeans")}
    assert len(paths) == 3
    assert maker.path("vgg", "orig-kmeans", True, 2).name == "orig-kmeans+alg2_s2.caffemodel"
    with pytest.raises(SystemExit):
        tfl.parse_variants(["no-options"])


def row(init, alg2, mean, std):
    return {"init": init, "alg2": alg2, "final_mean": mean, "final_std": std}


def test_verdict_compares_the_default_with_the_best_filler_and_original():
    rows = [row("caffe-msra", False, 0.80, 0.01), row("caffe-xavier", False, 0.82, 0.01),
            row("orig-kmeans", True, 0.83, 0.005), row("orig-elwise", True, 0.81, 0.01),
            row("ours-kmeans", True, 0.835, 0.01)]
    judged = tfl.verdict(rows, ("ours-kmeans", True))
    assert judged["filler"]["best"] == "caffe-xavier" and judged["filler"]["outcome"] == "ahead"
    assert judged["original"]["best"] == "orig-kmeans+alg2"
    assert judged["original"]["outcome"] == "within seed spread"      # +0.005 <= max std 0.01
    rows[-1] = row("ours-kmeans", True, 0.70, 0.01)
    assert tfl.verdict(rows, ("ours-kmeans", True))["original"]["outcome"] == "behind"
    assert tfl.verdict(rows) == {}                          # the default arm (ours-gaussian) has no row

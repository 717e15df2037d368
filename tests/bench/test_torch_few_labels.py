"""bench/torch_few_labels.py: its CaffeNet is the Caffe suite's net, its arms and its verdict."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import torch_few_labels as bench  # noqa: E402

from magic_init.engine import Net  # noqa: E402


def test_its_caffenet_is_the_caffe_suites_deploy_net_layer_for_layer():
    """The same weights give the same outputs on the engine (the prototxt) and in PyTorch."""
    net = Net(str(REPO / "models" / "fashion_caffenet_deploy.prototxt"), input_shapes={"data": (4, 1, 28, 28)}, seed=0)
    model = bench.caffenet().eval()
    with torch.no_grad():
        for name, blobs in net.params.items():
            module = getattr(model, name)
            module.weight.copy_(torch.from_numpy(blobs[0].data.reshape(module.weight.shape)))
            module.bias.copy_(torch.from_numpy(blobs[1].data))
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    net.blobs["data"].data[...] = x
    expected = net.forward()["fc8"]
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(x)).numpy(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("net", bench.NETS)
@pytest.mark.parametrize("arm", [a for a in bench.ARMS if a != "lsuv"])
def test_every_arm_initializes_every_net_to_finite_outputs(net, arm):
    sample = np.random.default_rng(1).random((24, 1, 28, 28), dtype=np.float32)
    model, seconds = bench.init_model(net, arm, 0, sample)
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(sample))
    assert out.shape == (24, 10) and bool(torch.isfinite(out).all()) and seconds >= 0


def test_the_verdict_needs_a_margin_larger_than_the_seed_spread():
    def row(arm, mean, std):
        return {"net": "n", "arm": arm, "final_mean": mean, "final_std": std}
    close = bench.verdict([row("ours-kmeans+alg2", 0.80, 0.01), row("kaiming", 0.79, 0.02)])
    clear = bench.verdict([row("ours-kmeans+alg2", 0.85, 0.01), row("kaiming", 0.79, 0.02)])
    assert not close["n"]["beats_by_more_than_spread"] and clear["n"]["beats_by_more_than_spread"]
    assert clear["n"]["best_other"] == "kaiming"


def test_a_diverged_run_scores_chance():
    assert bench.mean_std([None, 0.5]) == (pytest.approx(0.3), pytest.approx(0.2))


def test_the_resnet_head_arms_change_one_thing_after_our_gaussian_init():
    """bench/torch_resnet_head.py: ``+kaiming-fc`` redraws only the classifier, ``+zero-bias`` only the biases."""
    import torch_resnet_head as head

    sample = np.random.default_rng(1).random((24, 1, 28, 28), dtype=np.float32)
    ours = head.initialized("ours-gaussian", 0, sample).state_dict()
    redrawn = head.initialized("ours-gaussian+kaiming-fc", 0, sample).state_dict()
    unbiased = head.initialized("ours-gaussian+zero-bias", 0, sample).state_dict()
    for name, value in ours.items():
        assert torch.equal(redrawn[name], value) == (not name.startswith("fc.")), name
        assert torch.equal(unbiased[name], value) == (not name.endswith("bias") or not value.any()), name
    assert not redrawn["fc.bias"].any() and not any(v.any() for n, v in unbiased.items() if n.endswith("bias"))
    with pytest.raises(ValueError, match="unknown change"):
        head.initialized("ours-gaussian+nothing", 0, sample)

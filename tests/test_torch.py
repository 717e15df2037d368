"""magic_init.torch: initialize, rescale and measure nn.Modules; the same answer as the Caffe path."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from google.protobuf import text_format  # noqa: E402
from torch import nn  # noqa: E402

import magic_init.torch as mt  # noqa: E402
from magic_init import algorithm  # noqa: E402
from magic_init.engine import Net  # noqa: E402
from magic_init.errors import MagicInitError  # noqa: E402
from magic_init.proto import caffe_pb2  # noqa: E402

#: A CaffeNet-style net (conv, ReLU, max pooling, LRN, inner products, dropout) as Caffe writes it ...
CAFFE_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 16 kernel_size: 5 stride: 2 pad: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 24 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "norm2" type: "LRN" bottom: "conv2" top: "norm2" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "fc6" type: "InnerProduct" bottom: "norm2" top: "fc6" inner_product_param { num_output: 32 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param { num_output: 10 } }
"""


class CaffeNetStyle(nn.Module):
    """... and as an nn.Module, layer for layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 5, stride=2, padding=2)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(16, 24, 3, padding=1, groups=2)
        self.relu2 = nn.ReLU()
        self.norm2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.fc6 = nn.Linear(24 * 8 * 8, 32)
        self.relu6 = nn.ReLU()
        self.drop6 = nn.Dropout(0.5)
        self.fc7 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.norm2(self.relu2(self.conv2(self.pool1(self.relu1(self.conv1(x))))))
        return self.fc7(self.drop6(self.relu6(self.fc6(x.view(x.size(0), -1)))))


class Residual(nn.Module):
    """conv -> BN -> ReLU, two residual blocks, global pooling, linear."""

    def __init__(self, channels=8):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))
            for _ in range(2))
        self.fc = nn.Linear(channels, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        for block in self.blocks:
            x = torch.relu(x + block(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _images(n=24, size=32, seed=0):
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


def _caffe_net():
    return Net(text_format.Parse(CAFFE_NET, caffe_pb2.NetParameter()), seed=0)


def _copy_caffe_weights(net, model):
    with torch.no_grad():
        for name, blobs in net.params.items():
            module = getattr(model, name)
            module.weight.copy_(torch.from_numpy(blobs[0].data.reshape(module.weight.shape)))
            module.bias.copy_(torch.from_numpy(blobs[1].data))


@pytest.mark.parametrize("init", ["gaussian", "kmeans"])
def test_caffe_and_pytorch_paths_give_the_same_weights(init):
    """The same net on the built-in engine and as an nn.Module, same sample, same seed: Algorithms
    1 and 2 give the same weights within 1e-4 relative."""
    images = _images()
    net = _caffe_net()
    model = CaffeNetStyle()
    _copy_caffe_weights(net, model)
    model.eval()
    with torch.no_grad():                      # the two nets compute the same function to start with
        net.blobs["data"].data[...] = images[:8]
        np.testing.assert_allclose(model(torch.from_numpy(images[:8])).numpy(), net.forward()["fc7"],
                                   rtol=1e-4, atol=1e-5)
    caffe_report = algorithm.initialize(net, images, init=init, seed=3, batch_size=8)
    torch_report = mt.initialize(model, torch.from_numpy(images), init=init, seed=3, batch_size=8)
    for name, blobs in net.params.items():
        module = getattr(model, name)
        for blob, tensor in zip(blobs, (module.weight, module.bias)):
            caffe_value = blob.data.reshape(tuple(tensor.shape))
            error = np.abs(tensor.detach().numpy() - caffe_value).max() / np.abs(caffe_value).max()
            assert error < 1e-4, (name, error)
    assert torch_report["BetweenLayer"]["iterations"] == caffe_report["BetweenLayer"]["iterations"]


def test_rescale_keeps_the_function_up_to_one_positive_factor():
    """A trained-looking residual BN net rescaled: its outputs are the old ones times one factor."""
    torch.manual_seed(0)
    model = Residual()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.blocks[1][2].weight.mul_(10.0)           # one layer x10: its change rate is off
    images = torch.from_numpy(_images(40))
    model.eval()
    before = model(images).detach()
    report = mt.rescale(model, images)
    after = model(images).detach()
    factor = report["BetweenLayer"]["output_scale"]
    assert factor > 0
    error = (after - factor * before).abs().max() / (factor * before).abs().max()
    assert error < 1e-5
    scales = report["BetweenLayer"]["scale"]
    assert "stem" not in scales or np.allclose(scales["stem"], 1.0)    # held: a BatchNorm follows it


def test_initialize_changes_weights_in_place_and_gives_the_model_back():
    model = Residual().train()
    for p in model.parameters():
        p.requires_grad_(True)
    weight = model.stem.weight
    before = weight.detach().clone()
    loader = [(torch.from_numpy(_images(8, seed=k)), torch.zeros(8)) for k in range(3)]
    report = mt.initialize(model, loader, init="gaussian", seed=1)
    assert model.stem.weight is weight and not torch.equal(weight.detach(), before)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert torch.isfinite(weight).all()
    assert [layer["layer"] for layer in report["WithinLayer"]][:2] == ["stem", "blocks.0.0"]


def test_initialized_layers_have_the_target_statistics():
    """Algorithm 1 alone: each initialized layer's output has per-channel mean β and unit std on the sample."""
    model = CaffeNetStyle()
    images = torch.from_numpy(_images(32))
    mt.initialize(model, images, init="kmeans", between_layer=False, beta=0.1, stats_dropout=False)
    model.eval()
    with torch.no_grad():
        conv1 = model.conv1(images)
    mean = conv1.mean(dim=(0, 2, 3))
    std = conv1.transpose(0, 1).reshape(16, -1).std(dim=1)
    np.testing.assert_allclose(mean.numpy(), 0.1, atol=1e-3)
    np.testing.assert_allclose(std.numpy(), 1.0, atol=2e-2)


def test_measure_reports_every_affine_layer_and_changes_nothing():
    model = CaffeNetStyle()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    stats = mt.measure(model, torch.from_numpy(_images(16)))
    assert [layer["layer"] for layer in stats["layers"]] == ["conv1", "conv2", "fc6", "fc7"]
    assert stats["images"] == 16 and stats["summary"]["rate_spread"] > 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_a_failed_run_leaves_the_weights_and_gives_the_model_back():
    model = CaffeNetStyle().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="init"):
        mt.initialize(model, torch.from_numpy(_images(8)), init="nonsense")
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_a_run_that_fails_half_way_restores_the_weights(monkeypatch):
    """Algorithm 1 has written the weights when Algorithm 2 fails: the model gets its old weights back."""
    model = CaffeNetStyle()
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def fail(self, net, runner):
        assert not torch.equal(model.conv1.weight, state["conv1.weight"])      # Algorithm 1 ran, in place
        raise RuntimeError("Algorithm 2 failed")
    monkeypatch.setattr(algorithm.BetweenLayer, "__call__", fail)
    with pytest.raises(RuntimeError, match="Algorithm 2 failed"):
        mt.initialize(model, torch.from_numpy(_images(8)), init="gaussian")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_num_images_stops_an_endless_loader():
    def endless():
        while True:
            yield torch.from_numpy(_images(6)), torch.zeros(6)
    stats = mt.measure(CaffeNetStyle(), endless(), num_images=20)
    assert stats["images"] == 20
    assert [len(b) for b in mt.input_batches(torch.zeros(10, 3, 4, 4), 4, num_images=9)] == [4, 4, 1]


def test_bad_data_is_a_clear_error():
    with pytest.raises(MagicInitError, match="no batch"):
        mt.initialize(CaffeNetStyle(), [])
    with pytest.raises(MagicInitError, match="expected a torch.nn.Module"):
        mt.initialize(object(), torch.zeros(2, 3, 32, 32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_gives_the_cpu_weights():
    """The model on a CUDA device: initialized in place there, the same weights as on the CPU within 1e-4."""
    images = torch.from_numpy(_images())
    on_cpu, on_cuda = CaffeNetStyle(), CaffeNetStyle().cuda()
    mt.initialize(on_cpu, images, init="kmeans", seed=2, batch_size=8)
    mt.initialize(on_cuda, images, init="kmeans", seed=2, batch_size=8)
    assert on_cuda.conv1.weight.is_cuda
    for (name, a), b in zip(on_cpu.state_dict().items(), on_cuda.state_dict().values()):
        error = float((a - b.cpu()).abs().max() / a.abs().max())
        assert error < 1e-4, (name, error)


@pytest.mark.parametrize("build, shape, init", [
    (lambda: nn.Sequential(nn.Conv1d(3, 8, 3, padding=2, dilation=2), nn.ReLU(), nn.Conv1d(8, 6, 3)), (48, 3, 20),
     "kmeans"),
    (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=2, dilation=2), nn.ReLU(),
                           nn.ConvTranspose2d(8, 6, 2, stride=2, groups=2)), (48, 3, 8, 8), "kmeans"),
    (lambda: nn.Sequential(nn.Conv3d(1, 6, 3, padding=1, bias=False), nn.ReLU(), nn.Conv3d(6, 6, 1)), (48, 1, 4, 6, 6),
     "gaussian"),
    (lambda: nn.Sequential(nn.Conv3d(2, 6, 3, padding=1, stride=(1, 2, 2)), nn.ReLU(), nn.Conv3d(6, 6, 1)),
     (24, 2, 4, 6, 6), "kmeans"),
])
def test_algorithm_1_normalizes_conv1d_3d_transposed_and_dilated_layers(build, shape, init):
    """Every affine kind: after Algorithm 1 alone, each output channel has mean β and unit std on the
    sample (the data-driven inits gather patches over any number of spatial axes; a transposed
    convolution falls back to gaussian rows, with a warning)."""
    model = build()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    mt.initialize(model, x, init=init, between_layer=False, beta=0.1, normalize="channel")
    with torch.no_grad():
        out = model(x)
    per_channel = out.transpose(0, 1).reshape(out.shape[1], -1)
    np.testing.assert_allclose(per_channel.mean(1).numpy(), 0.1, atol=2e-3)
    np.testing.assert_allclose(per_channel.std(1).numpy(), 1.0, atol=2e-2)


def _rescale_keeping_the_function(model, images):
    """``mt.rescale``, checked to keep the outputs up to its one positive factor (1e-5 relative).

    Returns:
        (Algorithm 2's report, its ``held`` reasons joined into one string)."""
    with torch.no_grad():
        before = model(images)
    report = mt.rescale(model, images)["BetweenLayer"]
    with torch.no_grad():
        after = model(images)
    factor = report["output_scale"]
    assert float((after - factor * before).abs().max() / (factor * before).abs().max()) < 1e-5
    return report, " ".join(report["held"].values())


def test_a_transformer_block_is_initialized_per_token_channel_and_rescaled_without_changing_it():
    """Linear layers over tokens (N, T, C) get Algorithm 1's statistics per channel of the last axis;
    rescaling holds the layers whose scale reaches LayerNorm, attention or GELU, naming them, and
    keeps the function."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent / "adapters"))
    from test_torch_fx import Tokens

    torch.manual_seed(0)
    images = torch.from_numpy(_images(48, size=16))
    model = Tokens()
    mt.initialize(model, images, init="kmeans", between_layer=False, beta=0.1, normalize="channel")
    with torch.no_grad():
        tokens = model.embed(images).flatten(2).transpose(1, 2)
        h = model.norm(tokens)
        tokens = tokens + model.attention(h, h, h)[0]
        hidden = model.mlp[0](tokens).reshape(-1, 16)
    np.testing.assert_allclose(hidden.mean(0).numpy(), 0.1, atol=2e-3)
    np.testing.assert_allclose(hidden.std(0).numpy(), 1.0, atol=2e-2)

    with torch.no_grad():
        model.mix.weight.mul_(10.0)
    report, held = _rescale_keeping_the_function(model, images)
    assert "'norm' (LayerNorm" in held and "'mlp.1' (GELU" in held
    assert "mix" not in report["held"] and report["scale"]["mix"] < 0.5     # free through the permute: x10 undone


def test_a_mobilenet_style_net_is_initialized_and_rescaled():
    """Depthwise convolutions, BatchNorm, ReLU6, LeakyReLU, Hardswish and adaptive pooling: all three
    entry points run; rescaling keeps the function and names ReLU6 and Hardswish as barriers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6(),
                          nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.LeakyReLU(0.1),
                          nn.Conv2d(16, 32, 1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 10))
    images = torch.from_numpy(_images(32, size=16))
    mt.initialize(model, images, init="kmeans")
    assert len(mt.measure(model, images)) > 0
    _, held = _rescale_keeping_the_function(model.eval(), images)
    assert "(ReLU6," in held and "(Hardswish," in held

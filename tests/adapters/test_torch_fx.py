"""magic_init.adapters.torch_fx: a traced nn.Module run by the engine's core and described for the algorithm."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from magic_init.adapters.torch_fx import TorchNet  # noqa: E402
from magic_init.algorithm import description as d  # noqa: E402
from magic_init.errors import NetDefinitionError  # noqa: E402


class Block(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN, plus the input, -> ReLU (a residual block)."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class Mixed(nn.Module):
    """Every rule once: conv, pooling, BN, residual add, cat, LRN, GELU, flatten, linear, softmax."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.block = Block(8)
        self.side = nn.Conv2d(8, 4, 1, groups=4)
        self.norm = nn.LocalResponseNorm(3)
        self.act = nn.GELU()
        self.fc = nn.Linear(12 * 4 * 4, 10)
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        x = self.block(self.pool(torch.relu(self.stem(x))))
        x = torch.cat([x, self.side(x)], 1)
        x = self.act(self.norm(x))
        return torch.softmax(self.fc(torch.flatten(x, 1)) + self.head(x.mean((2, 3))) + 0.5 * x.sum(1).mean(), dim=1)


class Tokens(nn.Module):
    """A small vision transformer block: patch embedding, tokens (N, T, C), LayerNorm, attention, an MLP
    of Linear layers over the last axis with GELU, and a channels-last map through a Linear."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.norm = nn.LayerNorm(8)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.mix = nn.Linear(8, 6)
        self.head = nn.Linear(6 * 16, 10)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        h = self.norm(tokens)
        tokens = tokens + self.attention(h, h, h)[0]
        tokens = tokens + self.mlp(tokens)
        grid = tokens.reshape(-1, 4, 4, 8)                      # channels last
        return self.head(torch.relu(self.mix(grid)).permute(0, 3, 1, 2).flatten(1))


def _randomize(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if tensor.dtype.is_floating_point:
                values = torch.rand(tensor.shape, generator=generator) + 0.5 if "var" in name \
                    else torch.randn(tensor.shape, generator=generator) * 0.3
                tensor.copy_(values)
    return model


def _x(n=4, size=16, seed=1):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32))


def test_each_op_gets_its_scale_rule():
    net = TorchNet(_randomize(Mixed()), _x())
    rules = {op.name: (op.rule, op.affine.kind if op.affine else None) for op in net.description.ops}
    assert rules["stem"] == (d.AFFINE, d.CONV) and rules["fc"] == (d.AFFINE, d.LINEAR)
    assert rules["pool"][0] == d.PASSES and rules["relu"][0] == d.PASSES
    assert rules["block.bn1/normalize"][0] == d.BLOCKS and rules["block.bn1"] == (d.AFFINE, d.DIAGONAL)
    assert rules["add"][0] == d.TIES and rules["cat"][0] == d.CONCATENATES
    assert rules["norm"][0] == d.APPROX and rules["act"][0] == d.BLOCKS
    assert rules["flatten"][0] == d.RESHAPES and rules["softmax"][0] == d.STRIPS
    assert rules["mean"][0] == d.PASSES                          # global average pooling: x.mean((2, 3))
    assert rules["sum_1"][0] == d.BLOCKS and rules["mean_1"][0] == d.BLOCKS      # over the channels, everything
    assert rules["add_1"][0] == d.TIES and rules["add_2"][0] == d.BLOCKS        # + a tensor of another shape
    assert net.description.op("act").why == d.NOT_HOMOGENEOUS
    assert net.description.affine("side").groups == 4
    assert net.description.affine("stem").window().stride == (2, 2)
    assert net.description.last_compute_layer() == net.layer_names.index("softmax") - 1
    net.close()


def test_linear_over_the_last_axis_is_a_1x1_convolution_between_two_moves():
    """A Linear on (N, ..., C) is described on channels-first blobs (the algorithm's channel axis is 1),
    and transposes, permutes and reshapes across the batch axis pass one common factor."""
    net = TorchNet(_randomize(Tokens()), _x())
    description = net.description
    for name in ("mlp.0", "mlp.2", "mix"):
        affine = description.affine(name)
        spatial = len(net.blobs[name + "/channels_first"].shape) - 2
        assert affine.kind == d.CONV and affine.window().kernel == (1,) * spatial
        assert description.op(name + "/channels_first").rule == d.MOVES
        assert description.op(name + "/channels_last").rule == d.MOVES
    assert net.blobs["mlp.0/channels_first_out"].shape == (4, 16, 16)
    assert net.blobs["mix/channels_first_out"].shape == (4, 6, 4, 4)
    assert description.affine("head").kind == d.LINEAR
    assert description.op("transpose").rule == d.MOVES and description.op("permute").rule == d.MOVES
    assert description.op("reshape").rule == d.RESHAPES               # (N, T, C) -> (N, 4, 4, C)
    assert description.op("norm").rule == d.BLOCKS and description.op("attention").rule == d.BLOCKS
    net.close()


@pytest.mark.parametrize("build, output", [(Mixed, "softmax"), (Tokens, "head")])
def test_forward_and_backward_match_the_model_under_autograd(build, output):
    """The net's outputs are the model's; its weight gradients for a loss <η, f(x)> are autograd's."""
    model = _randomize(build()).eval()
    x = _x()
    reference = model(x)
    eta = torch.randn(reference.shape, generator=torch.Generator().manual_seed(5))
    (reference * eta).sum().backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    net = TorchNet(model, x)
    net.blobs["x"].data[...] = x.numpy()
    out = net.forward()
    np.testing.assert_allclose(out[output], reference.detach().numpy(), rtol=1e-5, atol=1e-6)
    net.clear_param_diffs()
    net.backward(**{output: eta.numpy()})
    for layer, names in net.parameter_names.items():
        for blob, name in zip(net.params[layer], names):
            np.testing.assert_allclose(blob.diff, expected[name].numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
    net.close()


def test_parameter_blobs_are_the_module_parameters_and_the_model_is_given_back():
    model = _randomize(Mixed()).train()
    net = TorchNet(model, _x())
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    net.params["stem"][0].data[...] = 2.0
    assert float(model.stem.weight.min()) == 2.0 == float(model.stem.weight.max())
    net.close()
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_reshape_follows_a_new_batch_size():
    net = TorchNet(_randomize(Mixed()), _x(4))
    net.blobs["x"].reshape(7, 3, 16, 16)
    net.reshape()
    assert net.blobs["fc"].shape == (7, 10) and net.blobs["stem"].shape == (7, 8, 8, 8)
    net.close()


def test_a_module_called_twice_shares_its_parameters():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(torch.relu(self.conv(x)))
    net = TorchNet(Twice(), _x())
    second = [name for name in net.layer_names if name not in ("conv", "relu")][0]
    assert net.params[second][0] is net.params["conv"][0]
    assert net.description.shared == {(second, 0): ("conv", 0), (second, 1): ("conv", 1)}
    net.close()


def test_an_untraceable_model_is_one_line_naming_it():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else x
    with pytest.raises(NetDefinitionError, match="torch.fx cannot trace Branchy") as error:
        TorchNet(Branchy(), torch.ones(2, 3))
    assert "\n" not in str(error.value)


def test_a_model_that_fails_on_the_example_is_one_line():
    with pytest.raises(NetDefinitionError, match=r"does not run on the example batch of shape input_1 \(2, 5\): "
                                                 r"node '_0' \(0\): mat1 and mat2 shapes cannot be multiplied") as error:
        TorchNet(nn.Sequential(nn.Linear(3, 3)), torch.ones(2, 5))
    assert "\n" not in str(error.value)

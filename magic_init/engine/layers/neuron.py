"""Element-wise (neuron) layers: ReLU, PReLU, ELU, Sigmoid, TanH, AbsVal, Power, BNLL, Exp, Log,
Threshold, Dropout."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from magic_init.errors import NetDefinitionError

from .base import Layer, register


class _Elementwise(Layer):
    """A layer y = f(x) on a single bottom."""
    same_shape = True

    def forward(self, bottoms, params):
        return [self.f(bottoms[0])]


@register("ReLU")
class ReLU(_Elementwise):
    """y = max(x, 0) + negative_slope * min(x, 0).

    Hand-written backward, torch's own kernels (the ones autograd runs, so the same bits):
    dx = dy where y > 0, else 0, from the top alone (negative_slope 0: in a conv -> ReLU chain the
    conv's output can be freed); with a negative slope dx = dy or slope dy by the sign of x."""

    def setup(self):
        self.slope = self.param.relu_param.negative_slope
        self.backward_reads_bottoms = bool(self.slope)
        self.backward_reads_tops = not self.slope

    def f(self, x):
        return F.leaky_relu(x, self.slope) if self.slope else F.relu(x)

    def backward(self, bottoms, params, tops, saved, top_diffs, need_bottoms, param_diffs):
        if not need_bottoms[0]:
            return [None]
        if self.slope:
            return [torch.ops.aten.leaky_relu_backward(top_diffs[0], bottoms[0], self.slope, False)]
        return [torch.ops.aten.threshold_backward(top_diffs[0], tops[0], 0)]


@register("PReLU")
class PReLU(Layer):
    """y = max(x, 0) + a_c min(x, 0), one learnable a per channel (or one, a 0-d blob as in
    Caffe, if channel_shared); default filler constant 0.25."""

    same_shape = True

    def param_shapes(self, bottom_shapes):
        shared = self.param.prelu_param.channel_shared
        return [() if shared else (bottom_shapes[0][1],)]

    def fillers(self):
        return [self.filler_or_default(self.param.prelu_param, "filler", 0.25)]

    def forward(self, bottoms, params):
        x, a = bottoms[0], params[0]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return [F.relu(x) + a.reshape(shape) * torch.clamp(x, max=0)]


@register("ELU")
class ELU(_Elementwise):
    """y = x if x > 0 else alpha (exp(x) - 1)."""

    def f(self, x):
        return F.elu(x, self.param.elu_param.alpha)


@register("Sigmoid")
class Sigmoid(_Elementwise):
    def f(self, x):
        return torch.sigmoid(x)


@register("TanH")
class TanH(_Elementwise):
    def f(self, x):
        return torch.tanh(x)


@register("AbsVal")
class AbsVal(_Elementwise):
    def f(self, x):
        return torch.abs(x)


@register("BNLL")
class BNLL(_Elementwise):
    """y = log(1 + exp(x)), computed as x + log(1 + exp(-x)) for x > 0."""

    def f(self, x):
        return torch.clamp(x, min=0) + torch.log1p(torch.exp(-torch.abs(x)))


@register("Power")
class Power(_Elementwise):
    """y = (shift + scale x)^power."""

    def f(self, x):
        p = self.param.power_param
        z = x * p.scale + p.shift if p.scale != 1 or p.shift != 0 else x
        return z if p.power == 1 else z.pow(p.power)


@register("Exp")
class Exp(_Elementwise):
    """y = base^(shift + scale x), base -1 meaning e."""

    def f(self, x):
        p = self.param.exp_param
        log_base = 1.0 if p.base == -1 else math.log(p.base)
        return torch.exp((x * p.scale + p.shift) * log_base)


@register("Log")
class Log(_Elementwise):
    """y = log_base(shift + scale x), base -1 meaning e."""

    def f(self, x):
        p = self.param.log_param
        y = torch.log(x * p.scale + p.shift)
        return y if p.base == -1 else y / math.log(p.base)


@register("Threshold")
class Threshold(_Elementwise):
    """y = 1 if x > threshold else 0 (no gradient)."""
    has_backward = False

    def f(self, x):
        return (x > self.param.threshold_param.threshold).to(x.dtype)


@register("Dropout")
class Dropout(_Elementwise):
    """TRAIN: y = x * mask / (1 - p), mask ~ Bernoulli(1 - p); TEST: y = x. Masks come from
    ``generator`` when set (``Net.train_dropout``), else from torch's global generator.

    Hand-written backward: dx = dy * mask / (1 - p) (dx = dy in TEST), with the mask this forward
    drew; the bits autograd gives (a product with a 0/1 mask is exact)."""

    generator = None
    backward_reads_bottoms = False
    backward_reads_tops = False

    def setup(self):
        self.ratio = self.param.dropout_param.dropout_ratio
        if not 0 <= self.ratio < 1:
            raise NetDefinitionError("%s: dropout_ratio must be in [0, 1)" % self.where())

    def f(self, x):
        return self.forward_for_backward([x], [])[0][0]

    def forward_for_backward(self, bottoms, params):
        """Tops, and saved: the mask as floats (None in TEST phase or with p = 0: y = x)."""
        x = bottoms[0]
        if self.phase != "train" or self.ratio == 0:
            return [x], None
        keep = (torch.rand(x.shape, device=x.device, generator=self.generator) >= self.ratio).to(x.dtype)
        return [x * keep * (1.0 / (1.0 - self.ratio))], keep

    def backward(self, bottoms, params, tops, saved, top_diffs, need_bottoms, param_diffs):
        if not need_bottoms[0]:
            return [None]
        if saved is None:
            return [top_diffs[0].clone()]
        return [top_diffs[0] * saved * (1.0 / (1.0 - self.ratio))]

"""BatchNorm, Scale and Bias (Caffe's split of batch normalization into three layers), and MVN."""
from __future__ import annotations

import torch

from magic_init.errors import NetDefinitionError

from .base import Layer, register
from .structure import canonical_axis


@register("BatchNorm")
class BatchNorm(Layer):
    """y = (x - mean) / sqrt(var + eps) per channel (axis 1), no learned scale or shift.

    Blobs: running mean * s, running variance * s, and s (the moving-average normalizer).
    ``use_global_stats`` (default: true in TEST, false in TRAIN) uses mean = blob0 / s and
    var = blob1 / s (0 when s = 0); otherwise the batch statistics (biased variance, dividing by
    m = count / C), and the forward pass updates the blobs as Caffe does:
    s <- maf s + 1, blob0 <- maf blob0 + mean, blob1 <- maf blob1 + m / (m - 1) var.
    Caffe forces lr_mult 0 on all three blobs.
    """
    fixed_params = True
    same_shape = True

    def setup(self):
        p = self.param.batch_norm_param
        self.use_global_stats = (p.use_global_stats if p.HasField("use_global_stats")
                                 else self.phase == "test")
        self.eps, self.moving_average_fraction = p.eps, p.moving_average_fraction

    def param_shapes(self, bottom_shapes):
        channels = bottom_shapes[0][1] if len(bottom_shapes[0]) > 1 else 1
        return [(channels,), (channels,), (1,)]

    def fillers(self):
        return [None] * 3                 # Caffe zero-fills the three blobs

    def forward(self, bottoms, params):
        x = bottoms[0]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.use_global_stats:
            s = params[2].reshape(())
            factor = torch.where(s == 0, torch.zeros_like(s), 1 / s)
            mean, var = params[0] * factor, params[1] * factor
        else:
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims)
            var = (x - mean.reshape(shape)).pow(2).mean(dim=dims)
            if not x.is_meta:
                self._update_moving_averages(params, mean, var, x.numel() // x.shape[1])
        return [(x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)]

    def _update_moving_averages(self, params, mean, var, m):
        maf = self.moving_average_fraction
        correction = m / (m - 1.0) if m > 1 else 1.0
        with torch.no_grad():
            params[2].mul_(maf).add_(1)
            params[0].mul_(maf).add_(mean.detach())
            params[1].mul_(maf).add_(var.detach() * correction)


class _Broadcast(Layer):
    """Shared shape logic of Scale and Bias: a blob covering axes [axis, axis + num_axes) of x,
    learned, or given as the second bottom (then its own shape decides the axes)."""

    def message(self):
        raise NotImplementedError

    def output_shapes(self, bottom_shapes):
        """The first bottom's shape; with a second bottom the forward pass checks the axes."""
        return [bottom_shapes[0]] if len(bottom_shapes) == 1 else None

    def learned_shape(self, x_shape):
        p = self.message()
        axis = canonical_axis(p.axis, len(x_shape), self.where())
        end = len(x_shape) if p.num_axes == -1 else axis + p.num_axes
        if p.num_axes < -1 or end > len(x_shape):
            raise NetDefinitionError("%s: num_axes %d out of range" % (self.where(), p.num_axes))
        return tuple(x_shape[axis:end])

    def broadcastable(self, x, operand):
        """Reshape ``operand`` to (1.., operand shape, 1..) aligned at the layer's axis."""
        p = self.message()
        axis = canonical_axis(p.axis, x.dim(), self.where()) if operand.dim() else 0
        if tuple(x.shape[axis:axis + operand.dim()]) != tuple(operand.shape):
            raise NetDefinitionError("%s: shape %s does not match bottom %s at axis %d"
                                     % (self.where(), tuple(operand.shape), tuple(x.shape), axis))
        tail = x.dim() - axis - operand.dim()
        return operand.reshape((1,) * axis + tuple(operand.shape) + (1,) * tail)


@register("Scale")
class Scale(_Broadcast):
    """y = x * scale (+ bias if bias_term); scale learned (filler default constant 1) or bottom[1]."""

    def message(self):
        return self.param.scale_param

    def param_shapes(self, bottom_shapes):
        shape = (bottom_shapes[1] if len(bottom_shapes) > 1
                 else self.learned_shape(bottom_shapes[0]))
        shapes = [] if len(bottom_shapes) > 1 else [shape]
        return shapes + [shape] if self.message().bias_term else shapes

    def fillers(self):
        p = self.message()
        fillers = [self.filler_or_default(p, "filler", 1.0), p.bias_filler]
        return fillers[1:] if len(self.param.bottom) > 1 else fillers

    def forward(self, bottoms, params):
        x = bottoms[0]
        scale = bottoms[1] if len(bottoms) > 1 else params[0]
        y = x * self.broadcastable(x, scale)
        if self.message().bias_term:
            y = y + self.broadcastable(x, params[-1])
        return [y]


@register("Bias")
class Bias(_Broadcast):
    """y = x + bias; bias learned (filler default constant 0) or bottom[1]."""

    def message(self):
        return self.param.bias_param

    def param_shapes(self, bottom_shapes):
        return [] if len(bottom_shapes) > 1 else [self.learned_shape(bottom_shapes[0])]

    def fillers(self):
        return [self.message().filler]

    def forward(self, bottoms, params):
        x = bottoms[0]
        bias = bottoms[1] if len(bottoms) > 1 else params[0]
        return [x + self.broadcastable(x, bias)]


@register("MVN")
class MVN(Layer):
    """y = x - mean(x), divided by (std(x) + eps) with ``normalize_variance`` (default), over each
    (image, channel), or each image with ``across_channels``; std is the biased sqrt(mean (x - mean)^2)
    and eps (default 1e-9) is added to the std, not to the variance.

    The gradient is Caffe's: dx = (dy - mean dy - y mean(y dy)) / (std + eps), which treats
    d std / d var as 1 / (2 (std + eps)) (finite where std = 0, unlike the exact derivative).
    The top has Caffe's legacy 4-D shape (num, channels, height, width): (3, 7) gives (3, 7, 1, 1)."""

    def output_shapes(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if not 1 <= len(shape) <= 4:
            raise NetDefinitionError("%s: needs a bottom of 1 to 4 axes, got %s" % (self.where(), shape))
        return [shape + (1,) * (4 - len(shape))]

    def forward(self, bottoms, params):
        x, p = bottoms[0], self.param.mvn_param
        shape = self.output_shapes([tuple(x.shape)])[0]
        groups = shape[0] if p.across_channels else shape[0] * shape[1]
        flat = x.reshape(groups, -1)
        centred = flat - flat.mean(dim=1, keepdim=True)
        if p.normalize_variance:
            var = (centred * centred).mean(dim=1, keepdim=True)
            denom = (torch.sqrt(var.detach()) + p.eps)
            denom = denom + (var - var.detach()) / (2 * denom)   # value std + eps, Caffe's gradient
            centred = centred / denom
        return [centred.reshape(shape)]

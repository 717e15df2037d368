"""Spatial layers: Convolution, Deconvolution, Pooling, LRN (Caffe semantics on torch ops)."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from magic_init import conv_geometry
from magic_init.conv_geometry import pool_window, pooled_size
from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2

from .base import Layer, register
from .conv_grad import convolution_gradients

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_POOL = caffe_pb2.PoolingParameter
_LRN = caffe_pb2.LRNParameter
_LOWEST = -3.4028234663852886e38      # -FLT_MAX: Caffe's MAX of a window lying wholly in padding


class _ConvolutionBase(Layer):
    """Shared setup of Convolution and Deconvolution (both read ``convolution_param``; geometry and
    output size from ``magic_init.conv_geometry``)."""

    transposed = False           # Deconvolution: output size is the convolution's inverse

    def setup(self):
        p = self.param.convolution_param
        if p.axis != 1:
            raise NetDefinitionError("%s: only channel axis 1 is supported" % self.where())
        self.num_output, self.group, self.bias_term = p.num_output, p.group, p.bias_term
        if self.num_output % self.group:
            raise NetDefinitionError("%s: num_output must be divisible by group" % self.where())

    def window(self, bottom_shape):
        num_spatial = len(bottom_shape) - 2
        if num_spatial not in _CONV:
            raise NetDefinitionError("%s: %d spatial axes are not supported"
                                     % (self.where(), num_spatial))
        return conv_geometry.convolution(self.param.convolution_param, num_spatial, self.where())

    def param_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        if shape[1] % self.group:
            raise NetDefinitionError("%s: input channels %d not divisible by group %d"
                                     % (self.where(), shape[1], self.group))
        shapes = [self.weight_shape(shape[1], self.window(shape).kernel)]
        return shapes + [(self.num_output,)] if self.bias_term else shapes

    def fillers(self):
        p = self.param.convolution_param
        return [p.weight_filler, p.bias_filler][:1 + self.bias_term]

    def output_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        spatial = conv_geometry.output_spatial(self.window(shape), shape[2:], self.transposed, self.where())
        return [(shape[0], self.num_output) + spatial]


@register("Convolution")
class Convolution(_ConvolutionBase):
    """y = W * x + b, weights (num_output, C_in / group, *kernel)."""

    backward_reads_tops = False

    def weight_shape(self, channels, kernel):
        return (self.num_output, channels // self.group) + tuple(kernel)

    def forward(self, bottoms, params):
        x = bottoms[0]
        w = self.window(x.shape)
        bias = params[1] if self.bias_term else None
        return [_CONV[x.dim() - 2](x, params[0], bias, w.stride, w.pad, w.dilation, self.group)]

    def backward(self, bottoms, params, tops, saved, top_diffs, need_bottoms, param_diffs):
        """dW += sum over images of dy correlated with x, db += sum of dy, dx = W^T * dy."""
        x = bottoms[0]
        need_bias = self.bias_term and param_diffs[1] is not None
        dx, dw, db = convolution_gradients(top_diffs[0], x, params[0], self.window(x.shape),
                                           self.group, need_bottoms[0], param_diffs[0] is not None,
                                           need_bias)
        if dw is not None:
            param_diffs[0].add_(dw)
        if db is not None:
            param_diffs[1].add_(db)
        return [dx]


@register("Deconvolution")
class Deconvolution(_ConvolutionBase):
    """Transposed convolution, weights (C_in, num_output / group, *kernel);
    out = stride (in - 1) + dilation (kernel - 1) + 1 - 2 pad."""

    transposed = True

    def weight_shape(self, channels, kernel):
        return (channels, self.num_output // self.group) + tuple(kernel)

    def forward(self, bottoms, params):
        x = bottoms[0]
        w = self.window(x.shape)
        bias = params[1] if self.bias_term else None
        return [_DECONV[x.dim() - 2](x, params[0], bias, w.stride, w.pad, 0, self.group,
                                     w.dilation)]


@register("Pooling")
class Pooling(Layer):
    """MAX (pads with -FLT_MAX) and AVE (divisor = window clipped to the padded border) pooling with
    Caffe's output size (PoolingLayer::Reshape); torch's own ops are used when their size rule
    agrees, otherwise the input is padded explicitly. STOCHASTIC in TEST (Caffe's GPU kernel
    StoPoolForwardTest; its CPU code has none): y = sum x^2 / sum x over the window clipped to the
    input, 0 where sum x <= 0; no padding. TRAIN-phase sampling is not supported."""

    backward_reads_tops = False

    def setup(self):
        p = self.param.pooling_param
        self.stochastic = p.pool == _POOL.STOCHASTIC
        if self.stochastic and self.phase != "test":
            raise NetDefinitionError("%s: STOCHASTIC pooling is supported in the TEST phase only"
                                     % self.where())
        if p.pool not in (_POOL.MAX, _POOL.AVE, _POOL.STOCHASTIC):
            raise NetDefinitionError("%s: pool method %s is not supported (MAX, AVE, STOCHASTIC are)"
                                     % (self.where(), _POOL.PoolMethod.Name(p.pool)))
        self.ceil = p.round_mode == _POOL.CEIL

    def output_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        return [tuple(shape[:2]) + self.geometry(shape)[2]]

    def geometry(self, shape):
        """(input size, window, Caffe's output size) for a bottom of this shape."""
        p = self.param.pooling_param
        if len(shape) != 4:
            raise NetDefinitionError("%s: pooling needs a 4-D bottom" % self.where())
        size = tuple(shape[2:])
        window = pool_window(p, size, self.where())
        padded = any(window.pad)
        if padded and self.stochastic:
            raise NetDefinitionError("%s: padding is implemented only for MAX and AVE pooling"
                                     % self.where())
        out = tuple(pooled_size(size[i], window.kernel[i], window.stride[i], window.pad[i],
                                self.ceil, padded) for i in range(2))
        return size, window, out

    def forward(self, bottoms, params):
        return self.forward_for_backward(bottoms, params)[0]

    def forward_for_backward(self, bottoms, params):
        """Tops, and saved: a ``_TorchPooling`` when torch's pooling op gave y (its backward kernel
        applies), None otherwise (STOCHASTIC, or the explicitly padded formulation)."""
        x = bottoms[0]
        size, w, out = self.geometry(tuple(x.shape))
        if self.stochastic:
            return [_stochastic_test(x, size, w, out)], None
        mode = _torch_ceil_mode(size, w, out)
        is_max = self.param.pooling_param.pool == _POOL.MAX
        if mode is not None:
            if is_max:
                y, indices = _max_pool_with_indices(x, w.kernel, w.stride, w.pad, mode)
                return [y], _TorchPooling(w, mode, indices)
            return [F.avg_pool2d(x, w.kernel, w.stride, w.pad, ceil_mode=mode,
                                 count_include_pad=True)], _TorchPooling(w, mode, None)
        padded = _pad_for_windows(x, size, w, out, _LOWEST if is_max else 0.0)
        if is_max:
            return [_max_pool_with_indices(padded, w.kernel, w.stride, (0, 0), False)[0]
                    [..., :out[0], :out[1]]], None
        sums = F.avg_pool2d(padded, w.kernel, w.stride, divisor_override=1)[..., :out[0], :out[1]]
        return [sums / _ave_divisors(size, w, out, x)], None

    def backward(self, bottoms, params, tops, saved, top_diffs, need_bottoms, param_diffs):
        """MAX: dy goes to each window's (first) maximum, summed where windows overlap; AVE: dy / divisor
        to every element of the window. torch's backward kernels where its forward op was used
        (``saved``), autograd through the padded formulation otherwise."""
        if not need_bottoms[0]:
            return [None]
        x, dy = bottoms[0], top_diffs[0]
        if saved is None:
            with torch.enable_grad():
                leaf = x.detach().requires_grad_(True)
                return list(torch.autograd.grad(self.forward([leaf], [])[0], [leaf], [dy]))
        w, mode, indices = saved
        if indices is not None:
            return [torch.ops.aten.max_pool2d_with_indices_backward(
                dy, x, list(w.kernel), list(w.stride), list(w.pad), [1, 1], mode, indices.contiguous())]
        return [torch.ops.aten.avg_pool2d_backward(dy, x, list(w.kernel), list(w.stride), list(w.pad),
                                                   mode, True, None)]


class _TorchPooling(NamedTuple):
    """What a Pooling forward that ran torch's own op hands to backward."""
    window: object          # conv_geometry's window (kernel, stride, pad)
    ceil_mode: bool
    indices: object         # MAX: torch's argmax indices; AVE: None


def _stochastic_test(x, size, w, out):
    """Caffe's StoPoolForwardTest: sum x^2 / sum x per window (windows clipped to the input, as the
    zero padding after it adds nothing), 0 where sum x <= 0."""
    padded = _pad_for_windows(x, size, w, out, 0.0)

    def window_sums(t):
        return F.avg_pool2d(t, w.kernel, w.stride, divisor_override=1)[..., :out[0], :out[1]]
    sums, squares = window_sums(padded), window_sums(padded * padded)
    positive = sums > 0
    return torch.where(positive, squares / torch.where(positive, sums, torch.ones_like(sums)),
                       torch.zeros_like(sums))


def _max_pool_with_indices(x, kernel, stride, pad, ceil_mode):
    """torch's max pooling and its argmax indices; on the CPU through a channels-last copy, whose
    kernel picks the same (first) maximum of each window but runs several times faster, copies
    included (docs/RESULTS.md). Indices may be channels-last."""
    if x.device.type == "cpu":
        y, indices = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel, stride, pad,
                                  ceil_mode=ceil_mode, return_indices=True)
        return y.contiguous(), indices
    return F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil_mode, return_indices=True)


def _torch_size(size, kernel, stride, pad, ceil_mode):
    """Output size of torch's pooling (aten pooling_output_shape)."""
    span = size + 2 * pad - kernel + ((stride - 1) if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _torch_ceil_mode(size, w, out):
    """The ceil_mode for which torch's pooling yields Caffe's size ``out``, or None."""
    if any(2 * w.pad[i] > w.kernel[i] for i in range(2)):
        return None
    for mode in (True, False):
        if all(_torch_size(size[i], w.kernel[i], w.stride[i], w.pad[i], mode) == out[i]
               for i in range(2)):
            return mode
    return None


def _pad_for_windows(x, size, w, out, value):
    """Pad by ``pad`` before and enough after that every Caffe window lies inside."""
    after = [max(0, (out[i] - 1) * w.stride[i] + w.kernel[i] - size[i] - w.pad[i]) for i in range(2)]
    return F.pad(x, (w.pad[1], after[1], w.pad[0], after[0]), value=value)


def _ave_divisors(size, w, out, like):
    """Caffe's AVE divisor: window size clipped to [-pad, size + pad) on each axis."""
    lengths = []
    for i in range(2):
        start = torch.arange(out[i], dtype=torch.float32) * w.stride[i] - w.pad[i]
        end = torch.clamp(start + w.kernel[i], max=size[i] + w.pad[i])
        lengths.append(end - start)
    return torch.outer(lengths[0], lengths[1]).to(device=like.device, dtype=like.dtype)


@register("LRN")
class LRN(Layer):
    """ACROSS_CHANNELS: y = x (k + alpha / n sum_{n channels} x^2)^-beta;
    WITHIN_CHANNEL: y = x (1 + alpha / n^2 sum_{n x n, zero padded} x^2)^-beta (k ignored)."""
    same_shape = True

    def setup(self):
        p = self.param.lrn_param
        if p.local_size % 2 == 0:
            raise NetDefinitionError("%s: LRN only supports odd local_size" % self.where())
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.across = p.norm_region == _LRN.ACROSS_CHANNELS

    def forward(self, bottoms, params):
        return self.forward_for_backward(bottoms, params)[0]

    def forward_for_backward(self, bottoms, params):
        """Tops, and saved: ACROSS_CHANNELS ``(scale, scale ** -beta)``; WITHIN_CHANNEL None."""
        x = bottoms[0]
        if self.across:
            scale = _channel_window_sum(x * x, self.size).mul_(self.alpha / self.size).add_(self.k)
            scale_power = scale.pow(-self.beta)
            return [x * scale_power], (scale, scale_power)
        mean_square = F.avg_pool2d(x * x, self.size, 1, (self.size - 1) // 2,
                                   count_include_pad=True)
        return [x * (1 + self.alpha * mean_square).pow(-self.beta)], None

    def backward(self, bottoms, params, tops, saved, top_diffs, need_bottoms, param_diffs):
        """ACROSS_CHANNELS, Caffe's CrossChannelBackward: with s the scale,
        dx = g s^-beta - (2 alpha beta / n) x sum_{n channels}(g y / s)."""
        if not need_bottoms[0]:
            return [None]
        x, y, g = bottoms[0], tops[0], top_diffs[0]
        if not self.across:
            with torch.enable_grad():
                leaf = x.detach().requires_grad_(True)
                return list(torch.autograd.grad(self.forward([leaf], [])[0], [leaf], [g]))
        scale, scale_power = saved
        ratio = _channel_window_sum((g * y).div_(scale), self.size).mul_(x).mul_(2.0 * self.alpha * self.beta / self.size)
        return [(g * scale_power).sub_(ratio)]


def _channel_window_sum(x, size):
    """Sum over a window of ``size`` channels centred on each channel, zero padded (N, C, ...): x plus
    its shifts by 1..(size-1)/2 channels either way, added in place into one copy of x (no padded
    copy; much faster than a 3-D pooling)."""
    channels = x.shape[1]
    flat = x.reshape(x.shape[0], channels, -1)
    total = flat.clone()
    for offset in range(1, min((size - 1) // 2, channels - 1) + 1):
        total[:, offset:] += flat[:, :channels - offset]
        total[:, :channels - offset] += flat[:, offset:]
    return total.reshape(x.shape)

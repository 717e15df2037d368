"""Convolution gradients: torch's ``convolution_backward``, and the input gradient of a strided
2-D convolution over few channels by a space-to-depth rewrite (much faster on the CPU there).

Space to depth: with the kernel zero-padded to a multiple of the stride s, the strided
convolution y = W *_s x_p equals a stride-1 convolution of s2d(x_p) (channels C s^2, spatial
size / s) with s2d(W). Its input gradient is then a stride-1 transposed convolution,
dx_p = d2s(W'^T * dy), cropped to the padded input and then by the padding (timings: docs/RESULTS.md,
"Measurements behind design choices").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Rewrite only when the rewritten input has at most this many channels (C_in / group * s_h * s_w):
# faster for image-input layers, slower for deep ones (docs/RESULTS.md, "Measurements behind design choices").
SPACE_TO_DEPTH_MAX_CHANNELS = 64


def space_to_depth_pays(x, window, group):
    """Whether dx of this convolution should go through ``input_gradient_space_to_depth``."""
    return (x.dim() == 4 and x.device.type == "cpu" and max(window.stride) > 1
            and window.dilation == (1, 1)
            and x.shape[1] // group * window.stride[0] * window.stride[1]
            <= SPACE_TO_DEPTH_MAX_CHANNELS)


def convolution_gradients(top_diff, x, weight, window, group, need_input, need_weight, need_bias):
    """(dx, dW, db) of y = W * x + b, each None where not needed."""
    use_space_to_depth = need_input and space_to_depth_pays(x, window, group)
    mask = [need_input and not use_space_to_depth, need_weight, need_bias]
    dx = dw = db = None
    if any(mask):
        grads = torch.ops.aten.convolution_backward(
            top_diff, x, weight, [weight.shape[0]] if need_bias else None, list(window.stride),
            list(window.pad), list(window.dilation), False, [0] * (x.dim() - 2), group, mask)
        dx, dw, db = (grad if needed else None for grad, needed in zip(grads, mask))  # aten may fill all
    if use_space_to_depth:
        dx = input_gradient_space_to_depth(top_diff, weight, x.shape, window, group)
    return dx, dw, db


def input_gradient_space_to_depth(top_diff, weight, input_shape, window, group):
    """dx of a 2-D convolution with dilation 1, as a stride-1 transposed convolution (see above)."""
    (sh, sw), (ph, pw) = window.stride, window.pad
    out_c, in_c_per_group, kh, kw = weight.shape
    kh_s, kw_s = -(-kh // sh), -(-kw // sw)                    # kernel size in stride units
    padded_weight = F.pad(weight, (0, kw_s * sw - kw, 0, kh_s * sh - kh))
    rewritten = (padded_weight.reshape(out_c, in_c_per_group, kh_s, sh, kw_s, sw)
                 .permute(0, 1, 3, 5, 2, 4).reshape(out_c, in_c_per_group * sh * sw, kh_s, kw_s))
    grad = F.conv_transpose2d(top_diff, rewritten, groups=group)
    n, _, gh, gw = grad.shape
    channels = input_shape[1]
    grad = grad.reshape(n, channels, sh, sw, gh, gw).permute(0, 1, 4, 2, 5, 3).reshape(
        n, channels, gh * sh, gw * sw)
    height, width = input_shape[2] + 2 * ph, input_shape[3] + 2 * pw   # the padded input
    grad = grad[:, :, :height, :width]
    grad = F.pad(grad, (0, width - grad.shape[3], 0, height - grad.shape[2]))
    return grad[:, :, ph:ph + input_shape[2], pw:pw + input_shape[3]].contiguous()

"""Layers that route or reshape blobs, plus InnerProduct and Softmax: Input, Split, Concat, Slice,
Flatten, Reshape, Eltwise, Silence, InnerProduct, Softmax."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2

from .base import Layer, register

_ELTWISE = caffe_pb2.EltwiseParameter


def canonical_axis(axis, ndim, where):
    """Caffe's ``CanonicalAxisIndex``: negative axes count from the end."""
    canonical = axis + ndim if axis < 0 else axis
    if not 0 <= canonical < max(ndim, 1):
        raise NetDefinitionError("%s: axis %d out of range for a %d-D blob" % (where, axis, ndim))
    return canonical


@register("Input")
class Input(Layer):
    """Net input: its tops are filled by the user; shapes come from ``input_param.shape``."""
    has_backward = False

    def top_shapes(self):
        shapes = [tuple(s.dim) for s in self.param.input_param.shape]
        if len(shapes) == 1:
            shapes = shapes * len(self.param.top)
        if len(shapes) != len(self.param.top):
            raise NetDefinitionError("%s: needs one input_param shape, or one per top"
                                     % self.where())
        return shapes

    def forward(self, bottoms, params):
        return []


@register("Split")
class Split(Layer):
    """Every top is the bottom (shared data); in backward their diffs are summed."""

    def output_shapes(self, bottom_shapes):
        return [bottom_shapes[0]] * len(self.param.top)

    def forward(self, bottoms, params):
        return [bottoms[0]] * len(self.param.top)


@register("Silence")
class Silence(Layer):
    """Consumes bottoms, produces nothing."""
    has_backward = False

    def output_shapes(self, bottom_shapes):
        return []

    def forward(self, bottoms, params):
        return []


@register("Concat")
class Concat(Layer):
    """Concatenate the bottoms along ``axis`` (legacy ``concat_dim``), default 1."""

    def axis(self, ndim):
        p = self.param.concat_param
        return canonical_axis(p.concat_dim if p.HasField("concat_dim") else p.axis, ndim, self.where())

    def output_shapes(self, bottom_shapes):
        first = bottom_shapes[0]
        axis = self.axis(len(first))
        for shape in bottom_shapes[1:]:
            if len(shape) != len(first) or shape[:axis] + shape[axis + 1:] != first[:axis] + first[axis + 1:]:
                raise NetDefinitionError("%s: bottoms %s and %s differ outside axis %d"
                                         % (self.where(), first, shape, axis))
        return [first[:axis] + (sum(s[axis] for s in bottom_shapes),) + first[axis + 1:]]

    def forward(self, bottoms, params):
        return [torch.cat(bottoms, self.axis(bottoms[0].dim()))]


@register("Slice")
class Slice(Layer):
    """Split the bottom along ``axis`` (legacy ``slice_dim``) at ``slice_point``s, or equally."""

    def forward(self, bottoms, params):
        x, p, tops = bottoms[0], self.param.slice_param, len(self.param.top)
        axis = canonical_axis(p.slice_dim if p.HasField("slice_dim") else p.axis, x.dim(),
                              self.where())
        size = x.shape[axis]
        if p.slice_point:
            if len(p.slice_point) != tops - 1:
                raise NetDefinitionError("%s: needs %d slice points" % (self.where(), tops - 1))
            bounds = [0] + list(p.slice_point) + [size]
        elif size % tops == 0:
            bounds = list(range(0, size + 1, size // tops))
        else:
            raise NetDefinitionError("%s: axis size %d is not divisible by %d tops"
                                     % (self.where(), size, tops))
        return list(torch.split(x, list(np.diff(bounds)), dim=axis))


@register("Flatten")
class Flatten(Layer):
    """Merge axes [axis, end_axis] (defaults 1, -1) into one."""

    def output_shapes(self, bottom_shapes):
        shape, p = bottom_shapes[0], self.param.flatten_param
        start = canonical_axis(p.axis, len(shape), self.where())
        end = canonical_axis(p.end_axis, len(shape), self.where())
        return [shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]]

    def forward(self, bottoms, params):
        x, p = bottoms[0], self.param.flatten_param
        start = canonical_axis(p.axis, x.dim(), self.where())
        end = canonical_axis(p.end_axis, x.dim(), self.where())
        return [torch.flatten(x, start, end)]


@register("Reshape")
class Reshape(Layer):
    """Replace axes [axis, axis + num_axes) by ``shape``: 0 copies the bottom's dim, -1 is inferred."""

    def forward(self, bottoms, params):
        x, p = bottoms[0], self.param.reshape_param
        start = p.axis + x.dim() + 1 if p.axis < 0 else p.axis
        end = x.dim() if p.num_axes == -1 else start + p.num_axes
        spec = [x.shape[start + i] if d == 0 else d for i, d in enumerate(p.shape.dim)]
        shape = list(x.shape[:start]) + spec + list(x.shape[end:])
        return [x.reshape(shape)]


@register("Eltwise")
class Eltwise(Layer):
    """SUM (sum_i coeff_i x_i), PROD, or MAX (ties keep Caffe's choice: bottom 1 over bottom 0,
    then the earlier bottom); the gradient of MAX goes to the chosen bottom only."""

    def output_shapes(self, bottom_shapes):
        """Caffe requires identical bottom shapes (torch would broadcast)."""
        for shape in bottom_shapes[1:]:
            if shape != bottom_shapes[0]:
                raise NetDefinitionError("%s: bottoms must have the same shape, got %s and %s"
                                         % (self.where(), bottom_shapes[0], shape))
        return [bottom_shapes[0]]

    def forward(self, bottoms, params):
        p = self.param.eltwise_param
        if p.operation == _ELTWISE.SUM:
            if p.coeff and len(p.coeff) != len(bottoms):
                raise NetDefinitionError("%s: needs one coeff per bottom" % self.where())
            coeffs = list(p.coeff) or [1.0] * len(bottoms)
            total = bottoms[0] if coeffs[0] == 1 else bottoms[0] * coeffs[0]
            for x, c in zip(bottoms[1:], coeffs[1:]):
                total = total + (x if c == 1 else x * c)
            return [total]
        if p.operation == _ELTWISE.PROD:
            product = bottoms[0]
            for x in bottoms[1:]:
                product = product * x
            return [product]
        top = torch.where(bottoms[0] > bottoms[1], bottoms[0], bottoms[1])
        for x in bottoms[2:]:
            top = torch.where(x > top, x, top)
        return [top]


@register("InnerProduct")
class InnerProduct(Layer):
    """y = x W^T + b with x flattened from ``axis`` on (K inputs); W is (N, K), or (K, N) with
    ``transpose``; tops keep the bottom's leading axes: shape[:axis] + (N,)."""

    def _inputs(self, shape):
        axis = canonical_axis(self.param.inner_product_param.axis, len(shape), self.where())
        return axis, int(np.prod(shape[axis:]))

    def output_shapes(self, bottom_shapes):
        axis, _ = self._inputs(bottom_shapes[0])
        return [bottom_shapes[0][:axis] + (self.param.inner_product_param.num_output,)]

    def param_shapes(self, bottom_shapes):
        p = self.param.inner_product_param
        _, k = self._inputs(bottom_shapes[0])
        weight = (k, p.num_output) if p.transpose else (p.num_output, k)
        return [weight, (p.num_output,)] if p.bias_term else [weight]

    def fillers(self):
        p = self.param.inner_product_param
        return [p.weight_filler, p.bias_filler][:1 + p.bias_term]

    def forward(self, bottoms, params):
        x, p = bottoms[0], self.param.inner_product_param
        axis, k = self._inputs(tuple(x.shape))
        flat = x.reshape(-1, k)
        weight = params[0] if p.transpose else params[0].t()
        y = torch.addmm(params[1], flat, weight) if p.bias_term else flat @ weight
        return [y.reshape(tuple(x.shape[:axis]) + (p.num_output,))]

    def backward(self, bottoms, params, tops, top_diffs, need_bottoms, param_diffs):
        """dW += g^T x (or x^T g with transpose), db += sum_rows g, dx = g W (or g W^T);
        accumulated straight into the parameter diffs, as Caffe's gemm with beta = 1 does."""
        x, p = bottoms[0], self.param.inner_product_param
        flat = x.reshape(-1, params[0].numel() // p.num_output)
        grad = top_diffs[0].reshape(flat.shape[0], p.num_output)
        if param_diffs[0] is not None:
            if p.transpose:
                param_diffs[0].addmm_(flat.t(), grad)
            else:
                param_diffs[0].addmm_(grad.t(), flat)
        if p.bias_term and param_diffs[1] is not None:
            param_diffs[1].add_(grad.sum(dim=0))
        if not need_bottoms[0]:
            return [None]
        weight = params[0].t() if p.transpose else params[0]
        return [(grad @ weight).reshape(x.shape)]


@register("Softmax")
class Softmax(Layer):
    """y = exp(x) / sum exp(x) along ``axis`` (default 1)."""

    def output_shapes(self, bottom_shapes):
        canonical_axis(self.param.softmax_param.axis, len(bottom_shapes[0]), self.where())
        return [bottom_shapes[0]]

    def forward(self, bottoms, params):
        x = bottoms[0]
        return [F.softmax(x, canonical_axis(self.param.softmax_param.axis, x.dim(), self.where()))]

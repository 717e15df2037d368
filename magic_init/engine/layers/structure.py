"""Layers that route or reshape blobs, plus InnerProduct and Softmax: Input, Split, Concat, Slice,
Flatten, Reshape, Eltwise, Silence, InnerProduct, Softmax, Crop, Tile, ArgMax, Reduction, Embed."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2

from .base import Layer, register

_ELTWISE = caffe_pb2.EltwiseParameter
_REDUCTION = caffe_pb2.ReductionParameter


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

    backward_reads_tops = False

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

    def backward(self, bottoms, params, tops, saved, top_diffs, need_bottoms, param_diffs):
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


@register("Crop")
class Crop(Layer):
    """top = bottom[0][..., o_i : o_i + bottom[1].shape[i], ...] for every axis i >= ``axis``
    (default 2); ``offset``: none (all 0), one for every cropped axis, or one per cropped axis.
    bottom[1] only gives the shape (Caffe computes no diff for it)."""

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def _offsets(self, shape, like):
        p = self.param.crop_param
        axis = canonical_axis(p.axis, len(shape), self.where())
        if len(p.offset) > 1 and axis + len(p.offset) != len(shape):
            raise NetDefinitionError("%s: needs one offset per axis from %d on, got %d"
                                     % (self.where(), axis, len(p.offset)))
        if len(like) != len(shape):
            raise NetDefinitionError("%s: bottoms %s and %s differ in their number of axes"
                                     % (self.where(), tuple(shape), tuple(like)))
        offsets, sizes = [0] * len(shape), list(shape)
        for i in range(axis, len(shape)):
            offsets[i] = p.offset[0] if len(p.offset) == 1 else p.offset[i - axis] if p.offset else 0
            sizes[i] = like[i]
            if shape[i] - offsets[i] < like[i]:
                raise NetDefinitionError("%s: crop of size %d at offset %d is out of bounds of axis %d "
                                         "(size %d)" % (self.where(), like[i], offsets[i], i, shape[i]))
        return offsets, tuple(sizes)

    def output_shapes(self, bottom_shapes):
        return [self._offsets(bottom_shapes[0], bottom_shapes[1])[1]]

    def forward(self, bottoms, params):
        x = bottoms[0]
        offsets, sizes = self._offsets(tuple(x.shape), tuple(bottoms[1].shape))
        return [x[tuple(slice(o, o + n) for o, n in zip(offsets, sizes))]]


@register("Tile")
class Tile(Layer):
    """Repeat the block of axes [axis, end) ``tiles`` times along ``axis`` (default 1):
    [a, b] -> [a, b, a, b] (numpy's tile, not repeat)."""

    def _repeats(self, ndim):
        p = self.param.tile_param
        if p.tiles < 1:
            raise NetDefinitionError("%s: tiles must be positive" % self.where())
        axis = canonical_axis(p.axis, ndim, self.where())
        return [p.tiles if i == axis else 1 for i in range(ndim)]

    def output_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        return [tuple(d * r for d, r in zip(shape, self._repeats(len(shape))))]

    def forward(self, bottoms, params):
        x = bottoms[0]
        return [x.repeat(self._repeats(x.dim()))]


def _caffe_top_k(x, dim, k):
    """(values, indices) of the ``k`` largest entries along ``dim`` in Caffe's order (partial_sort
    of (value, index) pairs with std::greater: ties put the larger index first)."""
    size = x.shape[dim]
    values, flipped = torch.sort(torch.flip(x, [dim]), dim=dim, descending=True, stable=True)
    index = (size - 1) - flipped.narrow(dim, 0, k)
    return values.narrow(dim, 0, k), index


@register("ArgMax")
class ArgMax(Layer):
    """Indices of the ``top_k`` largest values (ties: larger index first). With ``axis``: along it,
    top shape[axis] = top_k, ``out_max_val`` gives the values instead. Without: over each image
    (all axes after 0), top (N, 1, top_k, 1..) or with out_max_val (N, 2, top_k, 1..): indices then
    values. No backward (Caffe has none)."""
    has_backward = False

    def output_shapes(self, bottom_shapes):
        shape, p = bottom_shapes[0], self.param.argmax_param
        if p.HasField("axis"):
            axis = canonical_axis(p.axis, len(shape), self.where())
            size = shape[axis]
        else:
            axis, size = None, int(np.prod(shape[1:]))
        if p.top_k < 1 or p.top_k > size:
            raise NetDefinitionError("%s: top_k %d out of range [1, %d]" % (self.where(), p.top_k, size))
        if axis is not None:
            return [shape[:axis] + (p.top_k,) + shape[axis + 1:]]
        top = [1] * max(len(shape), 3)
        top[0], top[1], top[2] = shape[0], 1 + p.out_max_val, p.top_k
        return [tuple(top)]

    def forward(self, bottoms, params):
        x, p = bottoms[0], self.param.argmax_param
        shape = self.output_shapes([tuple(x.shape)])[0]
        if p.HasField("axis"):
            values, index = _caffe_top_k(x, canonical_axis(p.axis, x.dim(), self.where()), p.top_k)
            return [values if p.out_max_val else index.to(x.dtype)]
        values, index = _caffe_top_k(x.reshape(x.shape[0], -1), 1, p.top_k)
        top = torch.stack([index.to(x.dtype), values], 1) if p.out_max_val else index.to(x.dtype)
        return [top.reshape(shape)]


@register("Reduction")
class Reduction(Layer):
    """y = coeff * op(x) over axes [axis, end) (default axis 0: a scalar); op SUM sum x, ASUM sum |x|,
    SUMSQ sum x^2, MEAN sum x / count. Top shape: bottom shape[:axis]."""

    def output_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        return [shape[:canonical_axis(self.param.reduction_param.axis, len(shape), self.where())]]

    def forward(self, bottoms, params):
        x, p = bottoms[0], self.param.reduction_param
        axis = canonical_axis(p.axis, x.dim(), self.where())
        terms = {_REDUCTION.SUM: x, _REDUCTION.MEAN: x, _REDUCTION.ASUM: x.abs(),
                 _REDUCTION.SUMSQ: x * x}[p.operation]
        coeff = p.coeff
        if p.operation == _REDUCTION.MEAN:
            coeff = float(np.float32(coeff) / np.float32(max(1, int(np.prod(x.shape[axis:])))))
        y = terms.sum(dim=list(range(axis, x.dim())))
        return [y if coeff == 1 else y * coeff]


@register("Embed")
class Embed(Layer):
    """y[..., :] = W[int(x[...]), :] (+ b): a lookup in the (input_dim, num_output) weight; top shape
    bottom shape + (num_output,). The bottom holds indices and gets no gradient (Caffe aborts if
    asked for one, so force_backward does not reach it here)."""

    def allow_force_backward(self, bottom_index):
        return False

    def output_shapes(self, bottom_shapes):
        return [bottom_shapes[0] + (self.param.embed_param.num_output,)]

    def param_shapes(self, bottom_shapes):
        p = self.param.embed_param
        weight = (p.input_dim, p.num_output)
        return [weight, (p.num_output,)] if p.bias_term else [weight]

    def fillers(self):
        p = self.param.embed_param
        return [p.weight_filler, p.bias_filler][:1 + p.bias_term]

    def forward(self, bottoms, params):
        index = bottoms[0].detach().long()
        if index.numel() and not index.is_meta and (index.min() < 0 or index.max() >= self.param.embed_param.input_dim):
            raise NetDefinitionError("%s: index out of range [0, %d)"
                                     % (self.where(), self.param.embed_param.input_dim))
        y = params[0][index]
        return [y + params[1] if self.param.embed_param.bias_term else y]

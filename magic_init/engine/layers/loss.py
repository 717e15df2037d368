"""Loss layers and Accuracy. A loss top is a scalar (0-d) blob; the net sets its diff to the
layer's loss weight (1 for ``*Loss`` types by default), so backward yields loss_weight * dL/dx."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2

from .base import Layer, register
from .structure import canonical_axis

_NORM = caffe_pb2.LossParameter
_HINGE = caffe_pb2.HingeLossParameter
_LOG_FLT_MIN = math.log(np.finfo(np.float32).tiny)
_LOG_THRESHOLD = 1e-20          # Caffe's kLOG_THRESHOLD: log(max(p, 1e-20))


def normalization_mode(loss_param, default=_NORM.VALID) -> int:
    """Caffe: legacy ``normalize`` (true VALID, false BATCH_SIZE) applies only when
    ``normalization`` is not set; otherwise ``default`` (VALID for SoftmaxWithLoss)."""
    if loss_param.HasField("normalization"):
        return loss_param.normalization
    if loss_param.HasField("normalize"):
        return _NORM.VALID if loss_param.normalize else _NORM.BATCH_SIZE
    return default


def normalizer(mode, outer, inner, valid_count):
    """Caffe's ``LossLayer::GetNormalizer``, at least 1: FULL outer*inner, VALID the count of
    non-ignored labels, BATCH_SIZE outer, NONE 1. ``valid_count`` may be a tensor."""
    if mode == _NORM.FULL:
        return float(max(1, outer * inner))
    if mode == _NORM.BATCH_SIZE:
        return float(max(1, outer))
    if mode == _NORM.NONE:
        return 1.0
    if isinstance(valid_count, torch.Tensor):
        return torch.clamp(valid_count.to(torch.float32), min=1.0)
    return float(max(1, valid_count))


def check_label_count(layer, bottom_shapes, axis):
    """Caffe's check: one label per prediction position (outer x inner of the scores)."""
    scores = bottom_shapes[0]
    axis = canonical_axis(axis, len(scores), layer.where())
    positions = int(np.prod(scores[:axis])) * int(np.prod(scores[axis + 1:]))
    if int(np.prod(bottom_shapes[1])) != positions:
        raise NetDefinitionError("%s: %d labels for %d predictions (scores %s, labels %s)"
                                 % (layer.where(), int(np.prod(bottom_shapes[1])), positions,
                                    scores, bottom_shapes[1]))


def check_same_count(layer, bottom_shapes):
    counts = [int(np.prod(s)) for s in bottom_shapes]
    if counts[0] != counts[1]:
        raise NetDefinitionError("%s: bottoms must have the same count, got %s and %s"
                                 % (layer.where(), bottom_shapes[0], bottom_shapes[1]))


def _valid_mask(labels, loss_param):
    if loss_param.HasField("ignore_label"):
        return labels != loss_param.ignore_label
    return None


class LossLayer(Layer):
    """Caffe's LossLayer: its second bottom (the labels or targets) takes no forced gradient."""

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(LossLayer):
    """L = -sum log(max(softmax(x)[label], FLT_MIN)) / normalizer over outer x inner positions
    (softmax along ``softmax_param.axis``); optional second top: the probabilities."""

    def output_shapes(self, bottom_shapes):
        check_label_count(self, bottom_shapes, self.param.softmax_param.axis)
        return [()] + [bottom_shapes[0]] * (len(self.param.top) > 1)

    def forward(self, bottoms, params):
        x = bottoms[0]
        axis, outer, channels, inner = _softmax_view(self, x, self.param.softmax_param.axis)
        log_prob = F.log_softmax(x, axis).reshape(outer, channels, inner)
        labels = bottoms[1].reshape(outer, inner).long()
        valid = _valid_mask(labels, self.param.loss_param)
        picked = log_prob.gather(1, labels.clamp(0, channels - 1).unsqueeze(1)).squeeze(1)
        losses = -torch.clamp(picked, min=_LOG_FLT_MIN)
        if valid is not None:
            losses = losses * valid.to(losses.dtype)
        count = valid.sum() if valid is not None else outer * inner
        loss = losses.sum() / normalizer(normalization_mode(self.param.loss_param),
                                         outer, inner, count)
        tops = [loss]
        if len(self.param.top) > 1:
            tops.append(F.softmax(x, axis))
        return tops


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(LossLayer):
    """L = -sum [t log s(x) + (1 - t) log(1 - s(x))] / normalizer, computed stably from the
    logits x. The normalizer defaults to the batch size N, as in the Caffe 1.0 we test against
    (Debian's 1.0.0+git2018); BVLC master's later default is VALID. An explicit
    ``loss_param.normalization`` is honoured (VALID counts targets != ``ignore_label``)."""

    def output_shapes(self, bottom_shapes):
        check_same_count(self, bottom_shapes)
        return [()]

    def forward(self, bottoms, params):
        x, target = bottoms
        losses = F.binary_cross_entropy_with_logits(x, target.detach(), reduction="none")
        valid = _valid_mask(target.long(), self.param.loss_param)
        if valid is not None:
            losses = losses * valid.to(losses.dtype)
        count = valid.sum() if valid is not None else x.numel()
        outer = x.shape[0]
        mode = normalization_mode(self.param.loss_param, default=_NORM.BATCH_SIZE)
        norm = normalizer(mode, outer,
                          x.numel() // max(outer, 1), count)
        return [losses.sum() / norm]


@register("EuclideanLoss")
class EuclideanLoss(Layer):
    """L = sum (a - b)^2 / (2 N), N = shape[0]; both bottoms receive gradients."""

    def output_shapes(self, bottom_shapes):
        check_same_count(self, bottom_shapes)
        return [()]

    def forward(self, bottoms, params):
        a, b = bottoms
        check_same_count(self, [tuple(a.shape), tuple(b.shape)])
        diff = a - b.reshape(a.shape)
        return [(diff * diff).sum() / (2.0 * a.shape[0])]


def _floored(x, floor):
    """max(x, floor) whose gradient is 1 everywhere: Caffe's loss backward ignores its own floor."""
    return torch.clamp(x.detach(), min=floor) + (x - x.detach())


def _softmax_view(layer, x, axis):
    """(axis, outer, channels, inner): x viewed as outer x channels x inner around the softmax axis."""
    axis = canonical_axis(axis, x.dim(), layer.where())
    outer, channels = int(np.prod(x.shape[:axis])), x.shape[axis]
    return axis, outer, channels, x.numel() // max(1, outer * channels)


def _check_first_axis(layer, bottom_shapes):
    """Caffe's LossLayer::Reshape: data and label have the same first dimension."""
    if bottom_shapes[0][:1] != bottom_shapes[1][:1]:
        raise NetDefinitionError("%s: data %s and label %s differ in their first dimension"
                                 % (layer.where(), bottom_shapes[0], bottom_shapes[1]))


def _rows_and_labels(layer, bottoms):
    """Scores as (N, count / N) and the N labels as integers (Caffe's num/dim view)."""
    x = bottoms[0]
    flat = x.reshape(x.shape[0], -1)
    labels = bottoms[1].detach().reshape(-1)[:x.shape[0]].long()
    if labels.numel() and not labels.is_meta and (labels.min() < 0 or labels.max() >= flat.shape[1]):
        raise NetDefinitionError("%s: label out of range [0, %d)" % (layer.where(), flat.shape[1]))
    return flat, labels


@register("HingeLoss")
class HingeLoss(LossLayer):
    """L = sum_{n,k} max(0, 1 + s x_nk)^p / N with s = -1 for k = label_n, +1 otherwise;
    p = 1 (norm L1, default) or 2 (L2); x viewed as (N, count / N)."""

    def output_shapes(self, bottom_shapes):
        _check_first_axis(self, bottom_shapes)
        return [()]

    def forward(self, bottoms, params):
        flat, labels = _rows_and_labels(self, bottoms)
        sign = 1 - 2 * F.one_hot(labels, flat.shape[1]).to(flat.dtype)
        margins = F.relu(1 + sign * flat)
        if self.param.hinge_loss_param.norm == _HINGE.L2:
            margins = margins * margins
        return [margins.sum() / flat.shape[0]]


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(LossLayer):
    """L = -sum_n log(max(p_n,label_n, 1e-20)) / N on probabilities p viewed as (N, count / N);
    Caffe's gradient -1 / (N max(p, 1e-20)) at the label, also below the floor."""

    def output_shapes(self, bottom_shapes):
        _check_first_axis(self, bottom_shapes)
        if int(np.prod(bottom_shapes[1][1:])) != 1:
            raise NetDefinitionError("%s: needs one label per image, got %s"
                                     % (self.where(), bottom_shapes[1]))
        return [()]

    def forward(self, bottoms, params):
        flat, labels = _rows_and_labels(self, bottoms)
        picked = flat.gather(1, labels.unsqueeze(1)).squeeze(1)
        return [-torch.log(_floored(picked, _LOG_THRESHOLD)).sum() / flat.shape[0]]


@register("InfogainLoss")
class InfogainLoss(LossLayer):
    """L = -sum_{positions} sum_k H[label, k] log(max(softmax(x)_k, 1e-20)) / normalizer, softmax
    along ``infogain_loss_param.axis`` (default 1), as SoftmaxWithLoss (ignore_label, normalization,
    an optional second top with the probabilities). H (K x K) is the third bottom (no gradient), or
    read from ``infogain_loss_param.source`` (a BlobProto file), as Caffe requires one of them.
    Caffe's gradient p_k sum_l H[label, l] - H[label, k] ignores the 1e-20 floor, as here."""

    def setup(self):
        self.matrix = None
        source = self.param.infogain_loss_param.source
        if len(self.param.bottom) < 3:
            if not source:
                raise NetDefinitionError("%s: needs the infogain matrix as a third bottom or "
                                         "infogain_loss_param.source" % self.where())
            self.matrix = _read_blob_proto(source, self.where())

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def output_shapes(self, bottom_shapes):
        check_label_count(self, bottom_shapes, self.param.infogain_loss_param.axis)
        return [()] + [bottom_shapes[0]] * (len(self.param.top) > 1)

    def forward(self, bottoms, params):
        x = bottoms[0]
        axis, outer, channels, inner = _softmax_view(self, x, self.param.infogain_loss_param.axis)
        matrix = bottoms[2].detach() if len(bottoms) > 2 else self.matrix.to(x.device, x.dtype)
        if matrix.numel() != channels * channels:
            raise NetDefinitionError("%s: the infogain matrix must have %d x %d entries, got %d"
                                     % (self.where(), channels, channels, matrix.numel()))
        log_prob = _floored(F.log_softmax(x, axis).reshape(outer, channels, inner), math.log(_LOG_THRESHOLD))
        labels = bottoms[1].detach().reshape(outer, inner).long()
        valid = _valid_mask(labels, self.param.loss_param)
        rows = matrix.reshape(channels, channels)[labels.clamp(0, channels - 1)]  # (outer, inner, K)
        losses = -(rows.permute(0, 2, 1) * log_prob).sum(dim=1)
        if valid is not None:
            losses = losses * valid.to(losses.dtype)
        count = valid.sum() if valid is not None else outer * inner
        loss = losses.sum() / normalizer(normalization_mode(self.param.loss_param), outer, inner, count)
        return [loss] + [F.softmax(x, axis).detach()] * (len(self.param.top) > 1)   # Caffe ignores its diff


def _read_blob_proto(path, where):
    """The values of a binary BlobProto file (Caffe's ReadProtoFromBinaryFileOrDie), as a tensor."""
    blob = caffe_pb2.BlobProto()
    try:
        with open(path, "rb") as f:
            blob.ParseFromString(f.read())
    except (OSError, ValueError) as error:
        raise NetDefinitionError("%s: cannot read the infogain matrix %r: %s" % (where, path, error))
    return torch.tensor(np.asarray(blob.data, dtype=np.float32))


@register("ContrastiveLoss")
class ContrastiveLoss(LossLayer):
    """L = sum_n [y_n d_n^2 + (1 - y_n) max(margin - d_n, 0)^2] / 2N with d_n = ||a_n - b_n||,
    y_n = int(bottom[2]) != 0 (similar pair); ``legacy_version``: max(margin - d_n^2, 0) instead.
    Caffe's gradient of d is (a - b) / (d + 1e-4), reproduced here."""

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def output_shapes(self, bottom_shapes):
        check_same_count(self, bottom_shapes)
        _check_first_axis(self, bottom_shapes)
        return [()]

    def forward(self, bottoms, params):
        a, b, similar = bottoms
        p = self.param.contrastive_loss_param
        num = a.shape[0]
        diff = (a - b.reshape(a.shape)).reshape(num, -1)
        dist_sq = (diff * diff).sum(dim=1)
        if p.legacy_version:
            dissimilar = F.relu(p.margin - dist_sq)
        else:
            dist = torch.sqrt(dist_sq.detach())
            dist = dist + (dist_sq - dist_sq.detach()) / (2 * (dist + 1e-4))
            dissimilar = F.relu(p.margin - dist) ** 2
        pairs = similar.detach().reshape(-1)[:num].trunc() != 0
        return [torch.where(pairs, dist_sq, dissimilar).sum() / num / 2]


@register("Accuracy")
class Accuracy(Layer):
    """Fraction of positions whose label is among the ``top_k`` scores: correct when fewer than
    top_k other classes score >= the true class (Caffe's tie rule); ignored labels skipped."""
    has_backward = False

    def setup(self):
        if len(self.param.top) > 1:
            raise NetDefinitionError("%s: the per-class accuracy top is not supported"
                                     % self.where())

    def output_shapes(self, bottom_shapes):
        check_label_count(self, bottom_shapes, self.param.accuracy_param.axis)
        return [()]

    def forward(self, bottoms, params):
        x, p = bottoms[0], self.param.accuracy_param
        axis = canonical_axis(p.axis, x.dim(), self.where())
        outer, channels = int(np.prod(x.shape[:axis])), x.shape[axis]
        scores = x.reshape(outer, channels, -1)
        labels = bottoms[1].reshape(outer, -1).long()
        true_score = scores.gather(1, labels.clamp(0, channels - 1).unsqueeze(1))
        better = (scores >= true_score).sum(dim=1) - 1
        correct = better < p.top_k
        if p.HasField("ignore_label"):
            valid = labels != p.ignore_label
            correct, count = correct & valid, valid.sum()
        else:
            count = torch.tensor(labels.numel(), device=x.device)
        return [correct.sum().to(x.dtype) / torch.clamp(count.to(x.dtype), min=1.0)]

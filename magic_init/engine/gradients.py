"""One layer's backward through torch autograd, from the small graph its forward recorded."""
from __future__ import annotations

import torch


def layer_gradients(leaves, tops, top_diffs):
    """d(sum_k <top_k, diff_k>)/d leaf for each leaf that requires grad (None otherwise).

    A top that *is* a leaf (an identity layer such as Dropout in TEST) passes its diff on."""
    outputs, grad_outputs, passed = [], [], {}
    for top, diff in zip(tops, top_diffs):
        if not top.requires_grad:
            continue
        if top.grad_fn is None:
            passed[id(top)] = diff if id(top) not in passed else passed[id(top)] + diff
        else:
            outputs.append(top)
            grad_outputs.append(diff.reshape(top.shape))
    wanted = [leaf for leaf in leaves if leaf.requires_grad]
    grads = list(torch.autograd.grad(outputs, wanted, grad_outputs, retain_graph=True,
                                     allow_unused=True)) if outputs else [None] * len(wanted)
    by_leaf = {id(leaf): g for leaf, g in zip(wanted, grads)}
    result = []
    for leaf in leaves:
        grad = by_leaf.get(id(leaf))
        if id(leaf) in passed:
            grad = passed[id(leaf)] if grad is None else grad + passed[id(leaf)]
        result.append(grad if leaf.requires_grad else None)
    return result

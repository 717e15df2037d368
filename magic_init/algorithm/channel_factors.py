"""Algorithm 2 with one factor per convolution output channel: exact rescaling of pretrained models.

The paper's Algorithm 2 gives each layer k one factor Δ_k. Where the net must keep its function
(``--load``, paper §4.3), a residual block a-b-c added to the trunk must give c the trunk's factor,
so Δ_a·Δ_b·Δ_c is fixed and, with C̃_k ∝ Δ_src²/Δ_k², so is log C̃_a + log C̃_b + log C̃_c: no
per-layer factors can bring the block's rates closer than that sum allows.

Per-channel factors keep the function too. Multiply output channel i of convolution k (row i of
W_k, and b_k(i)) by e^{u_i} and divide every weight column that reads channel i by it: through
ReLU, pooling, Dropout, Split and Concat (positively homogeneous per channel,
``scale_graph.ChannelGraph``) the next layers see exactly what they saw. With u_i on the rows and v_j
the factor the column's input channel carries,

    W(i, j) ← W(i, j)·e^{u_i − v_j},   b(i) ← b(i)·e^{u_i},   ∂ℓ/∂W(i, j) ← ∂ℓ/∂W(i, j)·e^{v_j − u_i},

so from one measurement of G²(i, j) = Σ_taps E[(∂ℓ/∂W(i, j))²] (``RateMeter(rows=...)``) and the
weights' W²(i, j), the gradient change rate of Eq. (3) (``rates.LayerRates``, "gradient") after any
such rescaling is exact, with no re-measurement:

    C̃_k = mean_j √( Σ_i G²(i, j)·e^{2(v_j − u_i)} · |W_k| / (N·taps·Σ_{i,j} W²(i, j)·e^{2(u_i − v_j)}) ).

(The net's output keeps its factor, 1: its units are held at u = 0, so ∂ℓ/∂z_N is unchanged.)
We choose u by minimizing the spread of the log rates plus a small penalty on how far a layer's
channel factors spread around their mean,

    F(u) = Σ_k (log C̃_k − mean_k log C̃_k)² + λ·Σ_k mean_{i∈k} (u_i − ū_k)²,

with L-BFGS (``optimize.lbfgs``) and F's gradient in closed form, in two stages that both stop when
every |log C̃_k − mean| < tol (or F stalls): first over one factor per group of tied layers (u_i = z_g
for every channel of the group: the paper's per-layer Algorithm 2, solved exactly; it is all a chain
needs), then, from there, over every free unit. Without the penalty the many more channels than
layers leave F's minimum far from unique, and the search wanders to factors that equalize a layer's
mean rate by making some channels much faster than others; with it, channel factors differ only as
much as equal layer rates need. Layers other than convolutions
(linear, transposed-convolution and diagonal layers) keep one factor for all their rows, so only their per-column
statistics are needed.
"""
from __future__ import annotations

import numpy as np

from magic_init.algorithm.description import describe
from magic_init.algorithm.optimize import lbfgs
from magic_init.algorithm.rates import check_factors, row_column_norms, scale_columns
from magic_init.algorithm.scale_graph import find_root


#: λ of the penalty on the spread of a layer's channel factors (see the module docstring).
SMOOTH = 0.01


class _Terms:
    """One layer's statistics for F: G², W² over (row, column of its group), the variable index of
    each row and of each entry's column (-1: fixed at 0), and the entries' global column index."""

    def __init__(self, g2, w2, row_var, col_var, col_index, columns, const):
        self.g2, self.w2, self.row_var, self.col_var = g2, w2, row_var, col_var
        self.col_index, self.columns, self.const = col_index, columns, const
        self.single = col_index.shape[0] == 1 or bool(np.all(col_index == col_index[:1]))


def _take(x, index):
    """x[index], 0 where index is -1."""
    if not len(x):
        return np.zeros(np.shape(index))
    return np.where(index >= 0, x[np.maximum(index, 0)], 0.0)


class ChannelFactors:
    """The per-unit log-factors u of Algorithm 2 on a ``ChannelGraph``, for layers measured by a
    ``RateMeter`` whose ``rows`` include the graph's per-channel layers.

    Args:
        net: the net (its weights are read, and written by ``apply``).
        graph: the ChannelGraph (units, ties, held channels).
        layers: LayerRates per graph layer, in graph order.
    """

    def __init__(self, net, graph, layers, smooth=SMOOTH):
        self.net, self.graph, self.layers, self.smooth = net, graph, layers, smooth
        roots = np.array([graph.group(u) for u in range(len(graph.unit_layer))], dtype=int)
        fixed = set(roots[graph.unit_pinned()].tolist())
        for src in graph.outputs:            # the net's output keeps its scale
            if src is not None:
                fixed.update(roots[src[src >= 0]].tolist())
        free = sorted(set(roots.tolist()) - fixed)
        index = {root: i for i, root in enumerate(free)}
        self.unit_var = np.array([index.get(r, -1) for r in roots], dtype=int)
        self.size = len(free)
        self.layer_of_var = self._layer_groups(roots, free, fixed)
        self.terms = [self._terms(k, rates) for k, rates in enumerate(layers)]
        #: The layers F equalizes: those with a free channel or column and a defined rate.
        self.fitted = [k for k, rates in enumerate(layers) if graph.held(k) is None]
        self._last = (None, None)

    def _layer_groups(self, roots, free, fixed):
        """Per free unit, the index of its per-layer group (-1 where that group holds a fixed unit):
        layers are grouped when any of their units are tied (the ScaleGraph's groups), so that
        x = z[layer_of_var] is the per-layer rescaling with group factors z."""
        parent = list(range(len(self.graph.units)))

        def find(layer):
            return find_root(parent, layer)

        owner = {}
        for unit, root in enumerate(roots.tolist()):
            layer = int(self.graph.unit_layer[unit])
            if root in owner:
                parent[find(layer)] = find(owner[root])
            else:
                owner[root] = layer
        held = {find(int(self.graph.unit_layer[u])) for u, r in enumerate(roots.tolist()) if r in fixed}
        groups = {}
        result = np.full(len(free), -1, dtype=int)
        for i, root in enumerate(free):
            group = find(owner[root])
            if group not in held:
                result[i] = groups.setdefault(group, len(groups))
        self.layer_groups = len(groups)
        return result

    def _terms(self, k, rates):
        weight = self.net.params[rates.name][0].data
        src = self.graph.columns[rates.name]
        col_var = np.where(src >= 0, self.unit_var[np.maximum(src, 0)], -1)
        const = weight.size / float(rates.rows * rates.taps)
        units = self.graph.units[k]
        if len(units) > 1:                   # a convolution with one factor per output channel
            rows, per_group = weight.shape[0], weight.shape[1]
            col_index = (np.arange(rows) // (rows // rates.group))[:, None] * per_group + np.arange(per_group)[None, :]
            return _Terms(rates.row_g2, row_column_norms(weight), self.unit_var[units], col_var, col_index,
                          len(src), const)
        columns = len(rates.col_g2)
        return _Terms(rates.col_g2[None, :], rates.col_w2[None, :], self.unit_var[units], col_var,
                      np.arange(columns)[None, :], columns, const)

    def _layer(self, term, x):
        """log C̃_k and its gradient over x, as (value, (row vars, ∂/∂u), (column vars, ∂/∂v))."""
        u = _take(x, term.row_var)
        v = _take(x, term.col_var)
        index = term.col_index[:1] if term.single else term.col_index
        e = np.exp(2.0 * (v[index] - u[:, None]))
        a, b = term.g2 * e, term.w2 / e
        if term.single:
            n = a.sum(axis=0)
            b_col = b.sum(axis=0)
        else:
            n = np.bincount(term.col_index.ravel(), a.ravel(), minlength=term.columns)
            b_col = np.bincount(term.col_index.ravel(), b.ravel(), minlength=term.columns)
        total = max(float(b.sum()), 1e-300)
        r = np.sqrt(n * term.const / total)
        c = float(r.mean())
        if not c > 0:                        # a zero rate (held layers only) or an overflowed trial point
            return (-np.inf if c == 0 else np.nan), np.zeros(len(u)), np.zeros(term.columns)
        omega = r / (2.0 * c * len(r))
        ratio = np.divide(omega, n, out=np.zeros_like(omega), where=n > 0)
        d_u = -2.0 * (a * ratio[index]).sum(axis=1) - omega.sum() * 2.0 * b.sum(axis=1) / total
        d_v = 2.0 * omega * (n > 0) + omega.sum() * 2.0 * b_col / total
        return np.log(c), d_u, d_v

    def log_rates(self, x):
        """log C̃_k of every layer after the rescaling x (-inf where the rate is 0)."""
        with np.errstate(all="ignore"):
            return np.array([self._layer(term, x)[0] for term in self.terms])

    def objective(self, x):
        """F(x) = Σ_{k fitted} (log C̃_k − mean)² and its gradient (F is NaN or Inf where a trial
        point overflows: the line search then steps back)."""
        with np.errstate(all="ignore"):
            return self._objective(x)

    def _objective(self, x):
        values, grads = [], []
        for k in self.fitted:
            value, d_u, d_v = self._layer(self.terms[k], x)
            values.append(value)
            grads.append((k, d_u, d_v))
        values = np.array(values)
        dev = values - values.mean()
        self._last = (x.copy(), dev)
        grad = np.zeros(self.size)
        for (k, d_u, d_v), weight in zip(grads, 2.0 * dev):
            term = self.terms[k]
            rows = term.row_var >= 0
            grad += np.bincount(term.row_var[rows], weight * d_u[rows], minlength=self.size)
            cols = term.col_var >= 0
            grad += np.bincount(term.col_var[cols], weight * d_v[cols], minlength=self.size)
        value = float(dev @ dev)
        for term in self.terms:               # λ·mean_i (u_i − ū_k)²: per-layer factors where they suffice
            if len(term.row_var) > 1:
                u = _take(x, term.row_var)
                spread_u = u - u.mean()
                value += self.smooth * float(spread_u @ spread_u) / len(u)
                rows = term.row_var >= 0
                grad += np.bincount(term.row_var[rows], 2.0 * self.smooth * spread_u[rows] / len(u),
                                    minlength=self.size)
        return value, grad

    def solve(self, tol=np.log(1.01), max_iter=300):
        """Log-factors x minimizing F, stopping once every fitted |log C̃_k − mean| < tol.

        Returns:
            (x, iterations).
        """
        if self.size == 0 or len(self.fitted) < 2:
            return np.zeros(self.size), 0

        def equal_enough(x):
            last, dev = self._last
            if not np.array_equal(last, x):      # lbfgs asks about the point it evaluated last
                values = self.log_rates(x)[self.fitted]
                dev = values - values.mean()
            return bool(np.max(np.abs(dev)) < tol)

        spread = self.layer_of_var >= 0

        def per_layer(z):
            value, grad = self.objective(np.where(spread, z[np.maximum(self.layer_of_var, 0)], 0.0))
            return value, np.bincount(self.layer_of_var[spread], grad[spread], minlength=self.layer_groups)

        # one factor per layer first (the paper's Algorithm 2, exact where it can reach equal rates) ...
        x, first = np.zeros(self.size), 0
        if self.layer_groups:
            z, first = lbfgs(per_layer, np.zeros(self.layer_groups), max_iter=max_iter,
                             stop=lambda z: equal_enough(np.where(spread, z[np.maximum(self.layer_of_var, 0)], 0.0)))
            x = np.where(spread, z[np.maximum(self.layer_of_var, 0)], 0.0)
        if equal_enough(x):
            return x, first
        # ... then channel factors from there, where per-layer ones cannot (residual blocks)
        x, second = lbfgs(self.objective, x, max_iter=max_iter, stop=equal_enough)
        return x, first + second

    def row_factors(self, x):
        """e^{u} per output channel (rows) of each layer, in graph order."""
        return [np.exp(_take(x, term.row_var)) for term in self.terms]

    def apply(self, x):
        """Write W(i, j) ← W(i, j)·e^{u_i − v_j}, b(i) ← b(i)·e^{u_i} into the net (a blob shared by
        several layers once, by its owner). Every factor is checked (finite, positive, float32-sized)
        before anything is written."""
        plans = []
        for rates, term in zip(self.layers, self.terms):
            u = np.exp(_take(x, term.row_var))
            columns = np.exp(-_take(x, term.col_var))
            check_factors(rates.name, u)
            check_factors(rates.name, columns)
            plans.append((rates, term, u, columns))
        shared = describe(self.net).shared
        for rates, term, u, columns in plans:
            blobs = self.net.params[rates.name]
            if (rates.name, 0) not in shared:
                weight = blobs[0].data
                if len(u) > 1:
                    factor = u[:, None] * columns[term.col_index]
                    weight *= factor.reshape(factor.shape + (1,) * (weight.ndim - 2)).astype(np.float32)
                else:
                    scale_columns(rates.kind, weight, rates.group, u[0] * columns)
            bias = u.reshape(-1) if len(u) > 1 else u[0]
            for j, blob in enumerate(blobs[1:], 1):
                if (rates.name, j) not in shared:
                    blob.data[...] *= np.reshape(bias, blob.data.shape).astype(np.float32) if len(u) > 1 \
                        else np.float32(bias)

"""The algorithm's named choices and their validation, in one place (outside the algorithm package
and without numpy, so that the CLI's --help reads them without importing the algorithm).

- INIT_KINDS: weight inits before Algorithm 1 (paper §3.3); DATA_DRIVEN_KINDS need the layer's
  input patches, "gaussian" does not.
- RATE_DEFINITIONS: the change rate Algorithm 2 equalizes ("gradient": from the measured weight
  gradients, Eq. 3; "eq4": the paper's factorized Eq. 4).
"""
from __future__ import annotations

INIT_KINDS = ("gaussian", "pca", "zca", "kmeans", "rand")
DATA_DRIVEN_KINDS = ("pca", "zca", "kmeans", "rand")
RATE_DEFINITIONS = ("gradient", "eq4")


def check_init(kind, allowed=INIT_KINDS):
    """Raise ValueError naming the valid kinds when ``kind`` is not in ``allowed``."""
    if kind not in allowed:
        raise ValueError("unknown init %r; choose one of %s" % (kind, ", ".join(allowed)))


def check_rate(definition):
    """Raise ValueError naming the valid definitions when ``definition`` is not one of them."""
    if definition not in RATE_DEFINITIONS:
        raise ValueError("unknown rate definition %r; choose one of %s"
                         % (definition, ", ".join(RATE_DEFINITIONS)))

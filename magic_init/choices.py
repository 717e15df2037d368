"""The algorithm's named choices and their validation, in one place (outside the algorithm package
and without numpy, so that the CLI's --help reads them without importing the algorithm).

- INIT_KINDS: weight inits before Algorithm 1 (paper §3.3); DATA_DRIVEN_KINDS need the layer's
  input patches, "gaussian" does not.
- NORMALIZE_UNITS: Algorithm 1 divides by each channel's σ ("channel", the paper's Alg. 1), by
  the layer's root-mean-square σ ("layer": the drawn rows keep their relative norms), per layer
  for convolutions and per channel for fully connected layers ("conv-layer"), or one of "conv-layer"
  and "channel" chosen by the init and the number of convolutions ("auto", the default).
- RESCALE_FACTORS: what exact rescaling (``--load``) gives its own factor in Algorithm 2: each
  convolution output channel ("channel") or each layer ("layer", the paper's).
- FIRST_ROUND_IMAGES: the images Algorithm 2's first measurement round uses when there are more.
- MEMORY_LIMIT_MB: the memory budget (``--memory-limit``) of one forward+backward pass, the weights
  and their gradients included (``--batch-size auto``), and of the patches the data-driven inits gather.
- MAX_PATCHES: input patches the data-driven inits gather per layer (``--max-patches``).
- WHITENING_RANK: kmeans and rand whiten the leading WHITENING_RANK·m principal directions of a
  layer's patches for m outputs (``--whitening-rank``; the original code whitened m).
- RATE_DEFINITIONS: the change rate Algorithm 2 equalizes ("gradient": from the measured weight
  gradients, Eq. 3; "eq4": the paper's factorized Eq. 4).
"""
from __future__ import annotations

INIT_KINDS = ("gaussian", "pca", "zca", "kmeans", "rand")
DATA_DRIVEN_KINDS = ("pca", "zca", "kmeans", "rand")
RATE_DEFINITIONS = ("gradient", "eq4")
#: What Algorithm 1 scales to unit variance: each output channel (the paper) or the layer as a whole.
NORMALIZE_UNITS = ("auto", "channel", "layer", "conv-layer")
#: The default: "channel" for the data-driven inits; for gaussian rows "conv-layer" on nets with a deep
#: stack of convolutions, "channel" on shallow ones (within_layer.auto_unit; docs/TRAINING.md, sessions
#: 6-7: each wins on the benchmark nets of its kind).
DEFAULT_NORMALIZE = "auto"
RESCALE_FACTORS = ("channel", "layer")
#: MiB: the largest forward+backward pass ``--batch-size auto`` chooses (weights and gradients included), and the patches of
#: pca/zca/kmeans/rand (never held at the same time).
MEMORY_LIMIT_MB = 1024
#: With two or more rounds, Algorithm 2's first measures on the sample's first this many images (one
#: block of rates.RATE_BLOCK): it only has to bring the rates near each other; the last round
#: measures on the whole sample and sets the final scales (0 or None: every round on the whole sample).
FIRST_ROUND_IMAGES = 16
#: Input patches pca/zca/kmeans/rand gather per layer, at most (sampled locations over the whole sample).
MAX_PATCHES = 5000
#: Principal directions kmeans and rand whiten, per output of the layer (``weight_init.kmeans``).
WHITENING_RANK = 2.0


def check_init(kind, allowed=INIT_KINDS):
    """Raise ValueError naming the valid kinds when ``kind`` is not in ``allowed``."""
    if kind not in allowed:
        raise ValueError("unknown init %r; choose one of %s" % (kind, ", ".join(allowed)))


def check_rate(definition):
    """Raise ValueError naming the valid definitions when ``definition`` is not one of them."""
    if definition not in RATE_DEFINITIONS:
        raise ValueError("unknown rate definition %r; choose one of %s"
                         % (definition, ", ".join(RATE_DEFINITIONS)))


def check_normalize(unit):
    """Raise ValueError naming the valid units when ``unit`` is not one of NORMALIZE_UNITS."""
    if unit not in NORMALIZE_UNITS:
        raise ValueError("unknown normalization %r; choose one of %s" % (unit, ", ".join(NORMALIZE_UNITS)))


def check_factors(unit):
    """Raise ValueError naming the valid units when ``unit`` is not one of RESCALE_FACTORS."""
    if unit not in RESCALE_FACTORS:
        raise ValueError("unknown rescaling factors %r; choose one of %s" % (unit, ", ".join(RESCALE_FACTORS)))

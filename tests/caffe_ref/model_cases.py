"""The models/ nets at small inputs (batch 2, the smallest spatial size each architecture allows),
in both phases where they differ (Dropout, BatchNorm)."""
from __future__ import annotations

from .cases import add_case

# (model, input shape, phases). GoogLeNet and ResNet end in a 7x7 average pool: 223 and 195 are the
# smallest heights that still reach it; the fully connected nets accept any size (fc6 fan-in changes).
MODELS = [
    ("tiny", (2, 3, 32, 40), ("test", "train")),
    ("caffenet", (2, 3, 67, 99), ("test", "train")),
    ("vgg16", (2, 3, 32, 48), ("test", "train")),
    ("googlenet", (2, 3, 223, 231), ("test", "train")),
    ("resnet", (2, 3, 195, 203), ("test", "train")),
]

for model, shape, phases in MODELS:
    for phase in phases:
        # Dropout masks come from different RNGs: TRAIN with Dropout is compared up to the first
        # Dropout layer, so its backward (which crosses the mask) is not generated.
        with_dropout = model != "resnet"
        add_case("model_%s_%s" % (model, phase), "models/%s.prototxt" % model, [("data", shape)], phase=phase,
                 backward=not (phase == "train" and with_dropout))

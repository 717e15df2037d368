"""Why ``ours-gaussian`` diverges on the BatchNorm-free ResNet of ``torch_few_labels.py`` (docs/TORCH.md).

Each arm initializes that ResNet (seed s, the same 160 sample images as the benchmark), then trains it
with the benchmark's SGD for ``--steps`` steps (default 150: the divergences happen within 20). Per arm
and seed: the classifier's (``fc``, after global average pooling) weight and bias norms at the init,
the first evaluation at which the loss is not finite, and the test accuracy at the end. The ``+X``
arms change one thing after our gaussian Algorithm 1: ``+kaiming-fc`` redraws the classifier with
Kaiming's normal init and a zero bias, ``+zero-bias`` zeroes every bias.

    python bench/torch_resnet_head.py [--seeds 3] [--steps 150] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch_few_labels as tfl  # noqa: E402

ARMS = ("kaiming", "ours-gaussian", "ours-gaussian+kaiming-fc", "ours-gaussian+zero-bias", "ours-kmeans")


def initialized(arm, seed, sample):
    """The ResNet initialized by ``arm``: a benchmark arm, or ``ours-gaussian`` followed by one change."""
    import torch

    base, _, change = arm.partition("+")
    model, _ = tfl.init_model("resnet", base, seed, sample)
    with torch.no_grad():
        if change == "kaiming-fc":
            torch.nn.init.kaiming_normal_(model.fc.weight)
            model.fc.bias.zero_()
        elif change == "zero-bias":
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
        elif change:
            raise ValueError("unknown change %r" % change)
    return model


def run(arm, seed, steps, data):
    x, y, xt, yt = data
    model = initialized(arm, seed, tfl.sample_of(x, seed))
    fc_norms = (float(model.fc.weight.norm()), float(model.fc.bias.norm()))
    curve = tfl.train(model, x, y, xt, yt, seed, steps=steps, step_at=None, eval_every=5)
    diverged = next((c["iter"] for c in curve[1:] if c["loss"] is None), None)
    return {"arm": arm, "seed": seed, "fc_weight_norm": fc_norms[0], "fc_bias_norm": fc_norms[1],
            "diverged_by_step": diverged, "test_accuracy": None if diverged else curve[-1]["test_accuracy"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    x, y, xt, yt, _, _ = tfl.fashion()
    results = [run(arm, seed, args.steps, (x, y, xt, yt)) for arm in ARMS for seed in range(args.seeds)]
    print("| arm | seed | fc weight norm | fc bias norm | diverged by step | test acc. after %d steps |" % args.steps)
    print("|---|---|---|---|---|---|")
    for r in results:
        print("| %s | %d | %.2f | %.2f | %s | %s |" % (
            r["arm"], r["seed"], r["fc_weight_norm"], r["fc_bias_norm"], r["diverged_by_step"] or "-",
            "%.1f %%" % (100 * r["test_accuracy"]) if r["test_accuracy"] is not None else "-"))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""ResNet-152's deploy prototxt made from ResNet-101's (issue 15's corpus: ResNet-152 is not in the real-nets folder).

He et al.'s ResNet-101 and ResNet-152 differ only in how many bottleneck blocks stages 3 and 4 repeat
(4 and 23 against 8 and 36, Table 1 of the ResNet paper); every block of a stage after its first is
the same layers (``resXbK_branch2a/2b/2c`` with their BatchNorm, Scale and ReLU, the Eltwise sum
``resXbK`` and its ReLU). So stage X's last block is copied under the next block numbers, each copy
reading the previous block's output, and the layers after the stage read the new last block.

    python bench/deeper_resnet.py ../shared/realnets/resnet__ResNet-101-deploy.prototxt OUT.prototxt
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.protobuf import text_format  # noqa: E402

from magic_init.io import read_prototxt  # noqa: E402

#: blocks per stage: ResNet-101 -> ResNet-152
RESNET152_BLOCKS = {3: 8, 4: 36}


def _block_pattern(stage, block):
    """Names of stage ``stage``'s block ``block`` (a, b1, b2, ...): res4b22_branch2a, bn4b22_branch2a, res4b22, ..."""
    return re.compile(r"(?<=[a-z])%db%d(?=_|$)" % (stage, block))


def _last_block(net, stage):
    numbers = [int(m.group(1)) for layer in net.layer for m in [re.fullmatch(r"res%db(\d+)" % stage, layer.name)] if m]
    if not numbers:
        raise ValueError("no block res%db<k> in the net" % stage)
    return max(numbers)


def deepen(net, blocks):
    """Repeat each stage's last block until the stage has ``blocks[stage]`` blocks (a, b1, ..., b(n-1)).

    Args:
        net: a ResNet NetParameter (changed in place).
        blocks: ``{stage: total blocks}``.

    Returns:
        ``net``.
    """
    for stage, total in blocks.items():
        last = _last_block(net, stage)
        pattern = _block_pattern(stage, last)
        template = [layer for layer in net.layer if pattern.search(layer.name)]
        end = max(i for i, layer in enumerate(net.layer) if pattern.search(layer.name)) + 1
        layers = list(net.layer)
        copies = []
        for block in range(last + 1, total):
            for layer in template:
                copy = type(layer)()
                copy.CopyFrom(layer)
                rename = lambda text: pattern.sub("%db%d" % (stage, block), text)  # noqa: E731
                copy.name = rename(copy.name)
                copy.top[:] = [rename(t) for t in copy.top]
                copy.bottom[:] = ["res%db%d" % (stage, block - 1) if b == "res%db%d" % (stage, last - 1) else rename(b)
                                  for b in copy.bottom]
                copies.append(copy)
        output, new_output = "res%db%d" % (stage, last), "res%db%d" % (stage, total - 1)
        for layer in layers[end:]:
            layer.bottom[:] = [new_output if b == output else b for b in layer.bottom]
        del net.layer[:]
        net.layer.extend(layers[:end] + copies + layers[end:])
    return net


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("resnet101")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    net = deepen(read_prototxt(args.resnet101), RESNET152_BLOCKS)
    net.name = "ResNet-152"
    Path(args.out).write_text(text_format.MessageToString(net))


if __name__ == "__main__":
    main()

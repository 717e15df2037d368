"""Write the reference prototxts in models/ (CaffeNet, VGG-16, GoogLeNet, ResNet-18, tiny).

Run ``PYTHONPATH=. python models/make_models.py`` to regenerate them; the .prototxt files are committed, so
nobody needs to run this to use them. The nets are written from the published architectures
(Krizhevsky et al. 2012 as in BVLC's bvlc_reference_caffenet, Simonyan & Zisserman 2015 config D,
Szegedy et al. 2015 Table 1, He et al. 2016 ResNet-18 with Caffe's Conv -> BatchNorm -> Scale
convention), not copied from model-zoo files.

Fillers: ``gaussian std 0.01`` weights and ``constant 0`` biases unless the net says otherwise
(CaffeNet keeps BVLC's reference fillers, so a "Caffe fillers" baseline exists).
"""
from __future__ import annotations

import os

from google.protobuf import text_format

from magic_init.proto import caffe_pb2

HERE = os.path.dirname(os.path.abspath(__file__))


class NetWriter:
    """Append layers to a NetParameter with the few conventions every net here shares."""

    def __init__(self, name, input_shape):
        self.net = caffe_pb2.NetParameter(name=name)
        layer = self.layer("data", "Input", [], ["data"])
        layer.input_param.shape.add(dim=input_shape)

    def layer(self, name, type_, bottoms, tops):
        layer = self.net.layer.add(name=name, type=type_)
        layer.bottom.extend(bottoms)
        layer.top.extend(tops)
        return layer

    def conv(self, name, bottom, num_output, kernel, stride=1, pad=0, group=1,
             std=0.01, bias=0.0, bias_term=True, top=None):
        """Convolution with weights ~ N(0, std^2) and constant biases (or none)."""
        layer = self.layer(name, "Convolution", [bottom], [top or name])
        layer.param.add(lr_mult=1, decay_mult=1)
        if bias_term:
            layer.param.add(lr_mult=2, decay_mult=0)
        p = layer.convolution_param
        p.num_output = num_output
        p.kernel_size.append(kernel)
        if pad:
            p.pad.append(pad)
        if stride != 1:
            p.stride.append(stride)
        if group != 1:
            p.group = group
        p.weight_filler.type = "gaussian"
        p.weight_filler.std = std
        if bias_term:
            p.bias_filler.type = "constant"
            p.bias_filler.value = bias
        else:
            p.bias_term = False
        return layer

    def fc(self, name, bottom, num_output, std=0.01, bias=0.0):
        layer = self.layer(name, "InnerProduct", [bottom], [name])
        layer.param.add(lr_mult=1, decay_mult=1)
        layer.param.add(lr_mult=2, decay_mult=0)
        p = layer.inner_product_param
        p.num_output = num_output
        p.weight_filler.type = "gaussian"
        p.weight_filler.std = std
        p.bias_filler.type = "constant"
        p.bias_filler.value = bias
        return layer

    def relu(self, name, blob):
        return self.layer(name, "ReLU", [blob], [blob])

    def pool(self, name, bottom, method, kernel, stride, pad=0, top=None):
        layer = self.layer(name, "Pooling", [bottom], [top or name])
        p = layer.pooling_param
        p.pool = getattr(caffe_pb2.PoolingParameter, method)
        p.kernel_size = kernel
        p.stride = stride
        if pad:
            p.pad = pad
        return layer

    def lrn(self, name, bottom, local_size=5, alpha=1e-4, beta=0.75):
        layer = self.layer(name, "LRN", [bottom], [name])
        p = layer.lrn_param
        p.local_size, p.alpha, p.beta = local_size, alpha, beta
        return layer

    def dropout(self, name, blob, ratio=0.5):
        layer = self.layer(name, "Dropout", [blob], [blob])
        layer.dropout_param.dropout_ratio = ratio
        return layer

    def softmax(self, name, bottom):
        return self.layer(name, "Softmax", [bottom], [name])

    def write(self, filename):
        text = text_format.MessageToString(self.net)
        with open(os.path.join(HERE, filename), "w") as f:
            f.write(text)


def caffenet():
    """bvlc_reference_caffenet's architecture and reference fillers, deploy style (10x3x227x227)."""
    w = NetWriter("CaffeNet", [10, 3, 227, 227])
    w.conv("conv1", "data", 96, 11, stride=4)
    w.relu("relu1", "conv1")
    w.pool("pool1", "conv1", "MAX", 3, 2)
    w.lrn("norm1", "pool1")
    w.conv("conv2", "norm1", 256, 5, pad=2, group=2, bias=1.0)
    w.relu("relu2", "conv2")
    w.pool("pool2", "conv2", "MAX", 3, 2)
    w.lrn("norm2", "pool2")
    w.conv("conv3", "norm2", 384, 3, pad=1)
    w.relu("relu3", "conv3")
    w.conv("conv4", "conv3", 384, 3, pad=1, group=2, bias=1.0)
    w.relu("relu4", "conv4")
    w.conv("conv5", "conv4", 256, 3, pad=1, group=2, bias=1.0)
    w.relu("relu5", "conv5")
    w.pool("pool5", "conv5", "MAX", 3, 2)
    w.fc("fc6", "pool5", 4096, std=0.005, bias=1.0)
    w.relu("relu6", "fc6")
    w.dropout("drop6", "fc6")
    w.fc("fc7", "fc6", 4096, std=0.005, bias=1.0)
    w.relu("relu7", "fc7")
    w.dropout("drop7", "fc7")
    w.fc("fc8", "fc7", 1000, std=0.01, bias=0.0)
    w.softmax("prob", "fc8")
    w.write("caffenet.prototxt")


def vgg16():
    """VGG-16 (configuration D): 13 3x3 convolutions in 5 stages, 3 fully connected layers."""
    w = NetWriter("VGG_ILSVRC_16_layers", [10, 3, 224, 224])
    bottom = "data"
    for stage, (width, depth) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], 1):
        for i in range(1, depth + 1):
            name = "conv%d_%d" % (stage, i)
            w.conv(name, bottom, width, 3, pad=1)
            w.relu("relu%d_%d" % (stage, i), name)
            bottom = name
        w.pool("pool%d" % stage, bottom, "MAX", 2, 2)
        bottom = "pool%d" % stage
    for name, n in (("fc6", 4096), ("fc7", 4096)):
        w.fc(name, bottom, n)
        w.relu("relu" + name[2:], name)
        w.dropout("drop" + name[2:], name)
        bottom = name
    w.fc("fc8", bottom, 1000)
    w.softmax("prob", "fc8")
    w.write("vgg16.prototxt")


def inception(w, name, bottom, n1, n3r, n3, n5r, n5, npool):
    """One inception module: 1x1 | 1x1->3x3 | 1x1->5x5 | 3x3 max pool->1x1, concatenated."""
    branches = []
    for suffix, width, kernel, src in (("1x1", n1, 1, bottom), ("3x3_reduce", n3r, 1, bottom),
                                       ("3x3", n3, 3, name + "/3x3_reduce"),
                                       ("5x5_reduce", n5r, 1, bottom), ("5x5", n5, 5, name + "/5x5_reduce")):
        layer_name = "%s/%s" % (name, suffix)
        w.conv(layer_name, src, width, kernel, pad=kernel // 2, bias=0.2)
        w.relu("%s/relu_%s" % (name, suffix), layer_name)
        if "reduce" not in suffix:
            branches.append(layer_name)
    w.pool(name + "/pool", bottom, "MAX", 3, 1, pad=1)
    w.conv(name + "/pool_proj", name + "/pool", npool, 1, bias=0.2)
    w.relu(name + "/relu_pool_proj", name + "/pool_proj")
    w.layer(name + "/output", "Concat", branches + [name + "/pool_proj"], [name + "/output"])
    return name + "/output"


def googlenet():
    """GoogLeNet (Inception v1, Szegedy et al. 2015 Table 1), main classifier only, 224 input."""
    w = NetWriter("GoogleNet", [10, 3, 224, 224])
    w.conv("conv1/7x7_s2", "data", 64, 7, stride=2, pad=3, bias=0.2)
    w.relu("conv1/relu_7x7", "conv1/7x7_s2")
    w.pool("pool1/3x3_s2", "conv1/7x7_s2", "MAX", 3, 2)
    w.lrn("pool1/norm1", "pool1/3x3_s2")
    w.conv("conv2/3x3_reduce", "pool1/norm1", 64, 1, bias=0.2)
    w.relu("conv2/relu_3x3_reduce", "conv2/3x3_reduce")
    w.conv("conv2/3x3", "conv2/3x3_reduce", 192, 3, pad=1, bias=0.2)
    w.relu("conv2/relu_3x3", "conv2/3x3")
    w.lrn("conv2/norm2", "conv2/3x3")
    w.pool("pool2/3x3_s2", "conv2/norm2", "MAX", 3, 2)
    x = inception(w, "inception_3a", "pool2/3x3_s2", 64, 96, 128, 16, 32, 32)
    x = inception(w, "inception_3b", x, 128, 128, 192, 32, 96, 64)
    w.pool("pool3/3x3_s2", x, "MAX", 3, 2)
    x = inception(w, "inception_4a", "pool3/3x3_s2", 192, 96, 208, 16, 48, 64)
    x = inception(w, "inception_4b", x, 160, 112, 224, 24, 64, 64)
    x = inception(w, "inception_4c", x, 128, 128, 256, 24, 64, 64)
    x = inception(w, "inception_4d", x, 112, 144, 288, 32, 64, 64)
    x = inception(w, "inception_4e", x, 256, 160, 320, 32, 128, 128)
    w.pool("pool4/3x3_s2", x, "MAX", 3, 2)
    x = inception(w, "inception_5a", "pool4/3x3_s2", 256, 160, 320, 32, 128, 128)
    x = inception(w, "inception_5b", x, 384, 192, 384, 48, 128, 128)
    w.pool("pool5/7x7_s1", x, "AVE", 7, 1)
    w.dropout("pool5/drop_7x7_s1", "pool5/7x7_s1", ratio=0.4)
    w.fc("loss3/classifier", "pool5/7x7_s1", 1000)
    w.softmax("prob", "loss3/classifier")
    w.write("googlenet.prototxt")


def conv_bn(w, name, bottom, num_output, kernel, stride=1, pad=0, relu=True):
    """Caffe's ResNet unit: Convolution (no bias) -> BatchNorm -> Scale (with bias) [-> ReLU].

    Layer names follow He et al.'s Caffe release: res2a_branch2a, bn2a_branch2a, scale2a_branch2a.
    """
    w.conv("res" + name, bottom, num_output, kernel, stride=stride, pad=pad, bias_term=False)
    bn = w.layer("bn" + name, "BatchNorm", ["res" + name], ["res" + name])
    for _ in range(3):
        bn.param.add(lr_mult=0, decay_mult=0)
    scale = w.layer("scale" + name, "Scale", ["res" + name], ["res" + name])
    scale.scale_param.bias_term = True
    if relu:
        w.relu("res%s_relu" % name, "res" + name)
    return "res" + name


def basic_block(w, name, bottom, num_output, stride, project):
    """ResNet-18 block: two 3x3 conv-BN units plus identity (or 1x1 projection) shortcut, SUM, ReLU."""
    shortcut = bottom
    if project:
        shortcut = conv_bn(w, name + "_branch1", bottom, num_output, 1, stride=stride, relu=False)
    x = conv_bn(w, name + "_branch2a", bottom, num_output, 3, stride=stride, pad=1)
    x = conv_bn(w, name + "_branch2b", x, num_output, 3, pad=1, relu=False)
    w.layer("res" + name, "Eltwise", [shortcut, x], ["res" + name])
    w.relu("res%s_relu" % name, "res" + name)
    return "res" + name


def resnet18():
    """ResNet-18 (He et al. 2016) in Caffe's Conv -> BatchNorm -> Scale -> ReLU convention, 224 input."""
    w = NetWriter("ResNet-18", [10, 3, 224, 224])
    w.conv("conv1", "data", 64, 7, stride=2, pad=3, bias_term=False)
    bn = w.layer("bn_conv1", "BatchNorm", ["conv1"], ["conv1"])
    for _ in range(3):
        bn.param.add(lr_mult=0, decay_mult=0)
    w.layer("scale_conv1", "Scale", ["conv1"], ["conv1"]).scale_param.bias_term = True
    w.relu("conv1_relu", "conv1")
    w.pool("pool1", "conv1", "MAX", 3, 2)
    x = "pool1"
    for stage, width in zip(range(2, 6), (64, 128, 256, 512)):
        x = basic_block(w, "%da" % stage, x, width, 1 if stage == 2 else 2, project=stage != 2)
        x = basic_block(w, "%db" % stage, x, width, 1, project=False)
    w.pool("pool5", x, "AVE", 7, 1)
    w.fc("fc1000", "pool5", 1000)
    w.softmax("prob", "fc1000")
    w.write("resnet.prototxt")


def tiny():
    """A small CaffeNet-like net for fast tests: conv-relu-pool-lrn-conv-relu-pool-fc-relu-dropout-fc."""
    w = NetWriter("Tiny", [10, 3, 32, 32])
    w.conv("conv1", "data", 16, 5, pad=2)
    w.relu("relu1", "conv1")
    w.pool("pool1", "conv1", "MAX", 3, 2)
    w.lrn("norm1", "pool1", local_size=3)
    w.conv("conv2", "norm1", 32, 5, pad=2)
    w.relu("relu2", "conv2")
    w.pool("pool2", "conv2", "MAX", 3, 2)
    w.fc("fc3", "pool2", 64)
    w.relu("relu3", "fc3")
    w.dropout("drop3", "fc3")
    w.fc("fc4", "fc3", 10)
    w.write("tiny.prototxt")


if __name__ == "__main__":
    caffenet()
    vgg16()
    googlenet()
    resnet18()
    tiny()

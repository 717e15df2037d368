"""Write the reference prototxts in models/ (CaffeNet, VGG-16, GoogLeNet, ResNet-18, tiny, small5, and the
Fashion-MNIST benchmark nets of bench/train_few_labels.py).

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
        """``input_shape`` None: no Input layer (the caller adds data layers)."""
        self.net = caffe_pb2.NetParameter(name=name)
        if input_shape is not None:
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


def caffenet_layers(w, conv1, widths, fc_widths, reference_fillers):
    """CaffeNet's layer layout: conv1 (kernel, stride, pad) - relu - pool - LRN - conv2 (5x5, groups 2)
    - relu - pool - LRN - conv3 - conv4 (groups 2) - conv5 (groups 2), 3x3, each with relu - pool5 -
    fc6 - fc7 (relu, dropout 0.5) - fc8. ``widths``: conv1-conv5 outputs; ``reference_fillers``:
    bvlc_reference_caffenet's (biases 1 in conv2/4/5 and fc6/7, fc6/7 std 0.005), else std 0.01, bias 0."""
    one, fc_std = (1.0, 0.005) if reference_fillers else (0.0, 0.01)
    kernel, stride, pad = conv1
    w.conv("conv1", "data", widths[0], kernel, stride=stride, pad=pad)
    w.relu("relu1", "conv1")
    w.pool("pool1", "conv1", "MAX", 3, 2)
    w.lrn("norm1", "pool1")
    w.conv("conv2", "norm1", widths[1], 5, pad=2, group=2, bias=one)
    w.relu("relu2", "conv2")
    w.pool("pool2", "conv2", "MAX", 3, 2)
    w.lrn("norm2", "pool2")
    w.conv("conv3", "norm2", widths[2], 3, pad=1)
    w.relu("relu3", "conv3")
    w.conv("conv4", "conv3", widths[3], 3, pad=1, group=2, bias=one)
    w.relu("relu4", "conv4")
    w.conv("conv5", "conv4", widths[4], 3, pad=1, group=2, bias=one)
    w.relu("relu5", "conv5")
    w.pool("pool5", "conv5", "MAX", 3, 2)
    for name, bottom, width in (("fc6", "pool5", fc_widths[0]), ("fc7", "fc6", fc_widths[1])):
        w.fc(name, bottom, width, std=fc_std, bias=one)
        w.relu("relu" + name[2:], name)
        w.dropout("drop" + name[2:], name)
    w.fc("fc8", "fc7", fc_widths[2], std=0.01, bias=0.0)
    return "fc8"


def caffenet():
    """bvlc_reference_caffenet's architecture and reference fillers, deploy style (10x3x227x227)."""
    w = NetWriter("CaffeNet", [10, 3, 227, 227])
    caffenet_layers(w, (11, 4, 0), (96, 256, 384, 384, 256), (4096, 4096, 1000), reference_fillers=True)
    w.softmax("prob", "fc8")
    w.write("caffenet.prototxt")


def vgg_stages(w, stages):
    """VGG's convolutional part: per stage (width, depth), ``depth`` 3x3 convolutions (pad 1) with
    relu, then a 2x2 max pool; returns the last pool's name."""
    bottom = "data"
    for stage, (width, depth) in enumerate(stages, 1):
        for i in range(1, depth + 1):
            name = "conv%d_%d" % (stage, i)
            w.conv(name, bottom, width, 3, pad=1)
            w.relu("relu%d_%d" % (stage, i), name)
            bottom = name
        w.pool("pool%d" % stage, bottom, "MAX", 2, 2)
        bottom = "pool%d" % stage
    return bottom


def vgg16():
    """VGG-16 (configuration D): 13 3x3 convolutions in 5 stages, 3 fully connected layers."""
    w = NetWriter("VGG_ILSVRC_16_layers", [10, 3, 224, 224])
    bottom = vgg_stages(w, [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)])
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


def small5():
    """The speed benchmark's small net (bench/vs_original.py): 5 affine layers on 16x3x64x64,
    conv-relu-pool, conv-relu-pool, conv-relu, fc-relu, fc."""
    w = NetWriter("Small5", [16, 3, 64, 64])
    w.conv("conv1", "data", 32, 5, pad=2)
    w.relu("relu1", "conv1")
    w.pool("pool1", "conv1", "MAX", 3, 2)
    w.conv("conv2", "pool1", 64, 5, pad=2)
    w.relu("relu2", "conv2")
    w.pool("pool2", "conv2", "MAX", 3, 2)
    w.conv("conv3", "pool2", 64, 3, pad=1)
    w.relu("relu3", "conv3")
    w.fc("fc4", "conv3", 256)
    w.relu("relu4", "fc4")
    w.fc("fc5", "fc4", 10)
    w.write("small5.prototxt")


def fashion_data(w):
    """Fashion-MNIST ImageData layers: TRAIN shuffled batches of 32, TEST batches of 100; gray, pixels
    scaled by 1/256; list files relative to Caffe's working folder (the bench writes absolute ones)."""
    for phase, source, batch in ((caffe_pb2.TRAIN, "train", 32), (caffe_pb2.TEST, "test", 100)):
        layer = w.layer("data", "ImageData", [], ["data", "label"])
        layer.include.add(phase=phase)
        layer.transform_param.scale = 1.0 / 256
        p = layer.image_data_param
        p.source, p.root_folder, p.batch_size, p.is_color = "fashion/%s.txt" % source, "fashion/", batch, False
        p.shuffle = phase == caffe_pb2.TRAIN


def fashion_caffenet_body(w):
    """CaffeNet's layout for 28x28 gray input (5x5 conv1, stride 1; narrower layers; 10 classes)."""
    return caffenet_layers(w, (5, 1, 2), (24, 48, 64, 64, 48), (256, 256, 10), reference_fillers=False)


def fashion_vgg_body(w):
    """VGG's layout for 28x28 gray input: 8 3x3 convolutions in 4 stages of two (16, 32, 64, 64
    channels), 2x2 max pools, no LRN, fc5 (128) with dropout 0.5, fc6 (10 classes)."""
    bottom = vgg_stages(w, [(16, 2), (32, 2), (64, 2), (64, 2)])
    w.fc("fc5", bottom, 128)
    w.relu("relu5", "fc5")
    w.dropout("drop5", "fc5")
    w.fc("fc6", "fc5", 10)
    return "fc6"


def fashion_net(stem, title, body):
    """models/<stem>_deploy.prototxt (Input 32x1x28x28) and models/<stem>_train.prototxt (ImageData,
    SoftmaxWithLoss, TEST-phase Accuracy) with the same layer names."""
    deploy = NetWriter(title, [32, 1, 28, 28])
    body(deploy)
    deploy.write(stem + "_deploy.prototxt")
    train = NetWriter(title, None)
    fashion_data(train)
    scores = body(train)
    train.layer("loss", "SoftmaxWithLoss", [scores, "label"], ["loss"])
    train.layer("accuracy", "Accuracy", [scores, "label"], ["accuracy"]).include.add(phase=caffe_pb2.TEST)
    train.write(stem + "_train.prototxt")


if __name__ == "__main__":
    caffenet()
    vgg16()
    googlenet()
    resnet18()
    tiny()
    small5()
    fashion_net("fashion_caffenet", "FashionCaffeNet", fashion_caffenet_body)
    fashion_net("fashion_vgg", "FashionVGG", fashion_vgg_body)

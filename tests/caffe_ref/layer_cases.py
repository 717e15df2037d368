"""One or more cases per Caffe layer type, with asymmetric shapes (N != C != H != W, pad_h != pad_w,
stride_h != stride_w) so that a swapped axis cannot pass unnoticed."""
from __future__ import annotations

from .cases import add_case, input_layer, layer, single_layer_case

X = [("x", (2, 3, 5, 7))]


def vision():
    single_layer_case("conv_asym", "Convolution", "convolution_param { num_output: 4 kernel_h: 3 kernel_w: 2 "
                      "pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1 }", [("x", (2, 3, 7, 6))])
    single_layer_case("conv_group_dilation", "Convolution", "convolution_param { num_output: 9 kernel_size: 3 "
                      "group: 3 dilation: 2 dilation: 1 pad: 2 pad: 1 stride: 1 }", [("x", (2, 6, 9, 8))])
    single_layer_case("conv_nobias_repeated", "Convolution", "convolution_param { num_output: 5 bias_term: false "
                      "kernel_size: 3 kernel_size: 2 pad: 1 pad: 0 stride: 1 stride: 2 }", [("x", (3, 2, 6, 7))])
    # stride > kernel on one axis and windows that leave input rows unused: the space-to-depth dx
    single_layer_case("conv_group_stride_gt_kernel", "Convolution", "convolution_param { num_output: 4 "
                      "group: 2 kernel_h: 3 kernel_w: 2 stride_h: 3 stride_w: 3 pad_h: 1 pad_w: 2 }",
                      [("x", (2, 4, 9, 8))])
    single_layer_case("deconv_asym", "Deconvolution", "convolution_param { num_output: 4 kernel_h: 3 kernel_w: 2 "
                      "pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1 }", [("x", (2, 3, 4, 5))])
    single_layer_case("deconv_group_nobias", "Deconvolution", "convolution_param { num_output: 6 group: 2 "
                      "bias_term: false kernel_size: 4 stride: 2 pad: 1 }", [("x", (2, 4, 3, 5))])
    single_layer_case("ip_axis1", "InnerProduct", "inner_product_param { num_output: 6 }", [("x", (2, 3, 4, 5))])
    single_layer_case("ip_axis2", "InnerProduct", "inner_product_param { num_output: 6 axis: 2 }",
                      [("x", (2, 3, 4, 5))])
    single_layer_case("ip_nobias_axis0", "InnerProduct", "inner_product_param { num_output: 3 bias_term: false "
                      "axis: 0 }", [("x", (4, 2, 3))])
    single_layer_case("deconv_dilation", "Deconvolution", "convolution_param { num_output: 3 kernel_size: 3 "
                      "dilation: 2 stride: 2 pad: 1 }", [("x", (2, 2, 4, 3))])
    single_layer_case("pool_max_stride_gt_kernel", "Pooling", "pooling_param { pool: MAX kernel_size: 2 "
                      "stride_h: 3 stride_w: 2 pad_h: 1 pad_w: 0 }", [("x", (2, 3, 8, 7))])
    single_layer_case("pool_ave_pad_kernel_minus_one", "Pooling", "pooling_param { pool: AVE kernel_size: 3 "
                      "pad: 2 stride: 2 }", [("x", (2, 3, 5, 4))])
    single_layer_case("lrn_across_few_channels", "LRN", "lrn_param { local_size: 7 alpha: 0.5 beta: 0.9 }",
                      [("x", (3, 2, 4, 5))])
    single_layer_case("ip_transpose", "InnerProduct", "inner_product_param { num_output: 6 transpose: true }",
                      [("x", (3, 4, 5))])
    single_layer_case("lrn_across", "LRN", "lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 k: 2 }",
                      [("x", (2, 7, 3, 4))])
    single_layer_case("lrn_within", "LRN", "lrn_param { local_size: 3 alpha: 0.3 beta: 0.6 "
                      "norm_region: WITHIN_CHANNEL }", [("x", (2, 3, 5, 6))])
    for method in ("MAX", "AVE"):
        m = method.lower()
        single_layer_case("pool_%s_asym" % m, "Pooling", "pooling_param { pool: %s kernel_h: 3 kernel_w: 2 "
                          "stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 }" % method, [("x", (2, 3, 7, 6))])
        # H: ceil((5+2-2)/2)+1 = 4 but the last window starts in the padding -> 3; W: overhang.
        single_layer_case("pool_%s_ceil_last_window" % m, "Pooling", "pooling_param { pool: %s kernel_h: 2 "
                          "kernel_w: 3 stride: 2 pad: 1 }" % method, [("x", (2, 3, 5, 6))])
        single_layer_case("pool_%s_global" % m, "Pooling", "pooling_param { pool: %s global_pooling: true }"
                          % method, X)


def neurons():
    single_layer_case("relu", "ReLU", "", X)
    single_layer_case("relu_leaky", "ReLU", "relu_param { negative_slope: 0.1 }", X)
    single_layer_case("prelu_channelwise", "PReLU", "", X)
    single_layer_case("prelu_shared", "PReLU", "prelu_param { channel_shared: true }", X)
    single_layer_case("elu", "ELU", "elu_param { alpha: 0.5 }", X)
    single_layer_case("sigmoid", "Sigmoid", "", X)
    single_layer_case("tanh", "TanH", "", X)
    single_layer_case("absval", "AbsVal", "", X)
    single_layer_case("power", "Power", "power_param { power: 3 scale: -0.7 shift: 0.3 }", X)
    single_layer_case("power_sqrt", "Power", "power_param { power: 0.5 scale: 2 shift: 0.1 }", X,
                      fill={"x": "positive"})
    single_layer_case("bnll", "BNLL", "", X)
    single_layer_case("dropout_test", "Dropout", "dropout_param { dropout_ratio: 0.3 }", X)
    single_layer_case("dropout_train", "Dropout", "dropout_param { dropout_ratio: 0.3 }",
                      [("x", (4, 5, 30, 40))], phase="train")


def normalization():
    single_layer_case("batchnorm_test_global", "BatchNorm", "batch_norm_param { eps: 0.001 }", X)
    single_layer_case("batchnorm_test_batchstats", "BatchNorm", "batch_norm_param { use_global_stats: false }",
                      [("x", (3, 4, 2, 5))])
    single_layer_case("batchnorm_train", "BatchNorm", "", [("x", (3, 4, 2, 5))], phase="train")
    single_layer_case("batchnorm_train_2d", "BatchNorm", "batch_norm_param { moving_average_fraction: 0.9 }",
                      [("x", (6, 4))], phase="train")
    single_layer_case("batchnorm_test_fresh", "BatchNorm", "", X, zero_params=["batchnorm_test_fresh"])
    single_layer_case("scale_nobias", "Scale", "", X)
    single_layer_case("scale_bias_axes2", "Scale", "scale_param { axis: 1 num_axes: 2 bias_term: true }", X)
    single_layer_case("scale_scalar", "Scale", "scale_param { num_axes: 0 }", X)
    single_layer_case("scale_second_bottom", "Scale", "scale_param { axis: 0 }", [X[0], ("s", (2, 3))])
    single_layer_case("scale_second_bottom_bias", "Scale", "scale_param { axis: 2 bias_term: true }",
                      [X[0], ("s", (5, 7))])
    single_layer_case("bias_param", "Bias", "", X)
    single_layer_case("bias_second_bottom", "Bias", "bias_param { axis: 1 }", [X[0], ("b", (3, 5))])


def structure():
    two = [("a", (2, 3, 4, 5)), ("b", (2, 3, 4, 5))]
    three = two + [("c", (2, 3, 4, 5))]
    add_case("input_two_tops", input_layer([("a", (2, 3)), ("b", (4, 5, 6))]) + layer("abs_a", "AbsVal", ["a"],
             ["ya"]) + layer("abs_b", "AbsVal", ["b"], ["yb"]), [("a", (2, 3)), ("b", (4, 5, 6))])
    single_layer_case("eltwise_sum_coeff", "Eltwise", "eltwise_param { operation: SUM coeff: 1.5 coeff: -0.5 }",
                      two)
    single_layer_case("eltwise_sum3", "Eltwise", "", three)
    single_layer_case("eltwise_prod", "Eltwise", "eltwise_param { operation: PROD }", three)
    single_layer_case("eltwise_max", "Eltwise", "eltwise_param { operation: MAX }", three)
    single_layer_case("concat_axis1", "Concat", "", [("a", (2, 3, 4, 5)), ("b", (2, 2, 4, 5))])
    single_layer_case("concat_axis2", "Concat", "concat_param { axis: 2 }",
                      [("a", (2, 3, 4, 5)), ("b", (2, 3, 1, 5)), ("c", (2, 3, 2, 5))])
    single_layer_case("slice_points", "Slice", "slice_param { axis: 1 slice_point: 1 slice_point: 3 }",
                      [("x", (2, 5, 3, 4))], n_tops=3)
    single_layer_case("slice_equal", "Slice", "slice_param { axis: 2 }", [("x", (2, 3, 6, 4))], n_tops=3)
    single_layer_case("split_explicit", "Split", "", X, n_tops=3)
    add_case("split_implicit", input_layer(X) + layer("relu", "ReLU", ["x"], ["a"]) + layer(
        "tanh", "TanH", ["x"], ["b"]) + layer("scale", "Scale", ["x", "b"], ["c"], "scale_param { axis: 0 }"), X)
    add_case("input_legacy_fields", 'input: "x"\ninput_shape { dim: 2 dim: 3 dim: 4 dim: 5 }\n'
             + layer("tanh", "TanH", ["x"], ["y"]), [])
    single_layer_case("concat_axis_negative", "Concat", "concat_param { axis: -1 }",
                      [("a", (2, 3, 4)), ("b", (2, 3, 2))])
    single_layer_case("slice_axis0", "Slice", "slice_param { axis: 0 slice_point: 1 }", [("x", (3, 2, 4))],
                      n_tops=2)
    single_layer_case("eltwise_prod_unstable", "Eltwise", "eltwise_param { operation: PROD stable_prod_grad: false }",
                      [("a", (2, 3, 4)), ("b", (2, 3, 4))])
    single_layer_case("reshape_axis", "Reshape", "reshape_param { shape { dim: 3 dim: -1 } axis: 1 num_axes: 2 }", X)
    single_layer_case("flatten", "Flatten", "", X)
    single_layer_case("flatten_axes", "Flatten", "flatten_param { axis: 1 end_axis: 2 }", X)
    single_layer_case("reshape", "Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 5 } }", X)
    single_layer_case("softmax_axis1", "Softmax", "", X)
    single_layer_case("softmax_2d", "Softmax", "", [("x", (3, 7))])
    single_layer_case("softmax_axis2", "Softmax", "softmax_param { axis: 2 }", X)
    add_case("silence", input_layer(X) + layer("relu", "ReLU", ["x"], ["a"]) + layer("silence", "Silence", ["a"], [])
             + layer("tanh", "TanH", ["x"], ["t"]), X)
    conv = layer("conv", "Convolution", ["x"], ["c"], "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }")
    scale = layer("scale", "Scale", ["c"], ["c"], "scale_param { bias_term: true }")
    relu = layer("relu", "ReLU", ["c"], ["c"])
    tail = layer("drop", "Dropout", ["c"], ["c"]) + layer("pool", "Pooling", ["c"], ["p"],
                                                         "pooling_param { pool: AVE kernel_size: 2 stride: 2 }")
    # The ResNet / CaffeNet pattern: Scale, ReLU, Dropout all in place on the convolution's top.
    add_case("in_place_chain", input_layer(X) + conv + scale + relu + tail, X)
    # Caffe's in-place ReLU reads its mask from the blob at backward time, i.e. after the in-place
    # Scale that follows it overwrote it: Caffe's gradient uses sign(scale(relu(c))), not sign(c).
    add_case("in_place_relu_then_scale", input_layer(X) + conv + relu + scale + tail, X)
    rules = (input_layer(X) + layer("train_only", "ReLU", ["x"], ["t"], "include { phase: TRAIN }")
             + layer("not_in_test", "TanH", ["x"], ["u"], "exclude { phase: TEST }")
             + layer("test_only", "Sigmoid", ["x"], ["s"], "include { phase: TEST }")
             + layer("level_gated", "AbsVal", ["x"], ["v"], "include { min_level: 1 }"))
    add_case("phase_rules_test", rules, X)
    add_case("phase_rules_train", rules, X, phase="train")


def losses():
    scores_labels = [("scores", (2, 5, 3, 4)), ("label", (2, 1, 3, 4))]
    labels5 = {"label": "labels:5"}
    single_layer_case("softmax_loss", "SoftmaxWithLoss", "", scores_labels, fill=labels5, skip_diff=["label"])
    single_layer_case("softmax_loss_ignore_weight", "SoftmaxWithLoss", "loss_weight: 2.5 "
                      "loss_param { ignore_label: 3 normalization: BATCH_SIZE }", scores_labels, fill=labels5,
                      skip_diff=["label"])
    single_layer_case("softmax_loss_axis2_none", "SoftmaxWithLoss", "softmax_param { axis: 2 } "
                      "loss_param { normalization: NONE }", [("scores", (2, 3, 4)), ("label", (2, 3))],
                      fill={"label": "labels:4"}, skip_diff=["label"])
    single_layer_case("softmax_loss_full", "SoftmaxWithLoss", "loss_param { normalization: FULL ignore_label: 0 }",
                      scores_labels, fill=labels5, skip_diff=["label"])
    single_layer_case("sigmoid_ce_loss", "SigmoidCrossEntropyLoss", "", [("x", (3, 4)), ("t", (3, 4))],
                      fill={"t": "uniform"}, skip_diff=["t"])
    single_layer_case("euclidean_loss", "EuclideanLoss", "loss_weight: 0.5", [("a", (3, 4, 2)), ("b", (3, 4, 2))])
    # Accuracy has no backward: no force_backward, and the loss decides which layers run backward.
    add_case("accuracy_with_loss", input_layer([("data", (6, 4)), ("label", (6,))])
             + layer("ip", "InnerProduct", ["data"], ["ip"], "inner_product_param { num_output: 5 }")
             + layer("loss", "SoftmaxWithLoss", ["ip", "label"], ["loss"])
             + layer("acc", "Accuracy", ["ip", "label"], ["acc"], "accuracy_param { top_k: 2 }"),
             [("data", (6, 4)), ("label", (6,))], fill={"label": "labels:5"}, force_backward=False,
             skip_diff=["data", "label"])
    # A loss weight on a non-loss layer's top that another layer also reads: Caffe's InsertSplits
    # adds a split whose first top carries the loss weight (its diff starts as 0.5 everywhere).
    add_case("loss_weight_on_ip_with_consumer", input_layer([("x", (3, 4))])
             + layer("ip", "InnerProduct", ["x"], ["ip"], "loss_weight: 0.5 inner_product_param { num_output: 5 }")
             + layer("relu", "ReLU", ["ip"], ["r"]), [("x", (3, 4))])
    add_case("accuracy_ignore_axis", input_layer([("scores", (2, 4, 3)), ("label", (2, 3))])
             + layer("acc", "Accuracy", ["scores", "label"], ["acc"], "accuracy_param { axis: 1 ignore_label: 2 }"),
             [("scores", (2, 4, 3)), ("label", (2, 3))], fill={"label": "labels:4"}, force_backward=False,
             backward=False)


def added_types():
    """Crop, Tile, ArgMax, Reduction, MVN, Embed and the remaining BVLC losses."""
    single_layer_case("crop_fcn", "Crop", "crop_param { axis: 2 offset: 3 }",
                      [("x", (2, 3, 9, 8)), ("like", (2, 1, 5, 4))])
    single_layer_case("crop_per_axis", "Crop", "crop_param { axis: 1 offset: 1 offset: 2 offset: 3 }",
                      [("x", (2, 5, 7, 8)), ("like", (2, 3, 4, 5))])
    single_layer_case("crop_default", "Crop", "", [("x", (2, 3, 6, 5)), ("like", (4, 1, 3, 2))])
    single_layer_case("tile_axis1", "Tile", "tile_param { tiles: 3 }", X)
    single_layer_case("tile_axis_last", "Tile", "tile_param { axis: -1 tiles: 2 }", [("x", (2, 3, 4))])
    # ArgMax has no backward in Caffe.
    no_backward = dict(force_backward=False, backward=False)
    single_layer_case("argmax_axis2_top2", "ArgMax", "argmax_param { axis: 2 top_k: 2 }", X, **no_backward)
    single_layer_case("argmax_axis1_maxval", "ArgMax", "argmax_param { axis: 1 top_k: 2 out_max_val: true }", X,
                      **no_backward)
    single_layer_case("argmax_flat_maxval", "ArgMax", "argmax_param { top_k: 3 out_max_val: true }", X,
                      **no_backward)
    single_layer_case("argmax_flat_2d", "ArgMax", "", [("x", (3, 7))], **no_backward)
    single_layer_case("reduction_sum", "Reduction", "", X)
    single_layer_case("reduction_asum_axis1", "Reduction", "reduction_param { operation: ASUM axis: 1 coeff: 2.5 }", X)
    single_layer_case("reduction_sumsq_axis2", "Reduction", "reduction_param { operation: SUMSQ axis: 2 coeff: -0.5 }",
                      X)
    single_layer_case("reduction_mean_axis_last", "Reduction", "reduction_param { operation: MEAN axis: -1 coeff: 3 }",
                      X)
    single_layer_case("mvn", "MVN", "", X)
    single_layer_case("mvn_across_no_variance", "MVN", "mvn_param { across_channels: true normalize_variance: false }",
                      X)
    single_layer_case("mvn_across_eps", "MVN", "mvn_param { across_channels: true eps: 0.05 }", [("x", (3, 4, 2, 5))])
    single_layer_case("mvn_rows", "MVN", "mvn_param { across_channels: true }", [("x", (3, 7))])
    # Caffe aborts when asked for Embed's bottom diff: no force_backward, a loss gives the top diff.
    for name, body, index, target, k in (
            ("embed", "embed_param { num_output: 4 input_dim: 5 }", (2, 3), (2, 3, 4), 5),
            ("embed_nobias", "embed_param { num_output: 3 input_dim: 6 bias_term: false }", (4,), (4, 3), 6)):
        shapes = [("x", index), ("t", target)]
        add_case(name, input_layer(shapes) + layer("embed", "Embed", ["x"], ["y"], body)
                 + layer("loss", "EuclideanLoss", ["y", "t"], ["loss"]), shapes, fill={"x": "labels:%d" % k},
                 force_backward=False, skip_diff=["x", "t"])
    single_layer_case("hinge_l1", "HingeLoss", "", [("scores", (4, 3, 2)), ("label", (4,))],
                      fill={"label": "labels:6"}, skip_diff=["label"])
    single_layer_case("hinge_l2", "HingeLoss", "loss_weight: 2 hinge_loss_param { norm: L2 }",
                      [("scores", (5, 4)), ("label", (5, 1))], fill={"label": "labels:4"}, skip_diff=["label"])
    single_layer_case("multinomial_logistic", "MultinomialLogisticLoss", "", [("p", (3, 4)), ("label", (3,))],
                      fill={"p": "uniform", "label": "labels:4"}, skip_diff=["label"])
    single_layer_case("multinomial_logistic_4d", "MultinomialLogisticLoss", "loss_weight: 0.5",
                      [("p", (3, 2, 3)), ("label", (3, 1, 1))], fill={"p": "uniform", "label": "labels:6"},
                      skip_diff=["label"])
    single_layer_case("contrastive", "ContrastiveLoss", "contrastive_loss_param { margin: 2.5 }",
                      [("a", (6, 3)), ("b", (6, 3)), ("sim", (6,))], fill={"sim": "labels:2"}, skip_diff=["sim"])
    single_layer_case("contrastive_legacy", "ContrastiveLoss", "loss_weight: 1.5 contrastive_loss_param { margin: 5 "
                      "legacy_version: true }", [("a", (5, 4, 1, 1)), ("b", (5, 4, 1, 1)), ("sim", (5, 1, 1, 1))],
                      fill={"sim": "labels:2"}, skip_diff=["sim"])
    # Caffe aborts when force_backward reaches the matrix bottom: a learned Bias makes the scores
    # need backward instead. The probability top's random diff is ignored by Caffe (a loss layer
    # with two tops needs a loss_weight per top).
    info = [("x", (2, 4, 3)), ("label", (2, 3)), ("h", (4, 4))]
    add_case("infogain", input_layer(info) + layer("bias", "Bias", ["x"], ["s"])
             + layer("loss", "InfogainLoss", ["s", "label", "h"], ["loss", "prob"], "loss_weight: 1 loss_weight: 0"),
             info,
             fill={"label": "labels:4", "h": "uniform"}, force_backward=False, skip_diff=["x", "label", "h"])
    info = [("x", (3, 2, 5)), ("label", (3, 2)), ("h", (5, 5))]
    add_case("infogain_axis2_ignore", input_layer(info)
             + layer("bias", "Bias", ["x"], ["s"], "bias_param { axis: 1 num_axes: 2 }")
             + layer("loss", "InfogainLoss", ["s", "label", "h"], ["loss"], "loss_weight: 2 "
                     "infogain_loss_param { axis: 2 } loss_param { ignore_label: 1 normalization: BATCH_SIZE }"),
             info, fill={"label": "labels:5", "h": "uniform"}, force_backward=False, skip_diff=["x", "label", "h"])


vision()
neurons()
normalization()
structure()
losses()
added_types()

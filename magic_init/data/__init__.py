"""Sample data: sources (list, glob, folder, LMDB, prototxt data layer) and Caffe's transform.

Typical use::

    source = open_source("photos/*.jpg")                 # or source_from_layer(layer) -> (source, transform)
    transform = Transform.imagenet(size=(227, 227))     # BGR, mean (104, 117, 123), scale 1
    sample = load_sample(source, transform, num_images=160, seed=0)
    sample.data          # (N, C, H, W) float32; sample.labels (N,) int64 or None
    sample.used, sample.skipped

For a run (``--data`` or the prototxt's data layer, options applied)::

    source, transform = choose_source(data, net_param, input_shape=(16, 3, 227, 227), mean=None, scale=None)

For big sources or sizes use ``SampleReader(source, transform, ...).batches(batch_size)``.
"""
from __future__ import annotations

from magic_init.data.layer import DATA_LAYER_TYPES, source_from_layer
from magic_init.data.resize import resize_linear
from magic_init.data.select import choose_source, data_channels, find_data_layer
from magic_init.data.sample import DEFAULT_NUM_IMAGES, Batch, Sample, SampleReader, load_sample
from magic_init.data.sources import (ImageFiles, LmdbDatums, find_images, glob_images, image_channels, open_source,
                                     parse_image_list,
                                     read_image_list)
from magic_init.data.transform import IMAGENET_MEAN_BGR, Transform, read_mean_image

__all__ = ["choose_source", "data_channels", "find_data_layer", "DATA_LAYER_TYPES", "DEFAULT_NUM_IMAGES",
           "IMAGENET_MEAN_BGR", "Batch", "ImageFiles",
           "LmdbDatums", "Sample", "SampleReader", "Transform", "find_images", "glob_images", "image_channels",
           "load_sample", "open_source", "parse_image_list", "read_image_list", "read_mean_image", "resize_linear",
           "source_from_layer"]

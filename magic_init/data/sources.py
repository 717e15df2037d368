"""Sample sources: where images come from. Each source is a sized, indexable collection.

``source.read(i) -> (image HWC BGR, label or None)``; ``source.item_name(i)`` names the item in
messages; a source whose ``parallel_reads`` is true may be read on several threads at once. A
source only decodes; ``Transform`` turns images into net input, ``sample.py`` picks them.

``open_source(spec)`` chooses by what ``spec`` is: an LMDB folder (has ``data.mdb``), any other
folder (images found recursively), an existing file (an image, or a Caffe ImageData list file), or a
glob pattern (``photos/*.jpg``, ``**`` recursive).
"""
from __future__ import annotations

import glob
import os

import numpy as np

from magic_init.data.images import IMAGE_EXTENSIONS, UnreadableImage, decode_image, read_image
from magic_init.errors import DataError

_GLOB_CHARS = "*?["


class ImageFiles:
    """A list of image files with optional integer labels. Items are independent files, so they may be
    read on several threads at once (``parallel_reads``)."""

    parallel_reads = True

    def __init__(self, paths, labels=None, name="images", is_color=True):
        self.paths = list(paths)
        self.labels = list(labels) if labels is not None else [None] * len(self.paths)
        self.name = name
        self.is_color = is_color

    def __len__(self):
        return len(self.paths)

    def item_name(self, i: int) -> str:
        return self.paths[i]

    def read(self, i: int):
        return read_image(self.paths[i], self.is_color), self.labels[i]


def read_image_list(list_path: str, root: str | None = None, is_color: bool = True) -> ImageFiles:
    """Read a Caffe ImageData list file (see ``parse_image_list``) as ``ImageFiles``.

    Relative paths resolve against ``root`` if given, else the list's folder.
    """
    names, labels = parse_image_list(list_path)
    base = root if root is not None else os.path.dirname(os.path.abspath(list_path))
    paths = [p if os.path.isabs(p) else os.path.join(base, p) for p in names]
    return ImageFiles(paths, labels, name=list_path, is_color=is_color)


def parse_image_list(list_path: str):
    """(paths, labels) of an ImageData list: one ``path label`` per line, split at the *last* space.

    A line whose last word is not an integer is a path without label (label None; it may contain
    spaces). Blank lines are ignored. An empty list is a DataError.
    """
    try:
        with open(list_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError("%s: cannot read image list (%s)" % (list_path, getattr(e, "strerror", None) or e)) from None
    pairs = [_split_list_line(line.rstrip()) for line in lines if line.strip()]
    if not pairs:
        raise DataError("%s: image list is empty" % list_path)
    names, labels = zip(*pairs)
    return list(names), list(labels)


def _split_list_line(line: str):
    """``'a b.jpg 3'`` -> (``'a b.jpg'``, 3); ``'a.jpg'`` -> (``'a.jpg'``, None)."""
    head, sep, tail = line.rpartition(" ")
    if sep and head.strip():
        try:
            return head, int(tail)
        except ValueError:
            pass
    return line, None


def find_images(folder: str, is_color: bool = True) -> ImageFiles:
    """All files with an image extension under ``folder`` (recursive), sorted."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        paths += [os.path.join(dirpath, n) for n in sorted(filenames) if _is_image_name(n)]
    if not paths:
        raise DataError("%s: folder contains no images (%s)" % (folder, ", ".join(IMAGE_EXTENSIONS)))
    return ImageFiles(paths, name=folder, is_color=is_color)


def glob_images(pattern: str, is_color: bool = True) -> ImageFiles:
    """Files matching a glob pattern (``**`` matches folders recursively), sorted."""
    paths = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    if not paths:
        raise DataError("%s: no files match this pattern" % pattern)
    return ImageFiles(paths, name=pattern, is_color=is_color)


class LmdbDatums:
    """An LMDB of ``caffe_pb2.Datum`` (Caffe's Data layer, ``backend: LMDB``).

    ``is_color``: for encoded datums, True/False force colour/gray (``force_color``/``force_gray``),
    None keeps the image's own channels (Caffe's ``DecodeDatumToCVMatNative``).
    """

    def __init__(self, path: str, is_color: bool | None = None):
        lmdb = _import_lmdb(path)
        self.name = path
        self.is_color = is_color
        try:
            self._env = lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True)
        except lmdb.Error as e:
            raise DataError("%s: cannot open LMDB (%s)" % (path, e)) from None
        with self._env.begin() as txn:
            self._keys = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
        if not self._keys:
            raise DataError("%s: LMDB is empty" % path)

    def __len__(self):
        return len(self._keys)

    def item_name(self, i: int) -> str:
        return "%s[%s]" % (self.name, self._keys[i].decode("utf-8", "replace"))

    def value(self, i: int) -> bytes:
        """The serialized Datum of item ``i``."""
        with self._env.begin() as txn:
            return txn.get(self._keys[i])

    def read(self, i: int):
        return datum_to_image(self.value(i), self.is_color)


def datum_to_image(value: bytes, is_color: bool | None = None):
    """Serialized Datum -> (HWC image, label). Raw data is uint8 CHW; ``float_data`` gives float32."""
    from magic_init.proto import caffe_pb2
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except Exception as e:
        raise UnreadableImage("not a Datum (%s)" % e) from None
    label = int(datum.label) if datum.HasField("label") else None
    if datum.encoded:
        return decode_image(datum.data, is_color), label
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        pixels = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        pixels = np.array(datum.float_data, dtype=np.float32)
    if pixels.size != int(np.prod(shape)) or pixels.size == 0:
        raise UnreadableImage("Datum has %d values for shape %s" % (pixels.size, shape))
    return np.ascontiguousarray(pixels.reshape(shape).transpose(1, 2, 0)), label


def image_channels(source, count: int = 16):
    """The channel count ``source``'s images give a data layer that leaves it to the data, or None
    when none of its first items can be read.

    A raw (not encoded) Datum of an LMDB gives its own ``channels`` (the first readable one decides:
    ``convert_imageset`` writes them all alike). Image files and encoded Datums are decoded with
    their own channels: 1 when the first ``count`` readable ones (in source order) are all
    grayscale, else 3 (a colour image is read as BGR, as Caffe's ``is_color: true`` does)."""
    seen = 0
    for i in range(len(source)):
        try:
            channels, raw = _native_channels(source, i)
        except UnreadableImage:
            continue
        if raw or channels != 1:
            return channels if raw else 3
        seen += 1
        if seen == count:
            break
    return 1 if seen else None


def _native_channels(source, i: int):
    """(channels of item ``i`` decoded natively, whether it is a raw Datum)."""
    if isinstance(source, LmdbDatums):
        from magic_init.proto import caffe_pb2
        datum = caffe_pb2.Datum()
        try:
            datum.ParseFromString(source.value(i))
        except Exception as e:
            raise UnreadableImage("not a Datum (%s)" % e) from None
        if not datum.encoded:
            return int(datum.channels), True
        return decode_image(datum.data, None).shape[2], False
    return read_image(source.item_name(i), None).shape[2], False


def open_source(spec, root: str | None = None, is_color: bool = True):
    """Pick the source for ``spec``: LMDB folder, image folder, image file, list file or glob."""
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        if os.path.isfile(os.path.join(spec, "data.mdb")):
            return LmdbDatums(spec)
        return find_images(spec, is_color)
    if os.path.isfile(spec):
        if os.path.basename(spec) == "data.mdb":
            return LmdbDatums(os.path.dirname(spec) or ".")
        if _is_image_name(spec):
            return ImageFiles([spec], name=spec, is_color=is_color)
        return read_image_list(spec, root, is_color)
    if any(c in spec for c in _GLOB_CHARS):
        return glob_images(spec, is_color)
    raise DataError("%s: no such image list, folder, LMDB or glob pattern" % spec)


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _import_lmdb(path):
    try:
        import lmdb
    except ImportError:
        raise DataError("%s: reading an LMDB needs the 'lmdb' module (pip install lmdb)" % path) from None
    return lmdb

#!/usr/bin/env bash
# Write N (default 160) distinct sample photos (JPEG, SIZE x SIZE, default 256) and an ImageData list.
#
#   scripts/fetch-sample-images.sh OUTDIR [N] [SIZE]
#
# Photos come from Debian's gnome-backgrounds (/usr/share/backgrounds, installed with apt-get when
# missing and we are root) and scikit-image's bundled samples (skimage/data, pip install scikit-image).
# Distinct images are made by seeded random crops (25-100% of the area, aspect 3:4..4:3) and
# horizontal flips, resized with Lanczos. Same N and SIZE -> the same files (seed 0).
# OUTDIR/list.txt has one "name.jpg label" line per image (label = index of the source photo).
set -euo pipefail

OUTDIR=${1:?usage: $0 OUTDIR [N] [SIZE]}
N=${2:-160}
SIZE=${3:-256}
PYTHON=${PYTHON:-python3}

if [ ! -d /usr/share/backgrounds ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing gnome-backgrounds" >&2
    (apt-get install -y -q gnome-backgrounds >/dev/null 2>&1 || \
     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q gnome-backgrounds >/dev/null 2>&1)) || \
        echo "warning: could not install gnome-backgrounds" >&2
fi
if ! "$PYTHON" -c "import skimage" 2>/dev/null; then
    echo "installing scikit-image (for its sample photos)" >&2
    "$PYTHON" -m pip install -q scikit-image >/dev/null 2>&1 || echo "warning: no scikit-image" >&2
fi

mkdir -p "$OUTDIR"
"$PYTHON" - "$OUTDIR" "$N" "$SIZE" <<'PY'
import glob, os, sys
import numpy as np
from PIL import Image, ImageOps

outdir, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SKIMAGE_PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                  "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "camera.png", "coins.png",
                  "moon.png", "brick.png", "grass.png", "gravel.png"]

def photo_paths():
    paths = []
    for ext in ("jpg", "jpeg", "png", "webp"):
        paths += glob.glob("/usr/share/backgrounds/**/*." + ext, recursive=True)
    try:
        import skimage
        data = os.path.join(os.path.dirname(skimage.__file__), "data")
        paths += [os.path.join(data, p) for p in SKIMAGE_PHOTOS if os.path.exists(os.path.join(data, p))]
    except ImportError:
        pass
    return sorted(set(paths))

def load_photo(path):
    """RGB photo, or None when unreadable or smaller than 128 px."""
    try:
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    except Exception as e:
        print("skipping %s: %s" % (path, e), file=sys.stderr)
        return None
    return img if min(img.size) >= 128 else None

paths, photos = photo_paths(), []
wanted = min(n, len(paths))
while len(photos) < wanted and paths:  # load only as many photos as images requested
    img = load_photo(paths.pop(0))
    if img is not None:
        photos.append(img)
if not photos:
    sys.exit("no photos found: install gnome-backgrounds or scikit-image")

rng = np.random.RandomState(0)
lines = []
for i in range(n):
    label = i % len(photos)
    img = photos[label]
    w, h = img.size
    area = rng.uniform(0.25, 1.0) * w * h
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = min(w, int(round(np.sqrt(area * aspect)))), min(h, int(round(np.sqrt(area / aspect))))
    x, y = rng.randint(w - cw + 1), rng.randint(h - ch + 1)
    crop = img.crop((x, y, x + cw, y + ch)).resize((size, size), Image.LANCZOS)
    if rng.randint(2):
        crop = ImageOps.mirror(crop)
    name = "sample_%04d.jpg" % i
    crop.save(os.path.join(outdir, name), quality=90)
    lines.append("%s %d\n" % (name, label))
with open(os.path.join(outdir, "list.txt"), "w") as f:
    f.writelines(lines)
print("wrote %d images from %d photos to %s (list: %s)" % (n, len(photos), outdir,
      os.path.join(outdir, "list.txt")))
PY

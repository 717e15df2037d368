"""Which PyTorch build `pip install torch==VERSION` would install here, and how much it fetches.

Run by scripts/setup.sh with the target environment's python, before it installs torch. It does
not ask pip (`pip install --dry-run` downloads every wheel it resolves unless the index serves
PEP 658 metadata: 2.75 GB for the CUDA build), but reads what pip reads: the local wheel folders
(pip's find-links) and the indexes pip is configured with (its index-url and extra-index-urls, or
pip's default index), plus any given with --index. It picks the wheel pip would pick (highest
version, local labels such as +cpu included, then the best platform tag) and prints one line:

    build=cpu|cuda version=V source=local|URL size_mb=N extra_mb=N|? extra=N

``extra`` counts the CUDA packages (nvidia-*, triton) a CUDA build pulls in besides torch, and
``extra_mb`` their size, from the wheel's metadata when the index serves it, else an estimate
(``~N``) measured for torch 2.13.0 on x86_64. Exit status 1 when no wheel fits.
"""
from __future__ import annotations

import argparse
import html.parser
import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request

try:
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version
except ImportError:  # pragma: no cover - pip without its vendored packaging
    from packaging.requirements import Requirement
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version

# Measured here for torch 2.13.0 (x86_64, Python 3.11): pip fetched 29 files, 2,750 MB, of which
# the torch wheel is 527 MB; the rest is CUDA libraries (15 nvidia-* packages and triton).
CUDA_EXTRA_ESTIMATE_MB = 2220
CUDA_EXTRA_ESTIMATE_COUNT = 16
TIMEOUT = 20


def pip_config():
    """pip's own settings in this environment: {key: [values]} for index-url, extra-index-url, find-links."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    conf = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        key = key.rsplit(".", 1)[-1]
        if key in ("index-url", "extra-index-url", "find-links", "no-index"):
            conf.setdefault(key, []).extend(value.strip().strip("'\"").split())
    if os.environ.get("PIP_NO_INDEX", "").lower() in ("1", "true", "yes", "on"):
        conf["no-index"] = ["1"]
    for key in ("index-url", "extra-index-url", "find-links"):  # the environment wins, as in pip
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            conf[key] = env.split()
    return conf


def default_index():
    try:
        from pip._internal.models.index import PyPI
        return PyPI.simple_url
    except Exception:  # pragma: no cover
        return None


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            attrs = dict(attrs)
            if attrs.get("href"):
                self.links.append(attrs)


def index_files(index, project):
    """[(filename, url, size or None, metadata_url or None)] of PROJECT on a PEP 503/691 index."""
    base = index.rstrip("/") + "/" + project + "/"
    if base.startswith("file:"):
        path = urllib.request.url2pathname(urllib.parse.urlparse(base).path)
        page = os.path.join(path, "index.html")
        if not os.path.isfile(page):
            return []
        with open(page, encoding="utf-8") as f:
            text, ctype = f.read(), "text/html"
    else:
        req = urllib.request.Request(base, headers={
            "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            text, ctype, base = r.read().decode("utf-8"), r.headers.get("Content-Type", ""), r.geturl()
    files = []
    if "json" in ctype:
        for f in json.loads(text)["files"]:
            url = urllib.parse.urljoin(base, f["url"])
            meta = f.get("core-metadata") or f.get("data-dist-info-metadata")
            files.append((f["filename"], url, f.get("size"), url.split("#")[0] + ".metadata" if meta else None))
    else:
        parser = _Links()
        parser.feed(text)
        for a in parser.links:
            url = urllib.parse.urljoin(base, a["href"])
            name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
            meta = a.get("data-core-metadata") or a.get("data-dist-info-metadata")
            files.append((name, url, None, url.split("#")[0] + ".metadata" if meta else None))
    return files


def folder_files(folder):
    folder = urllib.request.url2pathname(urllib.parse.urlparse(folder).path) if folder.startswith("file:") else folder
    if not os.path.isdir(folder):
        return []
    return [(n, "file://" + os.path.join(folder, n), os.path.getsize(os.path.join(folder, n)), None)
            for n in sorted(os.listdir(folder))]


def candidates(files, project, public_version):
    """(version, tag_rank, file) for the wheels of PROJECT==public_version this interpreter can install."""
    rank = {tag: i for i, tag in enumerate(sys_tags())}
    for f in files:
        if not f[0].endswith(".whl"):
            continue
        try:
            name, version, _, tags = parse_wheel_filename(f[0])
        except Exception:
            continue
        if name != canonicalize_name(project) or version.public != public_version:
            continue
        best = min((rank[t] for t in tags if t in rank), default=None)
        if best is not None:
            yield version, -best, f


def size_of(url, known):
    if known is not None:
        return known
    if url.startswith("file:"):
        return os.path.getsize(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=TIMEOUT) as r:
            return int(r.headers["Content-Length"])
    except Exception:
        return None


def cuda_requirements(metadata_url):
    """The nvidia-*/triton requirements of a wheel, from its metadata file; None if unreadable."""
    try:
        with urllib.request.urlopen(metadata_url, timeout=TIMEOUT) as r:
            text = r.read().decode("utf-8")
    except Exception:
        return None
    reqs = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if (req.name.startswith("nvidia-") or req.name == "triton") and \
                    (req.marker is None or req.marker.evaluate({"extra": ""})):
                reqs.append(req)
    return reqs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", default="2.13.0")
    ap.add_argument("--index", action="append", default=[], help="another index to consider (first)")
    args = ap.parse_args(argv)
    conf = pip_config()
    sources = [("local", folder_files(d)) for d in conf.get("find-links", [])]
    indexes = list(args.index)
    if "no-index" not in conf:
        indexes += conf.get("index-url") or [default_index()]
        indexes += conf.get("extra-index-url", [])
    unreachable = []
    for index in filter(None, indexes):
        try:
            sources.append(("local" if index.startswith("file:") else index, index_files(index, "torch")))
        except Exception as e:
            unreachable.append("%s (%s)" % (index, e.__class__.__name__))
    found = [(c, src) for src, files in sources for c in candidates(files, "torch", args.version)]
    for u in unreachable:
        print("torch_plan: index not reachable: %s" % u, file=sys.stderr)
    if not found:
        print("torch_plan: no torch %s wheel for this Python and platform" % args.version, file=sys.stderr)
        return 1
    (version, _, (filename, url, size, meta)), src = max(found, key=lambda x: x[0][:2])
    label = version.local or ""
    size = size_of(url, size)
    if label.startswith("cu") or label.startswith("rocm"):
        build = "cuda"
    elif label == "cpu":
        build = "cpu"
    else:  # no local label: PyPI's convention, CUDA on Linux x86_64, CPU elsewhere
        build = "cuda" if re.search(r"linux.*x86_64", filename) else "cpu"
    extra, extra_mb = 0, "0"
    if build == "cuda":
        reqs = cuda_requirements(meta) if meta else None
        if reqs is None:
            extra, extra_mb = CUDA_EXTRA_ESTIMATE_COUNT, "~%d" % CUDA_EXTRA_ESTIMATE_MB
        else:
            extra, total = len(reqs), 0
            for req in reqs:
                pins = [s.version for s in req.specifier if s.operator == "=="]
                got = None
                for index in filter(None, indexes):
                    try:
                        c = list(candidates(index_files(index, req.name), req.name,
                                            Version(pins[0]).public)) if pins else []
                    except Exception:
                        continue
                    if c:
                        f = max(c, key=lambda x: x[:2])[2]
                        got = size_of(f[1], f[2])
                        break
                if got is None:
                    total = None
                    break
                total += got
            extra_mb = "?" if total is None else str(round(total / 1e6))
    print("build=%s version=%s source=%s size_mb=%s extra=%d extra_mb=%s" % (
        build, version, src, "?" if size is None else round(size / 1e6), extra, extra_mb))
    return 0


if __name__ == "__main__":
    sys.exit(main())

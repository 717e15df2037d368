#!/usr/bin/env bash
# Builds the Dockerfile's CPU variant without a Docker daemon and without a registry: buildah
# builds it, and `FROM debian:bullseye-slim` resolves to a Debian bullseye base that debootstrap
# makes here from this machine's own Debian mirror (the one scripts/caffe-env uses, read from the
# apt sources by scripts/debian-mirror.sh; MAGIC_INIT_DEBIAN_MIRROR overrides it). apt inside the
# build uses the same mirror (the base's sources.list) and apt's proxy, if the machine sets one.
#
#   scripts/docker-build.sh [build]     build what is missing; print the image's name (stdout)
#   scripts/docker-build.sh base        only the debootstrapped base, debian:bullseye-slim
#   scripts/docker-build.sh hash        print the content hash the image is cached under
#   scripts/docker-build.sh image       print the image for the current hash if built (else exit 1)
#   scripts/docker-build.sh run ARGS    run `magic_init ARGS` in the image, $PWD mounted at /work,
#                                       as the calling user ($SUDO_UID:$SUDO_GID under sudo)
#   scripts/docker-build.sh clean       remove the images, the base and buildah's layer cache
#                                       (all untagged images and all buildah containers)
#
# Idempotent, and cached: the base is made once (an image labelled org.magic-init.base); the image
# is tagged magic_init:cpu-HASH, HASH covering the Dockerfile, every file of the build context that
# .dockerignore lets through (path, mode, content), the base image's id and this script's recipe
# version, and a rerun with the same HASH builds nothing. Builds use `--layers`, so a change to the
# source alone reruns only the last steps (COPY ., the launcher), not the apt install.
# Needs root (debootstrap; buildah's storage in /var/lib/containers), buildah, debootstrap, python3.
# The CUDA variant (FROM ubuntu:20.04) is not built here: it needs a registry (docker build).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/magic_init"

BASE=docker.io/library/debian:bullseye-slim     # what the Dockerfile's FROM debian:bullseye-slim names
BASE_RECIPE=debootstrap-bullseye-minbase-1       # bump when the base recipe below changes
IMAGE=localhost/magic_init
VARIANT=cpu
RECIPE=1                                         # bump when the build command below changes
# chroot isolation runs RUN steps without an OCI runtime: crun refuses hosts with hybrid cgroups
# (v1 and v2 mounted together), as these machines have. BUILDAH_ISOLATION=oci picks crun/runc.
ISOLATION="${BUILDAH_ISOLATION:-chroot}"

die() { echo "docker-build: $*" >&2; exit 1; }
say() { echo "docker-build: $*" >&2; }
# shellcheck source=scripts/debian-mirror.sh
. "$here/debian-mirror.sh"

need_tools() {
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, and buildah's storage in /var/lib/containers)"
    command -v buildah >/dev/null || die "buildah is not installed (Debian: apt-get install buildah)"
    command -v python3 >/dev/null || die "python3 is needed to hash the build context"
}

label_of() {  # label_of IMAGE LABEL: the image's label value, nothing when no such image or label
    buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

# base: make $BASE from debootstrap unless an image of that name is already stored.
base() {
    local have
    have="$(label_of "$BASE" org.magic-init.base)"
    if [ "$have" = "$BASE_RECIPE" ]; then return 0; fi
    if [ -n "$(buildah images -q "$BASE" 2>/dev/null)" ] && [ -z "$have" ]; then
        say "using the stored $BASE (not made here)"; return 0
    fi
    command -v debootstrap >/dev/null || die "debootstrap is not installed (Debian: apt-get install debootstrap)"
    local mirror proxy tmp ctr mnt start=$SECONDS
    mirror="$(debian_mirror_to_use)" || exit 1
    proxy="$(apt_http_proxy)"
    if [ -n "$proxy" ] && [ -z "${http_proxy:-}" ]; then export http_proxy="$proxy"; fi
    mkdir -p "$cache"
    tmp="$(mktemp -d "${TMPDIR:-/var/tmp}/magic_init-base.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    say "making $BASE: debootstrap bullseye from $mirror (log: $cache/docker-base.log)"
    debootstrap --variant=minbase bullseye "$tmp/rootfs" "$mirror" >"$cache/docker-base.log" 2>&1 \
        || { tail -20 "$cache/docker-base.log" >&2; die "debootstrap from $mirror failed; MAGIC_INIT_DEBIAN_MIRROR sets another mirror"; }
    # As the official -slim image: no docs, man pages or translations, and no apt caches.
    cat >"$tmp/rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    rm -rf "$tmp/rootfs/var/lib/apt/lists/"* "$tmp/rootfs/var/cache/apt/"*.bin "$tmp/rootfs/var/cache/apt/archives/"*.deb
    ctr="$(buildah from scratch)"
    mnt="$(buildah mount "$ctr")"
    tar -C "$tmp/rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf - . \
        | tar -C "$mnt" --numeric-owner -xpf -
    buildah umount "$ctr" >/dev/null
    buildah config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --label org.magic-init.base="$BASE_RECIPE" "$ctr"
    buildah commit --quiet --rm "$ctr" "$BASE" >/dev/null
    rm -rf "$tmp"; trap - EXIT
    say "made $BASE in $((SECONDS - start)) s"
}

# context_hash: sha256 of the build as buildah would see it (see the header).
context_hash() {
    local base_id
    base_id="$(buildah images -q --no-trunc "$BASE" 2>/dev/null | head -n 1 || true)"
    python3 - "$repo" "$VARIANT $RECIPE $BASE_RECIPE $base_id" <<'EOF'
import hashlib, os, re, stat, sys
root, extra = sys.argv[1], sys.argv[2]

def compile_pattern(p):
    # .dockerignore (Docker's rules): a pattern matches a path or any of its parent folders;
    # `**` any number of folders, `*` and `?` within one name; a later `!pattern` re-includes.
    out, i = "", 0
    while i < len(p):
        c = p[i]
        if p.startswith("**/", i):
            out += "(?:.*/)?"; i += 3; continue
        if p.startswith("**", i):
            out += ".*"; i += 2; continue
        out += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
        i += 1
    return re.compile(out + r"\Z")

rules = []
try:
    with open(os.path.join(root, ".dockerignore")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            line = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((negate, compile_pattern(line)))
except FileNotFoundError:
    pass

def ignored(rel):
    parts = rel.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    result = False
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            result = not negate
    return result

h = hashlib.sha256(extra.encode() + b"\0")
for top, dirs, files in os.walk(root):
    dirs.sort()
    rel_top = os.path.relpath(top, root)
    for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(top, d))]):
        rel = name if rel_top == "." else rel_top + "/" + name
        if ignored(rel):
            continue
        path = os.path.join(top, name)
        st = os.lstat(path)
        h.update(rel.encode() + b"\0" + oct(stat.S_IMODE(st.st_mode)).encode() + b"\0")
        if stat.S_ISLNK(st.st_mode):
            h.update(b"link\0" + os.readlink(path).encode() + b"\0")
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    dirs[:] = [d for d in dirs if not ignored(d if rel_top == "." else rel_top + "/" + d)
               or any(n for n, _ in rules)]   # a `!` rule may re-include below an ignored folder
print(h.hexdigest())
EOF
}

stored() { [ -n "$(buildah images -q "$1" 2>/dev/null)" ]; }

build() {
    local hash tag start=$SECONDS proxy tries=0 after old
    base
    hash="$(context_hash)"
    tag="$IMAGE:$VARIANT-${hash:0:16}"
    if stored "$tag"; then
        buildah tag "$tag" "$IMAGE:$VARIANT"
        say "cached: $tag (Dockerfile and context unchanged)"
        echo "$tag"; return 0
    fi
    proxy="$(apt_http_proxy)"
    if [ -n "$proxy" ] && [ -z "${http_proxy:-}" ]; then export http_proxy="$proxy"; fi   # passed to RUN
    mkdir -p "$cache"
    while :; do
        say "building $tag (buildah, VARIANT=$VARIANT; log: $cache/docker-build.log)"
        # --pull=never: FROM debian:bullseye-slim is the base made above, nothing comes from a registry.
        buildah bud --layers --force-rm --pull=never --isolation="$ISOLATION" --network=host \
            --build-arg VARIANT="$VARIANT" --label org.magic-init.context="$hash" \
            -t "$tag" -t "$IMAGE:$VARIANT" -f "$repo/Dockerfile" "$repo" >"$cache/docker-build.log" 2>&1 \
            || { tail -30 "$cache/docker-build.log" >&2; die "buildah bud failed (log: $cache/docker-build.log)"; }
        # A file edited while buildah read the context: the image may hold either version, so
        # build again (cached layers: seconds) until the hash is the same before and after.
        after="$(context_hash)"
        [ "$after" != "$hash" ] || break
        buildah rmi "$tag" >/dev/null 2>&1 || true
        tries=$((tries + 1)); [ "$tries" -lt 5 ] || die "the checkout keeps changing during the build"
        say "the context changed during the build: again"
        hash="$after"; tag="$IMAGE:$VARIANT-${hash:0:16}"
    done
    # Older magic_init:cpu-* images (an earlier context) are dropped; their layers stay cached.
    for old in $(buildah images --format '{{.Name}}:{{.Tag}}' | grep -F "$IMAGE:$VARIANT-" | grep -vF "$tag"); do
        buildah rmi "$old" >/dev/null 2>&1 || true
    done
    say "built $tag in $((SECONDS - start)) s"
    echo "$tag"
}

locked() {  # one build at a time on this machine
    mkdir -p "$cache"
    exec 9>"$cache/docker-build.lock"
    flock 9
    "$@"
}

run_in_image() {
    local image ctr rc=0
    image="$(locked build)"
    ctr="$(buildah from --pull=never "$image")"
    buildah run --isolation="$ISOLATION" --network=host --user "${SUDO_UID:-$(id -u)}:${SUDO_GID:-$(id -g)}" \
        -v "$PWD:/work" "$ctr" -- magic_init "$@" || rc=$?
    buildah rm "$ctr" >/dev/null
    return "$rc"
}

case "${1:-build}" in
    build) need_tools; locked build ;;
    base) need_tools; locked base ;;
    hash) need_tools; context_hash ;;
    image) need_tools; tag="$IMAGE:$VARIANT-$(context_hash | cut -c1-16)"; stored "$tag" || exit 1; echo "$tag" ;;
    run) need_tools; shift; run_in_image "$@" ;;
    clean) need_tools
        buildah rm --all >/dev/null   # working containers (a build or run that was killed) hold images
        for img in $(buildah images --format '{{.Name}}:{{.Tag}}' | grep -F "$IMAGE:"); do buildah rmi "$img" >/dev/null || true; done
        [ "$(label_of "$BASE" org.magic-init.base)" = "" ] || buildah rmi "$BASE" >/dev/null || true
        buildah rmi --prune >/dev/null 2>&1 || true ;;   # the --layers cache: every untagged image
    *) die "usage: docker-build.sh [build] | base | hash | image | run ARGS... | clean" ;;
esac

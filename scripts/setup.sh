#!/usr/bin/env bash
# Install magic_init and what it needs into a virtual environment (Debian/Ubuntu, Python >= 3.9).
#   bash scripts/setup.sh            .venv with magic_init (editable), PyTorch (pinned) and the test tools
#   bash scripts/setup.sh --caffe    also build the real-Caffe chroot (scripts/caffe-env; needs root)
# Then `. .venv/bin/activate` puts `magic_init` on PATH (or run .venv/bin/magic_init).
#
# Which environment: the active virtual environment ($VIRTUAL_ENV), else the one $PYTHON belongs
# to, else .venv in the checkout, made with ${PYTHON:-python3}; when it is not .venv, .venv is
# made a link to it, so that README.md's commands work either way. It never installs into the
# system Python (PEP 668). Runs as a normal user; only --caffe needs root, and asks for it (sudo).
#
# PyTorch 2.13.0, pinned (an unpinned `torch` on a machine without one pulls the newest CUDA
# build, several GB). Which build (README.md, "PyTorch builds"):
#   MAGIC_INIT_TORCH=auto   (default) CUDA build where nvidia-smi sees a GPU, else the CPU build
#   MAGIC_INIT_TORCH=cpu    the CPU build, or fail rather than fetch the CUDA build
#   MAGIC_INIT_TORCH=cuda   the CUDA build
#   MAGIC_INIT_TORCH=skip   no PyTorch (the pycaffe backend does not need it)
#   MAGIC_INIT_TORCH_INDEX=URL  a wheel index to take torch from too, e.g. PyTorch's CPU (or
#                               CUDA) wheel index from pytorch.org's install selector
# Before installing torch it says which build pip will install, from where, and how much it will
# download, read from the indexes without downloading (scripts/torch_plan.py); a CUDA build on a
# machine without a GPU is said loudly (and asked, in a terminal).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

caffe=0
for arg in "$@"; do
    case "$arg" in
        --caffe) caffe=1 ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $arg (usage: bash scripts/setup.sh [--caffe])" ;;
    esac
done

sudo_cmd=()
if [ "$caffe" = 1 ] && [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null \
        || die "--caffe builds the real-Caffe chroot (debootstrap, chroot, mount), which needs root, and sudo is not installed: run 'scripts/caffe-env build' as root, then this without --caffe"
    sudo_cmd=(sudo --preserve-env=MAGIC_INIT_CAFFE_ENV,MAGIC_INIT_DEBIAN_MIRROR,http_proxy,https_proxy)
fi

# --- the virtual environment -------------------------------------------------------------------
in_venv() { "$1" -c 'import sys; sys.exit(0 if sys.prefix != getattr(sys, "base_prefix", sys.prefix) else 1)' 2>/dev/null; }

venv=""
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    venv="$VIRTUAL_ENV"
elif [ -n "${PYTHON:-}" ] && in_venv "$PYTHON"; then
    venv="$("$PYTHON" -c 'import sys; print(sys.prefix)')"
fi

if [ -n "$venv" ]; then
    say "using the virtual environment $venv"
    if [ -L .venv ] || [ ! -e .venv ]; then
        [ "$(readlink -f .venv 2>/dev/null)" = "$(readlink -f "$venv")" ] || { rm -f .venv; ln -s "$venv" .venv; }
    elif [ "$(readlink -f .venv)" != "$(readlink -f "$venv")" ]; then
        say "warning: .venv is another environment; README.md's commands use .venv, not $venv"
    fi
else
    venv="$PWD/.venv"
    base="${PYTHON:-python3}"
    command -v "$base" >/dev/null || die "$base not found: install Python >= 3.9 (Debian/Ubuntu: apt install python3 python3-venv)"
    "$base" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
        || die "$base is Python $("$base" -c 'import platform; print(platform.python_version())'); magic_init needs >= 3.9 (set PYTHON=python3.X)"
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        rm -rf .venv
        if ! "$base" -c 'import ensurepip, venv' 2>/dev/null; then
            # Debian and Ubuntu ship venv's pip bootstrap separately (python3-venv).
            pkg="python$("$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
            if [ "$(id -u)" = 0 ]; then
                say "installing $pkg (Debian/Ubuntu's venv support)"
                { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null; } \
                    || die "cannot install $pkg"
            elif command -v sudo >/dev/null; then
                say "making a virtual environment needs the Debian/Ubuntu package $pkg: sudo apt-get install $pkg"
                sudo apt-get install -y -qq "$pkg" >/dev/null || die "cannot install $pkg: install it (as root: apt install $pkg) and rerun"
            else
                die "making a virtual environment needs the Debian/Ubuntu package $pkg: as root, apt install $pkg, then rerun"
            fi
        fi
        say "making the virtual environment .venv ($("$base" -c 'import sys; print(sys.executable)'))"
        "$base" -m venv .venv || die "'$base -m venv .venv' failed"
    fi
fi
py="$venv/bin/python"
[ -x "$py" ] || die "no python in $venv"
pip() { "$py" -m pip "$@"; }
# --- PyTorch -------------------------------------------------------------------------------------
TORCH_VERSION=2.13.0
TORCH_PIN="torch==$TORCH_VERSION"

# What `pip install torch==2.13.0` would install and fetch, read from the local wheel folders and
# the indexes pip is configured with, without downloading (scripts/torch_plan.py).
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

install_torch() {
    local mode="${MAGIC_INIT_TORCH:-auto}" want plan args=() line build version source size extra extra_mb what
    case "$mode" in auto|cpu|cuda|skip) ;; *) die "MAGIC_INIT_TORCH=$mode: use auto, cpu, cuda or skip" ;; esac
    if [ "$mode" = skip ]; then say "MAGIC_INIT_TORCH=skip: no PyTorch (the built-in engine needs it; pycaffe does not)"; return 0; fi
    if line="$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null)" && [[ "$line" == "${TORCH_VERSION}"* ]]; then
        say "PyTorch $line already installed"; return 0
    fi
    want="$mode"
    if [ "$mode" = auto ]; then
        if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; then want=cuda; else want=cpu; fi
        if [ "$want" = cuda ]; then say "PyTorch: nvidia-smi sees a GPU: the CUDA build"
        else say "PyTorch: no NVIDIA GPU here (no nvidia-smi, or it sees none): the CPU build"; fi
    fi
    [ -z "${MAGIC_INIT_TORCH_INDEX:-}" ] || args=(--index "$MAGIC_INIT_TORCH_INDEX")
    plan="$("$py" scripts/torch_plan.py --version "$TORCH_VERSION" "${args[@]}")" \
        || die "no torch $TORCH_VERSION wheel for $("$py" -c 'import sys; print("Python %d.%d" % sys.version_info[:2])') in pip's indexes or wheel folders (see above)"
    build=$(field build "$plan"); version=$(field version "$plan"); source=$(field source "$plan")
    size=$(field size_mb "$plan"); extra=$(field extra "$plan"); extra_mb=$(field extra_mb "$plan")
    args=()
    [ "$source" != "${MAGIC_INIT_TORCH_INDEX:-}" ] || args=(--extra-index-url "$MAGIC_INIT_TORCH_INDEX")
    what="torch $version, the $(tr a-z A-Z <<<"$build") build"
    if [ "$source" = local ]; then
        what="$what, $size MB, from this machine's disk (no download)"
    else
        what="$what: downloads $size MB from $source"
    fi
    [ "$extra" = 0 ] || what="$what, plus $extra CUDA packages (nvidia-*, triton): $extra_mb MB to download"
    say "pip will install $what"
    if [ "$want" = cpu ] && [ "$build" = cuda ]; then
        say "this machine has no NVIDIA GPU, but the index pip uses offers $TORCH_PIN only as the CUDA build."
        say "For the CPU build (about 200 MB) set MAGIC_INIT_TORCH_INDEX to PyTorch's CPU wheel index (pytorch.org, 'Install PyTorch', Compute Platform: CPU) and rerun; MAGIC_INIT_TORCH=skip installs no PyTorch."
        [ "$mode" != cpu ] || die "MAGIC_INIT_TORCH=cpu: not installing the CUDA build"
        if [ -t 0 ]; then
            read -r -p "setup: download the CUDA build anyway? [y/N] " line
            case "$line" in y|Y|yes) ;; *) die "PyTorch not installed (see above)" ;; esac
        else
            say "installing the CUDA build (no terminal to ask; MAGIC_INIT_TORCH=cpu refuses it instead)"
        fi
    elif [ "$want" = cuda ] && [ "$build" = cpu ]; then
        say "warning: nvidia-smi sees a GPU, but the index pip uses offers $TORCH_PIN only as the CPU build: --device cuda will not work. For the CUDA build set MAGIC_INIT_TORCH_INDEX to PyTorch's CUDA wheel index (pytorch.org) and rerun."
    fi
    pip install -q "$TORCH_PIN" "${args[@]}"
}

# --- magic_init and the test tools -------------------------------------------------------------
stamp="$venv/.magic_init-setup"
wanted="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $PWD"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] \
        && "$py" -c 'import magic_init, pytest' 2>/dev/null && [ -x "$venv/bin/magic_init" ] \
        && { [ "${MAGIC_INIT_TORCH:-auto}" = skip ] || "$py" -c 'import torch' 2>/dev/null; }; then
    say "$venv is up to date"
else
    install_torch
    say "installing magic_init (editable) and its test tools into $venv"
    pip install -q -e ".[test]"
    echo "$wanted" >"$stamp"
fi

if [ "$caffe" = 1 ]; then
    if [ ${#sudo_cmd[@]} -gt 0 ]; then
        say "the real-Caffe chroot needs root (debootstrap, chroot, mount): running sudo scripts/caffe-env build"
    fi
    "${sudo_cmd[@]}" scripts/caffe-env build
fi
if [ "$(readlink -f "${VIRTUAL_ENV:-/nonexistent}")" != "$(readlink -f "$venv")" ]; then
    say "done: activate the environment with '. .venv/bin/activate' to put magic_init on PATH (or run .venv/bin/magic_init)"
else
    say "done: magic_init is on PATH in this environment"
fi

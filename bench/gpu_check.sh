#!/usr/bin/env bash
# The GPU check (issue 15): on a machine with a CUDA GPU and PyTorch, run the built-in engine's CUDA
# conformance variants against real-Caffe references and time CaffeNet, k-means + both steps, 160
# photos, --device cuda; print one table. Meant for the first time a GPU is available.
#
#   bash bench/gpu_check.sh --prepare    # here (with the Caffe references built by the test suite):
#                                        # copies the per-layer references (a few MB) to out/gpu-refs
#                                        # and makes the 160 photos (out/bench-photos)
#   bash bench/gpu_check.sh [OUT_DIR]    # on the GPU machine, from the repository root; needs
#                                        # python3 with torch (CUDA), numpy, protobuf, click, pillow, pytest
#                                        # (another interpreter: PYTHON=/path/to/python)
#
# The references are real Caffe's (tests/caffe_ref, cached by the conformance suite); the model-level
# references (100-200 MB each) stay behind, so the CUDA variants of the per-layer, per-case and dropout
# conformance tests run, and test_engine_cuda compares CUDA with the CPU. No network is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
REFS=out/gpu-refs
PHOTOS=out/bench-photos/list.txt

if [ "${1:-}" = "--prepare" ]; then
    digest=$("$PYTHON" -c "import sys; sys.path.insert(0, 'tests')
from caffe_ref.cases import all_cases, cases_digest; print(cases_digest(all_cases()))")
    source="${XDG_CACHE_HOME:-$HOME/.cache}/magic_init/caffe-refs/$digest"
    [ -f "$source/DONE" ] || { echo "gpu_check: no references at $source: run the conformance tests here first" >&2; exit 1; }
    rm -rf "$REFS" && mkdir -p "$REFS"
    find "$source" -maxdepth 1 -name '*.npz' ! -name 'model_*' -exec cp {} "$REFS/" \;
    cp "$source/DONE" "$REFS/"
    "$PYTHON" -c "import sys; sys.path.insert(0, 'bench'); import common; common.ensure_photos(160)"
    echo "gpu_check: $(ls "$REFS" | wc -l) reference files ($(du -sh "$REFS" | cut -f1)) in $REFS, photos in $(dirname "$PHOTOS")"
    echo "gpu_check: carry out/gpu-refs and out/bench-photos to the GPU machine"
    exit 0
fi

OUT_DIR=${1:-out/gpu-check}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('torch') else 'gpu_check: $PYTHON has no torch (PYTHON=/path/to/python with torch)')"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: torch sees no CUDA device')"
gpu=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0), '| torch', torch.__version__)")
[ -f "$REFS/DONE" ] || { echo "gpu_check: no references in $REFS (bash bench/gpu_check.sh --prepare, then carry it)" >&2; exit 1; }
[ -f "$PHOTOS" ] || { echo "gpu_check: no photos at $PHOTOS (bash bench/gpu_check.sh --prepare)" >&2; exit 1; }

# 1. CUDA conformance: the cuda-parametrized tests only (the CPU ones run in CI)
set +e
MAGIC_INIT_CAFFE_REFS="$PWD/$REFS" timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider -k cuda \
    tests/engine/test_engine_cuda.py tests/engine/conformance/test_conformance_layers.py \
    tests/engine/conformance/test_conformance_cases.py tests/engine/conformance/test_conformance_dropout.py \
    tests/test_torch.py > "$OUT_DIR/conformance.log" 2>&1
conformance_rc=$?
set -e
conformance=$(grep -E "^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)" "$OUT_DIR/conformance.log" | tail -1 | tr -d '=')

# 2. CaffeNet, k-means + both steps, 160 photos, on the GPU: a first run (CUDA start-up included) and a second
run_once() {
    local log="$OUT_DIR/caffenet_$1.log" began ended
    began=$(date +%s.%N)
    "$PYTHON" -m magic_init models/caffenet.prototxt "$OUT_DIR/caffenet_$1.caffemodel" --data "$PHOTOS" \
        --init kmeans --backend torch --device cuda --seed 0 -v > "$log" 2>&1
    ended=$(date +%s.%N)
    "$PYTHON" - "$log" "$began" "$ended" "$1" <<'EOF'
import re, sys
log, began, ended, label = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
text = open(log).read()
steps = {m.group(1): float(m.group(2)) for m in re.finditer(r"(WithinLayer|BetweenLayer) done in ([0-9.]+) s", text)}
spread = re.findall(r"change-rate spread ([^\n]*)", text)
print("| CaffeNet k-means + both, %s run | %.1f s | Alg. 1 %.2f s, Alg. 2 %.2f s (target: under 3 s for the job) | %s |"
      % (label, ended - began, steps.get("WithinLayer", float("nan")), steps.get("BetweenLayer", float("nan")),
         spread[-1] if spread else "no spread logged"))
EOF
}
first=$(run_once first)
second=$(run_once second)

echo
echo "| check | result | detail | |"
echo "|---|---|---|---|"
echo "| device | $gpu | | |"
echo "| CUDA conformance (rc $conformance_rc) | ${conformance:-no summary} | $OUT_DIR/conformance.log | |"
echo "$first"
echo "$second"
exit $conformance_rc

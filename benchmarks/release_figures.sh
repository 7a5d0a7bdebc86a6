#!/usr/bin/env bash
# Every figure that depends on the shipped weights, re-measured after a ship, in one command:
#   bash benchmarks/release_figures.sh OLD_CARD.json
# OLD_CARD.json is the card of the weights shipped before (copy facegnet/weights/facegnet-default.{pt,json}
# somewhere before exporting the new ones); the new weights are the shipped facegnet/weights/facegnet-default.json.
# Writes: the card's thresholds per procedure, impostor tails (the per-search threshold) and int8 ranges, its LFW
# figures (fp32 and int8, --record), and benchmarks/results/{procedures,search_threshold,lfw_eval*,lfw_roc,
# lfw_identification,gallery_40,cluster_lfw,identify_margins}.*.
# Detections are cached in runs/lfw_detections.sqlite, built on the first run (117 s on an idle 2-core AMD EPYC
# with AVX-512, 2026-12-04; about 10 minutes while a training run shares the CPU).
# LFW is evaluation only: nothing here chooses or tunes anything on it.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:-}
if [ -z "$old" ] || [ ! -f "$old" ]; then
    echo "release_figures.sh: the card of the weights shipped before is missing: '${old}' (usage: bash benchmarks/release_figures.sh OLD_CARD.json)" >&2
    exit 2
fi
PY=${PY:-.venv/bin/python}
FG=${FG:-.venv/bin/facegnet}
CARD=facegnet/weights/facegnet-default.json
CACHE=runs/lfw_detections.sqlite
mkdir -p runs
step() { echo "== $*" >&2; "$@"; }
step "$PY" benchmarks/calibrate_procedures.py --weights "$CARD" --ranges --write-card
step "$PY" benchmarks/calibrate_search_threshold.py --weights "$CARD" --write-card  # the impostor tail: release.py writes none
step "$FG" eval lfw --weights "$CARD" --detection-cache "$CACHE" --quiet --json benchmarks/results/lfw_eval.json \
    --plot benchmarks/results/lfw_roc.png --record
step "$FG" eval lfw --weights "$CARD" --detection-cache "$CACHE" --quiet --backend onnx-int8 \
    --json benchmarks/results/lfw_eval_onnx_int8.json --record
step "$FG" eval lfw --weights "$old" --detection-cache "$CACHE" --quiet --json runs/lfw_eval_previous.json
step "$PY" benchmarks/lfw_identification.py --weights "$CARD" --detection-cache "$CACHE" --quiet
step "$PY" benchmarks/gallery_40.py --people 40 --weights "$CARD" "$old"
step "$PY" benchmarks/cluster_lfw.py
step "$PY" benchmarks/identify_margins.py --weights "$CARD"  # then quote its margins in tests/test_gallery.py and tests/test_live.py
echo "release_figures.sh: done; the previous weights' LFW report is runs/lfw_eval_previous.json" >&2

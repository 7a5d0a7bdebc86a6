#!/usr/bin/env bash
# One GPU training run sized for a 15-minute device lease (issue 12), in two halves.
#
# Here (CPU machine), once: pack the faces and the teacher into .carry/ (git-ignored, never committed):
#   bash benchmarks/device_train.sh prepare [EXTRA_FOLDER ...]        # default: data/extra/fairface data/extra/utkface
# It prints the `carry` lists: shards of at most 40 MiB, because a call moves at most 64 MiB and the repo's own
# files (~19 MB) travel with every call; more shards travel in more calls (a file carried once stays on the warm
# machine while later calls name other files).
#
# There (GPU machine, repo root, its own python3 with PyTorch; nothing to install):
#   bash benchmarks/device_train.sh run MINUTES [more facegnet train options]     (DEVICE=cpu CARRY=DIR: a smoke test here)
# It unpacks the shards, trains with the online teacher run in PyTorch beside the student (augmentation on the
# GPU, AMP, channels-last, torch.compile), and leaves under $OUT: the log, config, best weights (EMA) and
# train_speed.json (images/s measured there) — copy that one into benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
shift || true

case "$mode" in
prepare)
    extras=("$@")
    [ ${#extras[@]} -gt 0 ] || extras=(data/extra/fairface data/extra/utkface)
    sources=(--source pack=../shared/data/train)
    for folder in "${extras[@]}"; do sources+=(--source "$(basename "$folder")=$folder"); done
    mkdir -p .carry/teacher
    cp ../shared/models/face-reidentification-retail-0095/*.xml ../shared/models/face-reidentification-retail-0095/*.bin .carry/teacher/
    python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
    "$python" -m facegnet.train.bundle pack "${sources[@]}" --out .carry/faces --quality 60 --max-mib 40
    du -b .carry/teacher .carry/faces/* | sort -k2
    echo "carry, first call:  [\".carry/teacher\", \".carry/faces/index.json\", \".carry/faces/faces-000.zip\"]"
    for shard in .carry/faces/faces-0*.zip; do
        [ "$shard" = .carry/faces/faces-000.zip ] || echo "carry, next call:   [\"$shard\"]"
    done
    ;;
run)
    minutes=${1:?minutes of training}
    shift
    out=${OUT:-runs/device}
    export PYTHONUNBUFFERED=1
    rm -rf /tmp/faces
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    python3 -m facegnet.train.bundle unpack "${CARRY:-.carry}/faces" /tmp/faces
    extra=$(ls -d /tmp/faces/*/ | grep -v '/pack/$' | sed 's:/$::' | paste -sd, -)
    python3 -m facegnet train --data /tmp/faces/pack ${extra:+--extra-data "$extra"} \
        --teacher-model "${CARRY:-.carry}/teacher" --teacher-engine torch --teacher-weight 60 \
        --head cosface --margin-weight 0.5 --distill cosine --distill-weight 30 \
        --device "${DEVICE:-cuda}" --bf16 --compile --batch-size 512 --lr 0.2 --warmup-steps 300 --ema 0.999 \
        --budget-minutes "$minutes" --epochs 200 \
        --flip 0.5 --colour 0.3 --grayscale 0.05 --blur 0.05 --lowres 0.1 --jitter 0.3 --erase 0.1 \
        --mixup 0.1 --cutmix 0.05 --eval-every 400 --checkpoint-minutes 3 --checkpoint-every 0 \
        --cache /tmp/faces/cache --out "$out/run" --no-progress "$@"
    python3 - "$out" <<'EOF'
import json, statistics, sys
out = sys.argv[1]
rows = [json.loads(line) for line in open(f"{out}/run/log.jsonl")]
steps = [r for r in rows if "img_s" in r][3:]  # the first windows include compilation
devs = [r for r in rows if r.get("event") == "dev"]
speed = {"what": "facegnet train images/s on the GPU machine (student + online teacher + augmentation)",
         "median_img_s": statistics.median(r["img_s"] for r in steps) if steps else None,
         "teacher_share": statistics.median(r.get("teacher_share", 0) for r in steps) if steps else None,
         "steps": rows[-1].get("step"), "dev": devs[-1] if devs else None,
         "config": json.load(open(f"{out}/run/config.json"))}
json.dump(speed, open(f"{out}/train_speed.json", "w"), indent=1)
print(json.dumps({k: v for k, v in speed.items() if k != "config"}))
EOF
    # What comes back: at most 8 files of at most 16 MiB. The best dev checkpoint slimmed to what
    # `python -m facegnet.train.release` reads here: its config and network (the EMA weights the dev score measured),
    # the data pointed back at ../shared's pack (its crops travelled byte for byte).
    python3 -c "import sys, torch; c = torch.load(sys.argv[1], map_location='cpu', weights_only=False); \
c['config'].update(data='../shared/data/train', cache=None); \
torch.save({k: c[k] for k in ('config', 'model', 'step', 'best', 'minutes')}, sys.argv[2])" \
        "$out/run/best.pt" "$out/best_slim.pt"
    rm -f "$out/run/last.pt" "$out/run/best.pt"
    ;;
*)
    echo "usage: $0 prepare [EXTRA_FOLDER ...] | run MINUTES [facegnet train options]" >&2
    exit 2
    ;;
esac

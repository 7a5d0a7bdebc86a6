#!/usr/bin/env bash
# A recipe (recipes/*.toml) trained on a GPU machine, in two halves; each call there finishes within 15 minutes.
#
# Here (CPU machine), once per recipe: pack what the recipe reads into .carry/ (git-ignored, never committed):
#   bash benchmarks/device_train.sh prepare RECIPE
# The recipe's training data (--data plus every --extra-data folder) goes into zip shards of at most 40 MiB
# (`python -m facegnet.train.bundle`), its online teacher's IR into .carry/teacher, a second teacher's stored
# targets (--view-targets) into .carry/view_targets and its --init weights into .carry/init.pt. It prints the `carry` lists: a call moves at most 64 MiB and the repo's own files travel with
# every call, so more shards travel in more calls (a file carried once stays on the warm machine).
#
# There (GPU machine, repo root, its own python3 with PyTorch; nothing to install):
#   bash benchmarks/device_train.sh run RECIPE MINUTES [facegnet train options]   (DEVICE=cpu CARRY=DIR: a smoke test here)
# It unpacks the shards and runs `facegnet train --config RECIPE` with the recipe's paths pointed at the unpacked
# copies and these GPU settings after it (later options win, so any of them can be overridden at the end):
#   --device cuda --teacher-engine torch   the online teacher runs in PyTorch beside the student
#   --bf16 --batch-size 512                float16 AMP and a batch that fills the GPU (scale --lr with it if wanted)
#   --max-minutes MINUTES                  pause with a checkpoint in time for the call to end (resume: --resume)
# and leaves under $OUT: the log, config, a slim best checkpoint (config + EMA network, for
# `python -m facegnet.train.release`) and train_speed.json (images/s measured there) — copy that one into
# benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
shift || true
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

# One field of a recipe's resolved configuration (empty when unset).
recipe_field() {
    "$python" -m facegnet train --config "$1" --dry-run |
        "$python" -c "import json, sys; v = json.load(sys.stdin)['$2']; print('' if v is None else v)"
}

case "$mode" in
prepare)
    recipe=${1:?usage: $0 prepare RECIPE}
    data=$(recipe_field "$recipe" data)
    sources=(--source "pack=$data")
    IFS=, read -r -a extras <<< "$(recipe_field "$recipe" extra_data)"
    for folder in "${extras[@]}"; do [ -z "$folder" ] || sources+=(--source "$(basename "$folder")=$folder"); done
    mkdir -p .carry
    carry='".carry/faces/index.json", ".carry/faces/faces-000.zip"'
    teacher=$(recipe_field "$recipe" teacher_model)
    if [ -n "$teacher" ]; then
        mkdir -p .carry/teacher
        cp "$teacher"/*.xml "$teacher"/*.bin .carry/teacher/
        carry="\".carry/teacher\", $carry"
    fi
    views=$(recipe_field "$recipe" view_targets)
    if [ -n "$views" ]; then
        mkdir -p .carry/view_targets
        cp "$views"/targets.json "$views"/targets.npy .carry/view_targets/
        carry="\".carry/view_targets\", $carry"
    fi
    init=$(recipe_field "$recipe" init)
    if [ -n "$init" ]; then
        cp "$init" .carry/init.pt
        carry="\".carry/init.pt\", $carry"
    fi
    "$python" -m facegnet.train.bundle pack "${sources[@]}" --out .carry/faces --quality 60 --max-mib 40
    du -b .carry/* .carry/faces/* | sort -k2
    echo "carry, first call:  [$carry]"
    for shard in .carry/faces/faces-0*.zip; do
        [ "$shard" = .carry/faces/faces-000.zip ] || echo "carry, next call:   [\"$shard\"]"
    done
    ;;
run)
    recipe=${1:?usage: $0 run RECIPE MINUTES [options]}
    minutes=${2:?minutes of training before the run pauses}
    shift 2
    python=python3
    carry_dir=${CARRY:-.carry}
    out=${OUT:-runs/device}
    export PYTHONUNBUFFERED=1
    rm -rf /tmp/faces
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    python3 -m facegnet.train.bundle unpack "$carry_dir/faces" /tmp/faces
    extra=$(ls -d /tmp/faces/*/ | { grep -v '/pack/$' || true; } | sed 's:/$::' | paste -sd, -)
    paths=(--data /tmp/faces/pack)
    [ -z "$extra" ] || paths+=(--extra-data "$extra")
    [ ! -d "$carry_dir/teacher" ] || paths+=(--teacher-model "$carry_dir/teacher")
    [ ! -d "$carry_dir/view_targets" ] || paths+=(--view-targets "$carry_dir/view_targets")
    [ ! -f "$carry_dir/init.pt" ] || paths+=(--init "$carry_dir/init.pt")
    python3 -m facegnet train --config "$recipe" "${paths[@]}" \
        --device "${DEVICE:-cuda}" --teacher-engine torch --bf16 --batch-size 512 --max-minutes "$minutes" \
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
    # the data pointed back at what the recipe names (the pack's crops travelled byte for byte).
    # The recipe's own paths (data, extra faces, teacher, init) replace the unpacked copies', for the licence line too.
    if [ -f "$out/run/best.pt" ]; then
        python3 -m facegnet train --config "$recipe" --dry-run > "$out/recipe.json"
        python3 -c "import json, sys, torch; c = torch.load(sys.argv[1], map_location='cpu', weights_only=False); \
r = json.load(open(sys.argv[3])); \
c['config'].update({k: r[k] for k in ('data', 'extra_data', 'teacher_model', 'view_targets', 'init')}, cache=None); \
torch.save({k: c[k] for k in ('config', 'model', 'step', 'best', 'minutes')}, sys.argv[2])" \
            "$out/run/best.pt" "$out/best_slim.pt" "$out/recipe.json"
    fi
    rm -f "$out/run/last.pt" "$out/run/best.pt"
    ;;
*)
    echo "usage: $0 prepare RECIPE | run RECIPE MINUTES [facegnet train options]" >&2
    exit 2
    ;;
esac

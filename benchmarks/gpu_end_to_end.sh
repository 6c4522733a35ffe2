#!/usr/bin/env bash
# end_to_end.py on Fashion-MNIST (issue 11 item 6) on a lent GPU: 3 seeds x 250K/500K/1M, DCA-NAS (search, then
# train) against DARTS_V2 narrowed to the same budget, both trained on all 60,000 images for as many epochs as
# fit one call. A probe first times a search step and a training step with all the study's processes running at
# once, then picks the search steps and training epochs that fit SEARCH_SECONDS/TRAIN_SECONDS.
# Measured on an H200 (BENCHMARKS.md 8c): processes sharing the card without MPS are served one after another,
# so 18 at once gave 1 training epoch; 6 at once (one budget, SEARCH_STEPS=300 EPOCHS=4) took 314 s. The whole
# study at 4 epochs needs two calls (BUDGETS=500K, then BUDGETS="1M 250K").
# WIDTH=baseline searches at the narrowed DARTS_V2's width, so only the cells differ (default auto).
#   local:  mkdir -p gpu_data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz gpu_data/fashion-mnist/
#   device: run(command="bash benchmarks/gpu_end_to_end.sh", carry=["gpu_data"], timeout_s=570)
#   smoke test on a CPU: DEVICE=cpu SEEDS=0 BUDGETS=250K PROBE_STEPS=2 MAX_SEARCH_STEPS=3 MAX_EPOCHS=1 \
#                        TRAIN_SUBSET=600 bash benchmarks/gpu_end_to_end.sh
set -uo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT="${OUT:-/tmp/dcanas-gpu}"
mkdir -p "$OUT"
DEVICE="${DEVICE:-cuda}"
DATA="${DATA:-gpu_data/fashion-mnist}"
SEEDS="${SEEDS:-0 1 2}"
BUDGETS="${BUDGETS:-1M 500K 250K}"
SEARCH_SECONDS="${SEARCH_SECONDS:-140}"  # each search, under the study's load
TRAIN_SECONDS="${TRAIN_SECONDS:-170}"    # each training, under the study's load
PROBE_STEPS="${PROBE_STEPS:-30}"
MAX_SEARCH_STEPS="${MAX_SEARCH_STEPS:-2350}"  # 10 epochs of batch 128 (the paper's search is 50)
MAX_EPOCHS="${MAX_EPOCHS:-30}"
TRAIN_SUBSET="${TRAIN_SUBSET:-}"
DEADLINE="${DEADLINE:-500}"  # seconds from the start of this script; the study is stopped there, results kept
CELLS=8; SEARCH_BATCH=128; TRAIN_BATCH=256; LR=0.1
start=$(date +%s)
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
fi
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/card.txt"
subset=${TRAIN_SUBSET:+--train-subset $TRAIN_SUBSET}
n=$(( $(echo $SEEDS | wc -w) * $(echo $BUDGETS | wc -w) ))

if [ -z "${SEARCH_STEPS:-}" ]; then  # SEARCH_STEPS=S EPOCHS=E skip the probe (e.g. a rerun at a first call's sizes)
rm -rf /tmp/probe_s* /tmp/probe_t*  # a second call on a warm machine finds the last probe's run folders
echo "== probe: $PROBE_STEPS steps, $n searches and $n trainings at once (the study's load) =="
for i in $(seq 1 "$n"); do
  python3 -m dcanas search --dataset fashion-mnist --data-dir "$DATA" --max-params 1M --cells $CELLS --channels auto \
    --batch-size $SEARCH_BATCH --max-steps "$PROBE_STEPS" --device "$DEVICE" --threads 1 --quiet --json \
    --run-dir "/tmp/probe_s$i" > "/tmp/probe_s$i.json" 2> "/tmp/probe_s$i.err" &
  python3 -m dcanas train DARTS_V2 --dataset fashion-mnist --data-dir "$DATA" --cells $CELLS --channels 46 \
    --batch-size $TRAIN_BATCH --epochs 1 --max-steps "$PROBE_STEPS" --device "$DEVICE" --threads 1 --quiet --json \
    $subset --run-dir "/tmp/probe_t$i" > "/tmp/probe_t$i.json" 2> "/tmp/probe_t$i.err" &
done
wait
tail -n 3 /tmp/probe_s1.err /tmp/probe_t1.err
read -r SEARCH_STEPS EPOCHS < <(python3 - "$n" "$SEARCH_SECONDS" "$TRAIN_SECONDS" "$MAX_SEARCH_STEPS" "$MAX_EPOCHS" \
                                  "${TRAIN_SUBSET:-60000}" "$TRAIN_BATCH" <<'EOF'
import json, sys
n, search_budget, train_budget, max_steps, max_epochs, images, batch = map(float, sys.argv[1:])
load = lambda kind, key: max(json.load(open(f"/tmp/probe_{kind}{i}.json"))[key] / json.load(open(
    f"/tmp/probe_{kind}{i}.json"))["steps"] for i in range(1, int(n) + 1))
search_step, train_step = load("s", "search_seconds"), load("t", "train_seconds")
steps_per_epoch = -(-images // batch)
epochs = int(max(1, min(max_epochs, train_budget // (train_step * steps_per_epoch))))
steps = int(max(1, min(max_steps, search_budget // search_step)))
print(f"under load: search step {search_step:.3f} s -> {steps} steps; train step {train_step:.3f} s "
      f"({steps_per_epoch:.0f} steps/epoch) -> {epochs} epochs", file=sys.stderr)
print(steps, epochs)
EOF
)
fi
if [ -z "${SEARCH_STEPS:-}" ] || [ -z "${EPOCHS:-}" ]; then echo "the probe failed: see /tmp/probe_*.err"; exit 1; fi
echo "search steps: $SEARCH_STEPS (batch $SEARCH_BATCH); training epochs: $EPOCHS (batch $TRAIN_BATCH)" | tee -a "$OUT/card.txt"
warmup=$(python3 -c "print(round(0.25 * $SEARCH_STEPS * $SEARCH_BATCH / 30000, 3))")  # a quarter, weights only

args=(--dataset fashion-mnist --data-dir "$DATA" --budgets $BUDGETS --seeds $SEEDS --cells $CELLS
      --search-steps "$SEARCH_STEPS" --search-batch $SEARCH_BATCH --arch-lr 3e-3 --search-warmup "$warmup"
      --train-epochs "$EPOCHS" --train-batch $TRAIN_BATCH --lr $LR --cutout 0 --drop-path 0 --eval-every "$EPOCHS"
      --width "${WIDTH:-auto}" $subset --device "$DEVICE" --jobs $(( 2 * n )) --runs-dir "$OUT/runs"
      --out "$OUT/end_to_end_fashion-mnist_gpu.md" --plot "$OUT/end_to_end_fashion-mnist_gpu.png"
      --note "one call on a lent GPU: search stopped after $SEARCH_STEPS steps (paper: 50 epochs), $CELLS-cell networks (paper: 20), $EPOCHS training epochs (paper: 600)")
left=$(( DEADLINE - ($(date +%s) - start) ))
if [ "$left" -lt 60 ]; then echo "only ${left} s left before the deadline: no study"; exit 1; fi
echo "== the study: ${left} s left before the deadline =="
timeout --signal=TERM "$left" python3 benchmarks/end_to_end.py "${args[@]}" 2>&1 | tee "$OUT/study.log"
# (timeout signals its whole process group, so the dcanas runs the deadline cut short stop too; not counted)
python3 benchmarks/end_to_end.py "${args[@]}" --report-only > /dev/null 2>&1 || echo "no finished run to report"
# what the report needs, not the checkpoints
(cd "$OUT" && find runs -name 'results.jsonl' -o -name '*.log' | tar czf runs.tar.gz -T - && rm -rf runs)
echo "took $(( $(date +%s) - start )) s" | tee -a "$OUT/card.txt"

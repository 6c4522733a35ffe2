#!/usr/bin/env bash
# search_quality.py's `paper` protocol (NB201's N=5 supernet, all 50,000 CIFAR-10 training images at 32 px,
# batch 64) on a lent GPU, with the epochs cut to what fits one call: a 40-step probe times a search step,
# then three seeds search at once for about SEARCH_SECONDS. The searches are unconstrained; every budget is
# landed from them afterwards on any machine (--budget-scope landing: one search serves every budget).
#   local:  mkdir -p gpu_data && cp ../shared/data/cifar10-jpeg/cifar10_jpg.tar.gz \
#             ../shared/data/nb201/nb201_cifar10_hw.csv gpu_data/          (git-ignored)
#   device: run(command="bash benchmarks/gpu_search_quality.sh", carry=["gpu_data"], timeout_s=600)
#   local:  tar xzf gpu_runs.tar.gz -C <dir>, then search_quality.py as printed at the end
set -uo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/dcanas-gpu}"
mkdir -p "$OUT"
DATA=gpu_data/cifar10_jpg.tar.gz
TABLE=gpu_data/nb201_cifar10_hw.csv
SEARCH_SECONDS="${SEARCH_SECONDS:-300}"  # the three searches together (data loading excluded)
SEEDS="${SEEDS:-0 1 2}"
PROBE_STEPS="${PROBE_STEPS:-40}"  # a smoke test of this script on a CPU: PROBE_STEPS=2 SWEEP_EXTRA='--extra max_steps=2'
SWEEP_EXTRA="${SWEEP_EXTRA:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/card.txt"

if [ -z "${EPOCHS:-}" ]; then  # EPOCHS=N skips the probe (e.g. more seeds at the epochs a first call chose)
echo "== probe: PROBE_STEPS search steps at the paper's size, three processes at once (as the sweep runs them) =="
for s in 0 1 2; do
  python3 -m dcanas search --space nb201 --dataset imagefolder --data-dir "$DATA" --bench-table "$TABLE" \
    --search-cells 15 --search-channels 16 --batch-size 64 --epochs 50 --max-steps "$PROBE_STEPS" --remedy beta-decay \
    --threads 1 --quiet --json --run-dir "/tmp/probe$s" > "/tmp/probe$s.json" 2> "/tmp/probe$s.err" &
done
wait
tail -2 /tmp/probe0.err
EPOCHS=$(python3 - "$SEARCH_SECONDS" <<'EOF'
import json, sys
budget = float(sys.argv[1])
rates = [json.load(open(f"/tmp/probe{s}.json")) for s in (0, 1, 2)]
step_s = max(r["search_seconds"] / r["steps"] for r in rates)
steps_per_epoch = 25_000 // 64  # half of the 50,000 images train the weights, half the alphas
print(f"step {step_s:.3f} s with three at once -> {budget / (step_s * steps_per_epoch):.1f} epochs fit",
      file=sys.stderr)
print(max(1, min(50, int(budget / (step_s * steps_per_epoch)))))
EOF
)
fi
echo "epochs: $EPOCHS of the protocol's 50" | tee -a "$OUT/card.txt"

echo "== the paper protocol, $EPOCHS epochs, seeds $SEEDS, unconstrained =="
start=$(date +%s)
python3 benchmarks/search_quality.py --protocol paper --methods beta-decay --seeds $SEEDS --jobs 3 \
  --budgets none --extra epochs="$EPOCHS" $SWEEP_EXTRA --data-dir "$DATA" --table "$TABLE" --tag "gpu-e$EPOCHS" \
  --runs-dir "$OUT/runs" --out "$OUT/search_quality_gpu.json" --report "$OUT/search_quality_gpu.md" \
  --plot "$OUT/search_quality_gpu.png" 2>&1 | grep -v "^searches" | tee "$OUT/sweep.log"
echo "sweep took $(( $(date +%s) - start )) s" | tee -a "$OUT/card.txt"
# what the landings need (config, result, history, metrics), not the supernet checkpoints
(cd "$OUT" && find runs -name '*.json' -o -name '*.jsonl' -o -name '*.csv' | tar czf gpu_runs.tar.gz -T - && rm -rf runs)
echo "land every budget: python benchmarks/search_quality.py --protocol paper --methods beta-decay --seeds $SEEDS" \
     "--budgets all --extra epochs=$EPOCHS --extra budget_scope='\"landing\"' --tag gpu-e$EPOCHS --runs-dir <dir>/runs"

#!/usr/bin/env bash
# Everything we measure on a lent GPU machine, in one call (see BENCHMARKS.md for the results).
#   local:  cp ../shared/data/cifar10-jpeg/cifar10_jpg.tar.gz gpu_data/   (git-ignored)
#   device: run(command="bash benchmarks/gpu.sh", carry=["gpu_data"])
# The machine's python3 already has torch, numpy, scikit-learn, Pillow, tqdm and matplotlib, so the
# package runs from src/ without installing.
set -uo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/dcanas-gpu}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/card.txt"

echo "== full-size throughput (batch 512 search, batch 96 training) =="
python3 benchmarks/gpu_throughput.py --device cuda 2>&1 | tee "$OUT/throughput.md"

echo "== search step ablation on the GPU =="
python3 benchmarks/search_step.py --device cuda --batch 64 256 --steps 5 --warmup 2 2>&1 | tee "$OUT/search_step_gpu.md"

if [ -f gpu_data/cifar10_jpg.tar.gz ]; then
  echo "== end to end: DCA-NAS search on the real CIFAR-10 (JPEG copy), 3.5M-parameter budget, 150 steps =="
  start=$(date +%s)
  python3 -m dcanas search --dataset imagefolder --data-dir gpu_data/cifar10_jpg.tar.gz --max-params 3.5M \
    --batch-size 512 --epochs 50 --max-steps 150 --quiet --json --run-dir "$OUT/search_run" \
    > "$OUT/search.json" 2> "$OUT/search.err"
  echo "exit $? after $(( $(date +%s) - start )) s (data loading included)"
  cat "$OUT/search.json"; tail -3 "$OUT/search.err"
  cp "$OUT/search_run/metrics.csv" "$OUT/search_metrics.csv" 2>/dev/null
  rm -rf "$OUT/search_run"
fi

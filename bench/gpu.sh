#!/usr/bin/env bash
# One prepared run for a fresh GPU machine: a CUDA smoke test of the engine, the CUDA tests (tests/gpu),
# then the quality benchmark's self-assessment matrix (G-T on Kvasir-SEG: alpha 0, strong mixed 0.3 and 0.5, the
# systematic regime; the noisy baseline at strong 0.5; the full 40-epoch protocol, 2 seeds), all runs
# in parallel on the one GPU, and the BENCHMARKS.md sections rendered there (the machine line names
# the GPU). Everything lands in one folder: $OUT when set, else bench/out/gpu.
#
#   bash bench/gpu.sh                                            # on the GPU machine
#   GTC_GPU_DEVICE=cpu GTC_GPU_SCHEDULE=smoke GTC_GPU_SIZE=32 bash bench/gpu.sh   # CPU proof, ~2 min
#
# Needs: python3 with torch, scikit-learn, scikit-image, scipy, pillow; MONAI is installed from wheels in
# .whl/ when present (a machine without an index), else from the package index. Kvasir-SEG is read from
# $GTC_SHARED_DATA (default ../shared/data). Outputs: quality.json, BENCHMARKS.md (this repo's with the
# new sections), logs.tar.gz, nvidia-smi.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/gpu}
DEVICE=${GTC_GPU_DEVICE:-cuda}
SCHEDULE=${GTC_GPU_SCHEDULE:-full}
SIZE=${GTC_GPU_SIZE:-128}
SEEDS=${GTC_GPU_SEEDS:-"0 1"}
mkdir -p "$OUT" "$OUT/logs"
export PYTHONUNBUFFERED=1 MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184
PY=${PYTHON:-python3}

if ! $PY -c "import monai" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/gtc-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/gtc-site
  else
    $PY -m pip install -q "monai>=1.4,<1.7" || exit 1
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
(nvidia-smi || echo "no nvidia-smi") >"$OUT/nvidia-smi.txt" 2>&1
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/nvidia-smi.txt"

finish() { tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$OUT/logs"; }
trap finish EXIT

start=$(date +%s)
if ! $PY -m bench.quality --smoke --device "$DEVICE" --no-markdown --out "$OUT/logs/smoke.json" \
  >"$OUT/logs/smoke.log" 2>&1; then
  echo "smoke benchmark failed on $DEVICE:"; tail -40 "$OUT/logs/smoke.log"; exit 1
fi
echo "smoke ok after $(( $(date +%s) - start )) s"
# The engine's CUDA tests (tests/gpu: fit and resume on CUDA, checkpoints and models moved to the CPU).
$PY -m pytest --version >/dev/null 2>&1 || $PY -m pip install -q pytest
if $PY -m pytest -q --noconftest -p no:cacheprovider -m gpu tests/gpu >"$OUT/logs/gpu-tests.log" 2>&1; then
  echo "gpu tests: $(tail -1 "$OUT/logs/gpu-tests.log")"
else
  echo "gpu tests failed:"; tail -30 "$OUT/logs/gpu-tests.log"
fi
$PY -c "from bench.kvasir import load_arrays; load_arrays($SIZE)" || exit 1
echo "data ready after $(( $(date +%s) - start )) s"

JSON="$OUT/quality.json"
common=(--schedule "$SCHEDULE" --size "$SIZE" --device "$DEVICE" --threads 1 --resume "$JSON")
pids=()
for cell in "strong 0" "strong 0.3" "strong 0.5" "systematic 0.5"; do
  read -r regime alpha <<<"$cell"
  for seed in $SEEDS; do for method in noisy gt; do
    $PY -m bench.quality "${common[@]}" --no-markdown --regimes "$regime" --alphas "$alpha" \
      --methods "$method" --seeds "$seed" >"$OUT/logs/run-$regime-$alpha-$method-$seed.log" 2>&1 &
    pids+=($!)
  done; done
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
echo "runs done after $(( $(date +%s) - start )) s (any failed: $failed)"
grep -h "test dice" "$OUT"/logs/run-*.log

cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
# Every run is in the JSON by now: these calls only render the tables (and would train what is missing).
for cell in "strong 0 0.3 0.5" "systematic 0.5"; do
  read -r regime alphas <<<"$cell"
  # shellcheck disable=SC2086
  $PY -m bench.quality "${common[@]}" --regimes "$regime" --alphas $alphas --methods noisy gt --seeds $SEEDS \
    --benchmarks "$OUT/BENCHMARKS.md" --section "gpu-${SCHEDULE}-${regime}" >>"$OUT/logs/render.log" 2>&1
done
cat "$OUT/logs/render.log"
echo "all done after $(( $(date +%s) - start )) s"
exit $failed

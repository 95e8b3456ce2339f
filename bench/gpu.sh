#!/usr/bin/env bash
# One prepared run for a fresh GPU machine: a CUDA smoke test of the engine, the CUDA tests (tests/gpu),
# the quality benchmark's strong-noise matrix (Kvasir-SEG, strong mixed alpha 0.5: noisy, gmm_select and
# G-T; 2 seeds; 256 px; the full 40-epoch protocol), all runs in parallel on the one GPU, then the speed
# benchmark's engine figures (bench.speed --engine-only: in-process and forward latency, G-T vs plain
# training), and the BENCHMARKS.md sections rendered there (the machine line names the GPU). Everything
# lands in one folder: $OUT when set, else bench/out/gpu.
#
#   bash bench/gpu.sh                                                        # on the GPU machine
#   GTC_GPU_DEVICE=cpu GTC_GPU_SCHEDULE=smoke GTC_GPU_SIZE=32 GTC_GPU_DATA=synthetic GTC_GPU_SEEDS=0 \
#     bash bench/gpu.sh                                                      # CPU proof, ~2 min (the tests)
#
# Settings: GTC_GPU_CELLS ("regime alpha" pairs separated by commas, default "strong 0.5"),
# GTC_GPU_METHODS ("noisy gmm_select gt"), GTC_GPU_SEEDS ("0 1"), GTC_GPU_SIZE (256), GTC_GPU_SCHEDULE
# (full), GTC_GPU_DATA (kvasir, or synthetic: the smoke data, no download).
# Needs: python3 with torch, scikit-learn, scikit-image, scipy, pillow; MONAI is installed from wheels in
# .whl/ when present (a machine without an index), else from the package index. Kvasir-SEG is read from
# $GTC_SHARED_DATA (default ../shared/data). Outputs: quality.json, speed.json, BENCHMARKS.md (this repo's
# with the new sections), logs.tar.gz, nvidia-smi.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/gpu}
DEVICE=${GTC_GPU_DEVICE:-cuda}
SCHEDULE=${GTC_GPU_SCHEDULE:-full}
SIZE=${GTC_GPU_SIZE:-256}
SEEDS=${GTC_GPU_SEEDS:-"0 1"}
CELLS=${GTC_GPU_CELLS:-"strong 0.5"}
METHODS=${GTC_GPU_METHODS:-"noisy gmm_select gt"}
DATA=${GTC_GPU_DATA:-kvasir}
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
data=()
speed=()
if [ "$DATA" = synthetic ]; then
  data=(--smoke)
else
  $PY -c "from bench.kvasir import load_arrays; load_arrays($SIZE)" || exit 1
fi
[ "$SCHEDULE" = smoke ] && speed=(--smoke)
echo "data ready after $(( $(date +%s) - start )) s"

JSON="$OUT/quality.json"
common=("${data[@]}" --schedule "$SCHEDULE" --size "$SIZE" --device "$DEVICE" --threads 1 --resume "$JSON")
IFS=',' read -ra cells <<<"$CELLS"
pids=()
failed=0
for cell in "${cells[@]}"; do
  read -r regime alpha <<<"$cell"
  for seed in $SEEDS; do for method in $METHODS; do
    $PY -m bench.quality "${common[@]}" --no-markdown --regimes "$regime" --alphas "$alpha" \
      --methods "$method" --seeds "$seed" >"$OUT/logs/run-$regime-$alpha-$method-$seed.log" 2>&1 &
    pids+=($!)
  done; done
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
echo "runs done after $(( $(date +%s) - start )) s (any failed: $failed)"
grep -h "test dice" "$OUT"/logs/run-*.log

cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
# Every run is in the JSON by now: these calls only render the tables (and would train what is missing).
for cell in "${cells[@]}"; do
  read -r regime alpha <<<"$cell"
  # shellcheck disable=SC2086
  $PY -m bench.quality "${common[@]}" --regimes "$regime" --alphas "$alpha" --methods $METHODS --seeds $SEEDS \
    --benchmarks "$OUT/BENCHMARKS.md" --section "gpu-${SCHEDULE}-${regime}-${alpha}" >>"$OUT/logs/render.log" 2>&1 \
    || failed=1
done
cat "$OUT/logs/render.log"
if ! $PY -m bench.speed "${speed[@]}" --engine-only --device "$DEVICE" --out "$OUT/speed.json" \
  --benchmarks "$OUT/BENCHMARKS.md" --section "gpu-speed" >"$OUT/logs/speed.log" 2>&1; then
  echo "speed benchmark failed:"; tail -30 "$OUT/logs/speed.log"; failed=1
fi
tail -12 "$OUT/logs/speed.log"
echo "all done after $(( $(date +%s) - start )) s"
exit $failed

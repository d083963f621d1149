#!/usr/bin/env bash
# Every figure in BENCHMARKS.md, in the order they were produced. Datasets first (resumable):
#   uni-o4 collect --env Hopper-v5 --out data/hopper --train-steps 1000000 --dataset-steps 200000
#   uni-o4 collect --env HalfCheetah-v5 --out data/halfcheetah --train-steps 1000000 --dataset-steps 200000
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-10000}
R=benchmarks/results
mkdir -p "$R"
$PY benchmarks/speed.py --threads 2 --out $R/speed.json
for ds in data/hopper/hopper-medium data/hopper/hopper-medium-replay data/halfcheetah/halfcheetah-medium; do
  env=Hopper-v5; case $ds in *halfcheetah*) env=HalfCheetah-v5;; esac
  $PY benchmarks/offline_quality.py --dataset $ds.hdf5 --env $env --steps "$STEPS" --seeds 0 1 2 \
    --out $R/offline_quality.jsonl
done
$PY benchmarks/offline_to_online.py --offline-runs runs/bench_offline --dataset hopper-medium --env Hopper-v5 \
  --seeds 0 1 2 --steps 100000 --out $R/offline_to_online.jsonl
$PY benchmarks/report.py --results $R   # tables to paste into BENCHMARKS.md

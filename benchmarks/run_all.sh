#!/usr/bin/env bash
# The current figures of BENCHMARKS.md, section by section, with the commands that made them.
# Hours of work on 2 cores: every script resumes from its JSON-lines results, so rerun after an
# interruption. Superseded sections (§6.1-6.3) and one-off investigations are not repeated here;
# their commands stay next to their tables. Pretraining (§5) is shipped as a checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
UNI=${UNI:-.venv/bin/uni-o4}
R=benchmarks/results
mkdir -p "$R"

# Datasets (no download exists; resumable)
# (HalfCheetah's current files: --threads 1; Hopper's were made with torch's default, 2 threads here)
$UNI collect --env HalfCheetah-v5 --out data/halfcheetah --train-steps 1000000 --dataset-steps 200000 --threads 1
$UNI collect --env Hopper-v5 --out data/hopper --train-steps 1000000 --dataset-steps 200000 --seed 1 --threads 2

# §1 offline quality (Uni-O4 vs BC, IQL, TD3+BC), 5,000 gradient steps each
$PY benchmarks/offline_quality.py --dataset data/halfcheetah/halfcheetah-medium.hdf5 --env HalfCheetah-v5 \
  --steps 5000 --seeds 0 1 2 --algos bc iql td3bc --out $R/offline_quality_halfcheetah_peers.jsonl
$PY benchmarks/offline_quality.py --dataset data/halfcheetah/halfcheetah-medium.hdf5 --env HalfCheetah-v5 \
  --steps 5000 --seeds 0 1 2 --algos uni_o4 --out $R/offline_quality_halfcheetah_uni_o4.jsonl
for ds in hopper-medium hopper-medium-replay; do
  seeds="0 1 2"; [ $ds = hopper-medium-replay ] && seeds="0 1 2 3 4"
  $PY benchmarks/offline_quality.py --dataset data/hopper/$ds.hdf5 --env Hopper-v5 --steps 5000 --seeds $seeds \
    --algos bc iql td3bc --out $R/offline_quality_hopper_peers.jsonl
  $PY benchmarks/offline_quality.py --dataset data/hopper/$ds.hdf5 --env Hopper-v5 --steps 5000 --seeds $seeds \
    --algos uni_o4 --out $R/offline_quality_hopper_uni_o4.jsonl
done

# §2 offline -> online (needs §1's offline runs in runs/bench_offline)
$PY benchmarks/offline_to_online.py --offline-runs runs/bench_offline --dataset halfcheetah-medium \
  --env HalfCheetah-v5 --seeds 0 1 2 --steps 100000 --eval-every 20000 --out $R/offline_to_online_halfcheetah.jsonl
$PY benchmarks/offline_to_online.py --offline-runs none --dataset halfcheetah-medium --env HalfCheetah-v5 \
  --seeds 0 1 2 --steps 100000 --eval-every 20000 --methods scratch_clip --out $R/ablation_o2o_scratch_clip_halfcheetah.jsonl
$PY benchmarks/offline_to_online.py --offline-runs runs/bench_offline --dataset hopper-medium --env Hopper-v5 \
  --seeds 0 1 2 --steps 100000 --eval-every 20000 --out $R/offline_to_online_hopper.jsonl
$PY benchmarks/offline_to_online.py --offline-runs runs/bench_offline --dataset hopper-medium-replay --env Hopper-v5 \
  --seeds 0 1 2 3 4 --steps 100000 --eval-every 20000 --methods uni_o4 --out $R/offline_to_online_hopper_medium_replay.jsonl

# §2b from-scratch PPO mean parameterisation
$PY benchmarks/ppo_scratch.py --env Hopper-v5 --steps 200000 --seeds 0 1 2 --out $R/ppo_scratch.jsonl

# §3 speed and §4 robot loop: run these on an idle machine
$PY benchmarks/speed.py --threads 2 --out $R/speed_idle_2026-12-05.json
$PY benchmarks/speed.py --threads 1 --out $R/speed_1thread_2026-12-05.json
$PY benchmarks/robot_loop.py --run-seconds 180 --throughput-seconds 30 --out $R/robot_loop_idle.json

# §6.0 field pipeline, Uni-O4 then the IQL baseline, 20 evaluation episodes per cell
$PY benchmarks/field.py --seeds 0 1 2 --out runs/bench_field --no-iql --offline-threads 1 --eval-episodes 20
$PY benchmarks/field.py --seeds 0 1 2 --out runs/bench_field --iql-only --eval-episodes 20

$PY benchmarks/report.py --results $R   # tables to paste into BENCHMARKS.md

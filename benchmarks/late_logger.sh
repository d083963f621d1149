#!/usr/bin/env bash
# uni-o4 bringup --sim --episodes 2 with its dataset_logger stopped (SIGSTOP) INTO seconds into episode 2
# and continued AFTER seconds after the recorder ended episode 2: does bringup wait for a late file, and
# name one that never comes? Prints the timeline and bringup's exit code; episodes in $OUT (BENCHMARKS §4e).
#   benchmarks/late_logger.sh 12 8    # stopped 16 s in all
#   benchmarks/late_logger.sh 8 10    # stopped ~22 s in all
set -u
INTO=${1:-12}; AFTER=${2:-8}; OUT=${OUT:-$(mktemp -d)/rec}
cd "$(dirname "$0")/.." && . .venv/bin/activate
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-64}
LOG=$(dirname "$OUT")/bringup.log; mkdir -p "$(dirname "$OUT")"
stamp() { echo "$(date +%T.%N | cut -c1-12) $*"; }
uni-o4 bringup --sim --policy uni_o4_ros/sim/checkpoints/go1_flat --out "$OUT" --episodes 2 > "$LOG" 2>&1 &
B=$!
until [ -f "$OUT/episode_000001.hdf5" ]; do sleep 0.2; done   # polling files: a benchmark's probe, not a test
sleep "$INTO"
L=$(pgrep -P $B -f dataset_logger_node); kill -STOP "$L"; stamp "logger stopped"
until grep -q "episode 2: max steps" "$LOG"; do sleep 0.2; done; stamp "recorder ended episode 2"
sleep "$AFTER"; kill -CONT "$L"; stamp "logger continued"
wait $B; rc=$?; stamp "bringup exit $rc"
grep -E "episode 2 written|never reached|not waiting" "$LOG"; ls "$OUT"

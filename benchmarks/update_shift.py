"""How far legitimate policy updates move the Go1's joint targets, per state: the scale behind the policy
node's `max_update_shift` (its rule: per state the largest joint, averaged over the states).

Each candidate (a saved policy folder, or a learner's run folder: its newest checkpoint) is compared with
the running policy on every observation of a recording (the dataset_logger's episode folder). Printed per
candidate: the rule's mean, and the median, 95th and 99th percentiles and the largest per-state shift,
which the mean hides.

    python benchmarks/update_shift.py --running uni_o4_ros/sim/checkpoints/go1_flat --states REC_DIR \
        --candidates LEARNER_RUN_DIR OFFLINE_RUN/final ... --out benchmarks/results/update_shift_2026-12-06.json
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from uni_o4_ros.learning import checkpoint as ckpt
from uni_o4_ros.learning.offline import load_policy
from uni_o4_ros.robot.episodes import read_episodes
from uni_o4_ros.robot.policy_update import VerifiedPolicy, joint_target_shifts


def candidate(path: Path, running: tuple) -> tuple:
    """(policy, normalizer) of a saved policy folder or of a learner's newest checkpoint."""
    if ckpt.exists(path, "learner"):
        tensors, _ = ckpt.load(path, "learner")
        policy, normalizer = copy.deepcopy(running[0]), copy.deepcopy(running[1])
        ckpt.load_prefixed("actor", policy, tensors)
        ckpt.load_prefixed("normalizer", normalizer, tensors)
        return policy, normalizer
    policy, normalizer, _, _ = load_policy(path)
    return policy, normalizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--running", type=Path, required=True, help="the policy the robot runs (saved policy folder)")
    ap.add_argument("--states", type=Path, required=True, help="a recording: folder of episode_*.hdf5")
    ap.add_argument("--candidates", type=Path, nargs="+", required=True)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    running = load_policy(a.running)[:2]
    obs = read_episodes(a.states).observations
    base = VerifiedPolicy(0, *running, "")
    rows = []
    for path in a.candidates:
        shift = joint_target_shifts(base, VerifiedPolicy(1, *candidate(path, running), ""), obs)
        rows.append({"candidate": str(path), "states": len(shift), "mean": float(shift.mean()),
                     "median": float(np.median(shift)), "p95": float(np.percentile(shift, 95)),
                     "p99": float(np.percentile(shift, 99)), "max": float(shift.max())})
        r = rows[-1]
        print(f"{path}: mean {r['mean']:.3f}  median {r['median']:.3f}  p95 {r['p95']:.3f}  p99 {r['p99']:.3f}  "
              f"max {r['max']:.3f} rad  ({r['states']} states)")
    if a.out:
        a.out.write_text(json.dumps({"running": str(a.running), "states": str(a.states), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

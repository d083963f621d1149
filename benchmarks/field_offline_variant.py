r"""One offline Uni-O4 variant on a recorded field dataset, then the field evaluation of its policy.

Used to choose the `small` offline budget (BENCHMARKS.md §6): the ensemble starts from the
shipped simulator policy as in `uni-o4 field`, overrides are `section.key=value`.

    python benchmarks/field_offline_variant.py v10k_i1000 /work/bench/field/seed0 --out /work/exp/runs \
        ope.horizon=20 ope.n_start_states=256 value.steps=10000 value.lr=3e-4 value.batch_size=256 \
        value.target_every=1 'value.q_hidden=[256,256]' 'value.v_hidden=[256,256]' dynamics.max_steps=3000 \
        dynamics.max_epochs=30 improvement.steps=1000 improvement.eval_every=100
    python benchmarks/field_offline_variant.py sim /work/bench/field/seed0   # the simulator policy itself
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from uni_o4_ros.field.pipeline import PRETRAINED
from uni_o4_ros.learning.config import load_config
from uni_o4_ros.learning.offline import OfflineTrainer, load_policy
from uni_o4_ros.robot.episodes import read_episodes
from uni_o4_ros.sim.evaluate import evaluate_go1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="variant name ('sim' evaluates the simulator policy only)")
    ap.add_argument("field_run", help="a field run folder with record/episodes")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--out", default="runs/field_variants")
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--initial-noise", type=float, default=0.05)
    args = ap.parse_intermixed_args()
    torch.set_num_threads(1)
    out, t0 = Path(args.out) / args.name, time.time()
    policy_dir = PRETRAINED
    if args.name != "sim":
        ds = read_episodes(Path(args.field_run) / "record" / "episodes")
        pol, norm, _, _ = load_policy(PRETRAINED)
        res = OfflineTrainer(load_config(None, ["env=go1", *args.overrides]), ds, out, init_policy=(pol, norm),
                             progress=False).run()
        policy_dir = out / "final"
        print(f"{args.name}: AM-Q {res.am_q:.3f}, {time.time() - t0:.0f} s", flush=True)
    rows = {}
    for vx in (0.5, 1.0):
        ev = evaluate_go1(policy_dir, "mattress", vx, args.episodes, seed=10_000, initial_noise=args.initial_noise)
        rows[vx] = ev.to_dict()
        print(f"{args.name} @ {vx} m/s: return {ev.mean_return:.2f} ± {ev.std_return:.2f}, tracking error "
              f"{ev.tracking_error:.3f}, falls/episode {ev.falls_per_episode:.2f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

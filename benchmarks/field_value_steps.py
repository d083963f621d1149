"""The field's offline stage on a recorded field run with another number of IQL value steps.

Trains offline Uni-O4 exactly as the field pipeline's learner does (same budget, seed, dataset and
simulator policy; `--value-steps` replaces the budget's `value.steps`) and measures the chosen
policy by the field evaluation (20 mean-action episodes per commanded speed on the mattress,
standing start with 0.05 rad of joint noise, evaluation seed 10000 + seed). The field run's
dynamics stage is reused; the value and improvement stages are new. BENCHMARKS.md §6.0.

    python benchmarks/field_value_steps.py runs/field --seed 0 --value-steps 30000 --out runs/field_v30k
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from uni_o4_ros.field.pipeline import OFFLINE_BUDGETS, PRETRAINED
from uni_o4_ros.learning.config import load_config
from uni_o4_ros.learning.offline import OfflineTrainer, load_policy
from uni_o4_ros.robot.episodes import read_episodes
from uni_o4_ros.sim.evaluate import evaluate_go1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("field_run", type=Path, help="a finished field run (its record/episodes and offline/stages)")
    ap.add_argument("--seed", type=int, required=True, help="the field run's seed")
    ap.add_argument("--value-steps", type=int, required=True)
    ap.add_argument("--budget", default="small")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True, help="offline run folder (resumable)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    (args.out / "stages").mkdir(parents=True, exist_ok=True)
    for stage in (args.field_run / "offline" / "stages").glob("dynamics-*"):
        if not (args.out / "stages" / stage.name).exists():
            shutil.copytree(stage, args.out / "stages" / stage.name)
    pol, norm, _, _ = load_policy(PRETRAINED)
    cfg = load_config(None, OFFLINE_BUDGETS[args.budget] + [f"seed={args.seed}", f"value.steps={args.value_steps}"])
    res = OfflineTrainer(cfg, read_episodes(args.field_run / "record" / "episodes"), args.out,
                         init_policy=(pol, norm), progress=False).run()
    rows = []
    for vx in (0.5, 1.0):
        ev = evaluate_go1(args.out / "final", "mattress", vx, args.episodes, seed=10_000 + args.seed,
                          initial_noise=0.05)
        rows.append(ev.to_dict())
        print(f"{vx} m/s: return {ev.mean_return:.2f} +- {ev.std_return / args.episodes ** 0.5:.2f}, "
              f"{round(ev.falls_per_episode * args.episodes)} of {args.episodes} fell (AM-Q {res.am_q:.3f})")
    (args.out / "evaluation.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

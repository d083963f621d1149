"""The field's offline stage on a recorded field run with another number of IQL value steps.

Trains offline Uni-O4 exactly as the field pipeline's learner does (the run's offline budget, seed
and dataset, the shipped simulator policy; `--value-steps` replaces the budget's `value.steps`) and
measures the chosen policy by the field evaluation (mean actions, the run's terrain, speeds, reset
noise and evaluation seed, 20 episodes per speed). Every setting but the value steps comes from the
run's config.json. The run's dynamics stage is reused; value and improvement are new. BENCHMARKS.md §6.0.

    python benchmarks/field_value_steps.py runs/field --value-steps 30000 --out runs/field_v30k
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from uni_o4_ros.field.pipeline import OFFLINE_BUDGETS, PRETRAINED, FieldConfig
from uni_o4_ros.learning.config import load_config
from uni_o4_ros.learning.offline import OfflineTrainer, load_policy
from uni_o4_ros.robot.episodes import read_episodes
from uni_o4_ros.sim.evaluate import evaluate_go1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("field_run", type=Path, help="a finished field run (its record/episodes and offline/stages)")
    ap.add_argument("--value-steps", type=int, required=True)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True, help="offline run folder (resumable)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    saved = json.loads((args.field_run / "config.json").read_text())
    field = FieldConfig(**{k: v for k, v in saved.items() if k != "policy"})  # recorded path may be gone
    (args.out / "stages").mkdir(parents=True, exist_ok=True)
    for stage in (args.field_run / "offline" / "stages").glob("dynamics-*"):
        if not (args.out / "stages" / stage.name).exists():
            shutil.copytree(stage, args.out / "stages" / stage.name)
    pol, norm, _, _ = load_policy(PRETRAINED)
    overrides = [f"seed={field.seed}", f"value.steps={args.value_steps}"]
    cfg = load_config(None, OFFLINE_BUDGETS[field.offline_budget] + overrides)
    res = OfflineTrainer(cfg, read_episodes(args.field_run / "record" / "episodes"), args.out,
                         init_policy=(pol, norm), progress=False).run()
    rows = []
    for vx in (field.low_speed, field.high_speed):
        ev = evaluate_go1(args.out / "final", field.terrain, vx, args.episodes, seed=10_000 + field.seed,
                          max_steps=field.episode_steps, initial_noise=field.eval_initial_noise)
        rows.append(ev.to_dict())
        print(f"{vx} m/s: return {ev.mean_return:.2f} +- {ev.std_return / args.episodes ** 0.5:.2f}, "
              f"{round(ev.falls_per_episode * args.episodes)} of {args.episodes} fell (AM-Q {res.am_q:.3f})")
    (args.out / "evaluation.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

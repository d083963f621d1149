r"""PPO from scratch on a Gymnasium MuJoCo task: the policy's mean parameterisation side by side.

`clip` (a linear mean whose executed action is clipped to [-1, 1], CleanRL's choice) against
`tanh` (a tanh-bounded mean, what `uni-o4 collect` and `online --scratch` use). Everything else
is identical: the project's PPO and its from-scratch settings (`scratch_config`), 64x64 networks,
the same seeds. Reported: the deterministic policy's return every `--eval-every` steps (5
episodes) and the mean return of the stochastic training episodes over the last 20k steps.
One JSON line per (variant, seed), so an interrupted run resumes.

    python benchmarks/ppo_scratch.py --env Hopper-v5 --steps 200000 --seeds 0 1 2 \
        --out benchmarks/results/ppo_scratch.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jsonl  # noqa: E402  (benchmarks/jsonl.py, beside this script)

from uni_o4_ros.learning.online import OnlineTrainer, make_gym_env, scratch_agent, scratch_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="Hopper-v5")
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--eval-every", type=int, default=50_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["clip", "tanh"], choices=["clip", "tanh"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="runs/bench_ppo_scratch")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = jsonl.finished(out, lambda r: (r["env"], r["variant"], r["seed"], r["steps"]))
    probe = make_gym_env(args.env)()
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    probe.close()
    for seed in args.seeds:
        for variant in args.variants:
            if (args.env, variant, seed, args.steps) in done:
                continue
            torch.manual_seed(seed)
            actor, critic, norm = scratch_agent(obs_dim, act_dim, mean_activation=variant)
            cfg = scratch_config(total_steps=args.steps, eval_every=args.eval_every, eval_episodes=5)
            t0 = time.time()
            hist = OnlineTrainer(cfg, make_gym_env(args.env, seed), actor, critic, norm,
                                 Path(args.work) / f"{args.env}-{variant}-{args.steps}-s{seed}", seed=seed,
                                 progress=False, stage="ppo").run()
            tail = [r for s, r in hist.train_returns if s > args.steps - 20_000]
            row = {"env": args.env, "variant": variant, "seed": seed, "steps": args.steps,
                   "eval_steps": hist.eval_steps, "eval_returns": hist.eval_returns,
                   "train_return_last_20k": float(np.mean(tail)) if tail else None,
                   "seconds": round(time.time() - t0, 1)}
            jsonl.append(out, row)


if __name__ == "__main__":
    main()

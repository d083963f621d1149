r"""Offline -> online: PPO fine-tuning from the Uni-O4 offline policy vs PPO from scratch, same
environment-step budget, same evaluation points (deterministic policy, D4RL-normalised score).

Needs the offline runs of offline_quality.py (RUN/<dataset>-s<seed>/final). Results are JSON
lines, one per (method, seed), so an interrupted run resumes.

    python benchmarks/offline_to_online.py --offline-runs runs/bench_offline --dataset hopper-medium \
        --env Hopper-v5 --seeds 0 1 2 --steps 100000 --out benchmarks/results/offline_to_online.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jsonl  # noqa: E402  (benchmarks/jsonl.py, beside this script)

from uni_o4_ros.data import normalized_score  # noqa: E402
from uni_o4_ros.learning import checkpoint as ckpt  # noqa: E402
from uni_o4_ros.learning.config import OnlineConfig, load_config  # noqa: E402
from uni_o4_ros.learning.offline import load_policy  # noqa: E402
from uni_o4_ros.learning.online import OnlineTrainer, make_gym_env, scratch_agent, scratch_config  # noqa: E402
from uni_o4_ros.learning.policy import GaussianPolicyEnsemble  # noqa: E402
from uni_o4_ros.learning.value import ValueNet  # noqa: E402


def shift_log_std(actor: GaussianPolicyEnsemble, shift: float) -> None:
    """Move the policy's exploration std without touching its mean (the deterministic policy that
    is evaluated): the bias of the log-std half of the output layer, before the bounded map."""
    last = actor.body.net[-1]
    with torch.no_grad():
        last.bias[..., actor.spec.act_dim:] += shift


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--offline-runs", required=True)
    ap.add_argument("--dataset", required=True, help="dataset stem, e.g. hopper-medium")
    ap.add_argument("--env", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--eval-every", type=int, default=10_000)
    ap.add_argument("--methods", nargs="+", default=["uni_o4", "scratch"],
                    choices=["uni_o4", "scratch", "scratch_clip"])
    ap.add_argument("--actor-lr", type=float, default=OnlineConfig.actor_lr,
                    help="fine-tuning actor learning rate (default: Table 5's 3e-5)")
    ap.add_argument("--eval-episodes", type=int, default=5,
                    help="deterministic episodes per evaluation (default 5, as in BENCHMARKS §2's tables)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="fine-tuning setting of OnlineConfig, e.g. --set critic_warmup_steps=10000 (uni_o4 only)")
    ap.add_argument("--log-std-shift", type=float, default=0.0,
                    help="add this to the offline policy's log-std pre-activations before fine-tuning (uni_o4 only; "
                         "an exploration-noise ablation: -0.35 halves Hopper's std of ~0.27, +0.35 raises it to ~0.47)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="runs/bench_o2o")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = jsonl.finished(out, lambda r: (r["method"], r["seed"]))
    for seed in args.seeds:
        for method in args.methods:
            if (method, seed) in done:
                continue
            torch.manual_seed(seed)
            t0 = time.time()
            if method == "uni_o4":
                src = Path(args.offline_runs) / f"{args.dataset}-s{seed}" / "final"
                actor, norm, meta, tensors = load_policy(src)
                critic = ValueNet(actor.spec.obs_dim, tuple(meta["v_hidden"]))
                ckpt.load_prefixed("value", critic, tensors)
                if args.log_std_shift:
                    shift_log_std(actor, args.log_std_shift)
                cfg = load_config(None, [f"online.total_steps={args.steps}", f"online.eval_every={args.eval_every}",
                                         f"online.eval_episodes={args.eval_episodes}",
                                         f"online.actor_lr={args.actor_lr}",
                                         *(f"online.{o}" for o in args.overrides)]).online
            else:
                probe = make_gym_env(args.env)()
                # "scratch": our from-scratch agent (tanh mean); "scratch_clip": CleanRL's clipped linear mean
                actor, critic, norm = scratch_agent(probe.observation_space.shape[0], probe.action_space.shape[0],
                                                    mean_activation="clip" if method == "scratch_clip" else "tanh")
                probe.close()
                cfg = scratch_config(total_steps=args.steps, eval_every=args.eval_every,
                                     eval_episodes=args.eval_episodes)
            trainer = OnlineTrainer(cfg, make_gym_env(args.env, seed), actor, critic, norm,
                                    Path(args.work) / f"{args.dataset}-{method}-s{seed}", seed=seed, progress=False,
                                    stage=method)
            hist = trainer.run()
            row = {"method": method, "seed": seed, "dataset": args.dataset, "steps": hist.eval_steps,
                   "returns": hist.eval_returns,
                   "scores": [float(normalized_score(args.env, r)) for r in hist.eval_returns],
                   "seconds": round(time.time() - t0, 1)}
            jsonl.append(out, row)


if __name__ == "__main__":
    main()

r"""Offline quality: Uni-O4 vs BC, IQL and TD3+BC (d3rlpy 2.8) on the same datasets, seeds and
gradient-step budget, evaluated by D4RL-normalised score of the final policy.

Budget rule: every peer gets `--steps` gradient steps. Uni-O4 gets the same `--steps` for each of
its supervised stages (IQL value, ensemble BC) and `--steps / 10` multi-step improvement steps
(the paper's ratio 1e5 : 1e4 within one phase), plus its dynamics model. The dynamics model is
neither a policy nor a value learner (the peers have none): `--dynamics budget` (default, §1's
table) caps it at `--steps` like everything else; `--dynamics paper` trains it as the paper does,
for its 1e5 steps (hopper-medium: 129 epochs, ~50 min on one core; BENCHMARKS §1 compares both;
before the default `dynamics.patience` became None the authors' holdout early stop could end it sooner).
Results are appended as JSON lines, so an interrupted run resumes where it stopped.

    python benchmarks/offline_quality.py --dataset data/hopper/hopper-medium.hdf5 --env Hopper-v5 \
        --seeds 0 1 2 --steps 10000 --out benchmarks/results/offline_quality.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jsonl  # noqa: E402  (benchmarks/jsonl.py, beside this script)

from uni_o4_ros.data import normalized_score, read_hdf5  # noqa: E402
from uni_o4_ros.learning.budgets import budget_overrides  # noqa: E402
from uni_o4_ros.learning.config import load_config  # noqa: E402
from uni_o4_ros.learning.offline import OfflineTrainer  # noqa: E402
from uni_o4_ros.learning.online import make_gym_env  # noqa: E402
from uni_o4_ros.learning.ppo import evaluate_policy  # noqa: E402


def evaluate_fn(act_fn, env: str, episodes: int, seed: int) -> np.ndarray:
    make = make_gym_env(env)
    e = make()
    rets = []
    for ep in range(episodes):
        obs, _ = e.reset(seed=10_000 + seed * 100 + ep)
        done, total = False, 0.0
        while not done:
            obs, r, te, tr, _ = e.step(np.clip(act_fn(obs), -1, 1))
            total += float(r)
            done = te or tr
        rets.append(total)
    e.close()
    return np.asarray(rets)


# The paper's cap (1e5 steps), and enough epochs that the cap or the holdout rule ends training.
DYNAMICS_BUDGETS = {"paper": ["dynamics.max_steps=100000", "dynamics.max_epochs=200"], "budget": []}


def run_uni_o4(ds, env: str, seed: int, steps: int, run_dir: Path, extra: list[str],
               dynamics: str = "budget") -> tuple[np.ndarray, dict]:
    overrides = budget_overrides("small") + [
        f"value.steps={steps}", f"bc.steps={steps}", f"improvement.steps={max(100, steps // 10)}",
        f"dynamics.max_steps={steps}", *DYNAMICS_BUDGETS[dynamics], f"env={env}", f"seed={seed}", *extra,
    ]
    if "medium-expert" in str(run_dir) and env.lower().startswith(("hopper", "halfcheetah")):
        overrides.append("value.expectile=0.5")  # the paper's setting for these two datasets
    cfg = load_config(None, overrides)
    torch.manual_seed(seed)
    res = OfflineTrainer(cfg, ds, run_dir, progress=False).run()
    rets = evaluate_policy(res.policy, res.normalizer, make_gym_env(env), 10, seed=10_000 + seed * 100)
    return rets, {"am_q": res.am_q, "dynamics": dynamics}


def run_d3rlpy(algo: str, ds, env: str, seed: int, steps: int) -> tuple[np.ndarray, dict]:
    import d3rlpy

    d3rlpy.seed(seed)
    data = d3rlpy.dataset.MDPDataset(
        observations=ds.observations, actions=ds.actions, rewards=ds.rewards,
        terminals=ds.terminals.astype(np.float32), timeouts=ds.timeouts.astype(np.float32),
    )
    scaler = d3rlpy.preprocessing.StandardObservationScaler()
    if algo == "iql":
        cfg = d3rlpy.algos.IQLConfig(observation_scaler=scaler, expectile=0.7, weight_temp=3.0,
                                     reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0))
    elif algo == "td3bc":
        cfg = d3rlpy.algos.TD3PlusBCConfig(observation_scaler=scaler, alpha=2.5)
    elif algo == "bc":
        cfg = d3rlpy.algos.BCConfig(observation_scaler=scaler)
    else:
        raise ValueError(algo)
    agent = cfg.create(device="cpu:0")
    agent.fit(data, n_steps=steps, n_steps_per_epoch=steps, show_progress=False, save_interval=10**9,
              logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    rets = evaluate_fn(lambda o: agent.predict(o[None].astype(np.float32))[0], env, 10, seed)
    return rets, {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--env", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--algos", nargs="+", default=["uni_o4", "bc", "iql", "td3bc"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="runs/bench_offline")
    ap.add_argument("--dynamics", choices=sorted(DYNAMICS_BUDGETS), default="budget",
                    help="Uni-O4's dynamics model: capped at --steps (budget, default) or trained as in the paper "
                         "(1e5 steps, each member's best-holdout weights kept)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = read_hdf5(args.dataset)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # rows of Uni-O4 with another dynamics budget are other results, not this one's
    done = jsonl.finished(out, lambda r: (r["dataset"], r["algo"], r["seed"], r["steps"],
                                          r.get("dynamics", "budget") if r["algo"] == "uni_o4" else None))
    name = Path(args.dataset).stem
    for seed in args.seeds:
        for algo in args.algos:
            if (name, algo, seed, args.steps, args.dynamics if algo == "uni_o4" else None) in done:
                continue
            t0 = time.time()
            if algo == "uni_o4":
                rets, extra = run_uni_o4(ds, args.env, seed, args.steps, Path(args.work) / f"{name}-s{seed}",
                                         args.overrides, args.dynamics)
            else:
                rets, extra = run_d3rlpy(algo, ds, args.env, seed, args.steps)
            row = {"dataset": name, "env": args.env, "algo": algo, "seed": seed, "steps": args.steps,
                   "return": float(rets.mean()), "score": float(normalized_score(args.env, rets.mean())),
                   "seconds": round(time.time() - t0, 1), **extra}
            jsonl.append(out, row)


if __name__ == "__main__":
    main()

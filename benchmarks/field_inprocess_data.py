"""Offline Uni-O4 on mattress data recorded in-process: does the amount of clean data decide the
offline stage? (BENCHMARKS.md §6.0, "Is it the data size?")

Records N transitions with `Go1Env` directly (lockstep, every episode from the reset pose under its
own command; the field pipeline records through the node graph instead), the shipped simulator
policy sampling its actions, episodes alternating 0.5 and 1.0 m/s. Then the field `small` offline
budget from the simulator policy, and 20 deterministic episodes per speed of the chosen policy
(episode i at seed 20000 + 7 i, 0.05 rad start noise).

    python benchmarks/field_inprocess_data.py --steps 30000 --seed 2 --out /work/exp/more
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from uni_o4_ros.field.pipeline import OFFLINE_BUDGETS, PRETRAINED
from uni_o4_ros.learning.config import load_config
from uni_o4_ros.learning.offline import OfflineTrainer, load_policy
from uni_o4_ros.robot.episodes import EpisodeWriter, read_episodes
from uni_o4_ros.sim.evaluate import evaluate_go1
from uni_o4_ros.sim.go1_env import Go1Env, Go1EnvConfig


def record(folder: Path, steps: int, seed: int) -> None:
    pol, norm, _, _ = load_policy(PRETRAINED)
    env, writer = Go1Env(Go1EnvConfig(terrain="mattress", max_steps=1000)), EpisodeWriter(folder)
    g = torch.Generator().manual_seed(seed)
    total, eid = 0, 0
    while total < steps:
        eid += 1
        obs, _ = env.reset(seed=seed * 100_000 + eid, options={"vx": (0.5, 1.0)[(eid - 1) % 2]})
        for step in range(1000):
            with torch.no_grad():
                mean, log_std = pol(norm(torch.as_tensor(obs[None], dtype=torch.float32)))
                a = mean + torch.randn(mean.shape, generator=g) * log_std.exp()
                logp = float(pol.gaussian_log_prob(mean, log_std, a)[0, 0])
            a = a[0, 0].numpy().astype(np.float32)
            nxt, r, term, trunc, _ = env.step(a)
            writer.add({"episode_id": eid, "step": step, "observation": obs, "next_observation": nxt, "action": a,
                        "log_prob": logp, "reward": r, "terminal": term, "timeout": trunc, "policy_version": 0})
            obs, total = nxt, total + 1
            if term or trunc:
                break
        writer.finish(eid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10_000, help="transitions to record (whole episodes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/field_inprocess")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out, t0 = Path(args.out) / f"s{args.seed}_{args.steps // 1000}k", time.time()
    episodes = out / "record" / "episodes"
    if not any(episodes.glob("*.hdf5")):
        record(episodes, args.steps, args.seed)
    ds = read_episodes(episodes)
    print(f"{len(ds)} transitions, {time.time() - t0:.0f} s", flush=True)
    pol, norm, _, _ = load_policy(PRETRAINED)
    res = OfflineTrainer(load_config(None, OFFLINE_BUDGETS["small"] + [f"seed={args.seed}"]), ds, out / "offline",
                         init_policy=(pol, norm), progress=False).run()
    print(f"offline: AM-Q {res.am_q:.3f}, {time.time() - t0:.0f} s", flush=True)
    summary = {"transitions": len(ds)}
    for vx in (0.5, 1.0):
        evs = [evaluate_go1(out / "offline" / "final", "mattress", vx, 1, seed=20_000 + 7 * i, initial_noise=0.05)
               for i in range(20)]
        r = np.array([e.mean_return for e in evs])
        falls = int(sum(e.falls_per_episode for e in evs))
        summary[str(vx)] = {"mean": float(r.mean()), "se": float(r.std(ddof=1) / np.sqrt(len(r))), "falls": falls}
        print(f"offline @ {vx}: {r.mean():.2f} ± {r.std(ddof=1) / np.sqrt(len(r)):.2f} (SE), falls {falls}/20",
              flush=True)
    (out / "result.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

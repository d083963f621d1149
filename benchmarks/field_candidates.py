"""Every candidate of an offline field run (accepted behaviour policies and final targets): its
return in the simulator next to its AM-Q score over several independent draws of start states.

Shows whether the final AM-Q choice picks a good candidate (BENCHMARKS.md §6). Uses the run's
cached value, dynamics and improvement stages; nothing is retrained.

    python benchmarks/field_candidates.py /work/bench/field2/seed0 --seed 0 --draws 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from uni_o4_ros.field.pipeline import OFFLINE_BUDGETS, PRETRAINED
from uni_o4_ros.learning import checkpoint as ckpt
from uni_o4_ros.learning.config import load_config
from uni_o4_ros.learning.offline import OfflineTrainer, load_policy
from uni_o4_ros.learning.ope import am_q
from uni_o4_ros.learning.policy import GaussianPolicyEnsemble
from uni_o4_ros.learning.termination import rule_for_env
from uni_o4_ros.robot.episodes import read_episodes
from uni_o4_ros.sim.evaluate import evaluate_actor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("field_run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", default="small")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--start-states", type=int, default=2048)
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--offline-dir", help="the offline run to read (default: FIELD_RUN/offline)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides that run was made with")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.offline_dir or Path(args.field_run) / "offline")
    pol, norm, _, _ = load_policy(PRETRAINED)
    cfg = load_config(None, OFFLINE_BUDGETS[args.budget] + [f"seed={args.seed}"] + args.set)
    trainer = OfflineTrainer(cfg, read_episodes(Path(args.field_run) / "record" / "episodes"), run,
                             init_policy=(pol, norm), progress=False)
    critic, _ = trainer.train_value()  # cached stages: loaded, not retrained
    model, _ = trainer.train_dynamics()
    improve = sorted(run.glob("stages/improve-*"))
    if not improve:
        raise SystemExit(f"no improvement stage in {run}")
    tensors, _ = ckpt.load(improve[0], "stage")
    # The simulator policy every member started from: what the offline stage must beat.
    names, candidates = ["simulator (initial)"], [pol]
    for prefix in ("behavior", "target"):
        ens = GaussianPolicyEnsemble(pol.spec, cfg.bc.n_policies)
        ckpt.load_prefixed(prefix, ens, tensors)
        candidates.append(ens)
        names += [f"{prefix} {i}" for i in range(ens.n)]
    obs, bounds = trainer.obs, trainer.state_bounds()
    draws = []
    for d in range(args.draws):
        g = torch.Generator().manual_seed(100 + d)
        starts = obs[torch.randint(len(obs), (args.start_states,), generator=g)]
        draws.append(am_q(candidates, critic.q, model, rule_for_env("go1"), norm, starts, cfg.ope.horizon,
                          cfg.ope.gamma, generator=g, state_bounds=bounds, q_head=cfg.ope.heads()[1]).tolist())
    print("| candidate | " + " | ".join(f"AM-Q draw {d}" for d in range(args.draws))
          + " | return @ 0.5 m/s | falls @ 0.5 | return @ 1.0 m/s | falls @ 1.0 |")
    print("|---|" + "---|" * (args.draws + 4))
    k = 0
    for ens in candidates:
        for i in range(ens.n):
            def act(o, ens=ens, i=i):
                with torch.no_grad():
                    mean, _ = ens(norm(torch.as_tensor(o[None], dtype=torch.float32)))
                return mean[i, 0].numpy()
            evs = [evaluate_actor(act, "mattress", vx, args.episodes, seed=10_000, initial_noise=0.05)
                   for vx in (0.5, 1.0)]
            best = ["**" if max(range(len(names)), key=lambda j, d=d: draws[d][j]) == k else ""
                    for d in range(args.draws)]
            print(f"| {names[k]} | " + " | ".join(f"{b}{draws[d][k]:.3f}{b}" for d, b in enumerate(best))
                  + " | " + " | ".join(f"{e.mean_return:.2f} | {e.falls_per_episode:.2f}" for e in evs) + " |",
                  flush=True)
            k += 1


if __name__ == "__main__":
    main()

"""What each candidate's AM-Q score of one Uni-O4 offline run is made of (BENCHMARKS.md §1).

AM-Q sums Q along model rollouts until the termination rule fires, so two candidates can differ
by the Q they earn per step or by how long the model keeps them alive. For every candidate (BC
members, accepted behaviours, final targets) this prints its AM-Q on fresh start states, the
fraction of rollouts alive at the horizon, the mean live steps, Q per live step, and the steps on
which the model left the dataset's state range (and was clamped back). Reads the run's cached
stages and its resolved config; nothing is retrained and no environment is touched.

    python benchmarks/amq_breakdown.py runs/bench_offline/hopper-medium-replay-s2 \\
        --dataset data/hopper/hopper-medium-replay.hdf5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from offline_candidates import load_candidates  # the sibling script: same folder on sys.path

from uni_o4_ros.data import read_hdf5
from uni_o4_ros.learning.config import UniO4Config, from_dict
from uni_o4_ros.learning.offline import OfflineTrainer, load_policy
from uni_o4_ros.learning.ope import am_q_per_start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="an offline run folder (final/ and stages/)")
    ap.add_argument("--dataset", required=True, help="the HDF5 file the run was trained on")
    ap.add_argument("--starts", type=int, default=512, help="start states drawn from the dataset")
    ap.add_argument("--seed", type=int, default=7, help="seed of the start states and model draws")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    final, _, meta, _ = load_policy(run / "final")
    cfg = from_dict(UniO4Config, meta["config"])
    before = sorted(p.name for p in run.glob("stages/*"))
    trainer = OfflineTrainer(cfg, read_hdf5(args.dataset), run, progress=False)
    critic, _ = trainer.train_value()
    model, _ = trainer.train_dynamics()
    if sorted(p.name for p in run.glob("stages/*")) != before:
        raise SystemExit(f"{run}: a stage had to be trained, so --dataset is not the run's data")
    candidates = load_candidates(run, final.spec)
    ensembles = [candidates[kind] for kind in ("initial", "behavior", "target")]
    gen = torch.Generator().manual_seed(args.seed)
    starts = trainer.obs[torch.randint(len(trainer.obs), (args.starts,), generator=gen)]
    trace: dict[str, torch.Tensor] = {}
    _, ope_head = cfg.ope.heads()
    total = am_q_per_start(ensembles, critic.q, model, trainer.termination(), trainer.normalizer, starts,
                           cfg.ope.horizon, cfg.ope.gamma, generator=gen, state_bounds=trainer.state_bounds(),
                           q_head=ope_head, trace=trace)
    live, clamped = trace["live_steps"], trace["clamped_steps"]
    names = [f"{kind} {i}" for kind, ens in zip(("initial", "behavior", "target"), ensembles) for i in range(ens.n)]
    print(f"H = {cfg.ope.horizon}, {args.starts} start states")
    for i, name in enumerate(names):
        print(f"{name:11s} AM-Q {total[i].mean():9.1f}  ran all H {(live[i] == cfg.ope.horizon).float().mean():.2f}"
              f"  live steps {live[i].mean():6.1f}  Q per live step {total[i].sum() / live[i].sum():7.2f}"
              f"  clamped steps {clamped[i].mean():5.1f}", flush=True)


if __name__ == "__main__":
    main()

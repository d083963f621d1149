"""Every candidate of one Uni-O4 offline run (the BC members, the accepted behaviour policies and
the final targets): its return in the environment next to the AM-Q score the run gave it.

Shows whether the final AM-Q choice picked a good candidate (BENCHMARKS.md §1). Reads the run's
cached stages and selection.json; nothing is retrained, and the returns are never fed back.

    python benchmarks/offline_candidates.py runs/bench_offline/hopper-medium-s1 --env Hopper-v5 --episodes 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from uni_o4_ros.learning import checkpoint as ckpt
from uni_o4_ros.learning.offline import load_policy
from uni_o4_ros.learning.online import make_gym_env
from uni_o4_ros.learning.policy import GaussianPolicyEnsemble, PolicySpec
from uni_o4_ros.learning.ppo import evaluate_policy


def _stage(run: Path, name: str) -> Path:
    # A rerun with changed settings leaves its old stages beside the new ones; picking one by name
    # could score another run's candidates against this run's selection.json.
    found = sorted(run.glob(f"stages/{name}-*"))
    if len(found) != 1:
        raise SystemExit(f"expected one {name} stage in {run}, found {len(found)}: "
                         f"{', '.join(p.name for p in found) or 'none'}")
    return found[0]


def load_candidates(run: Path, spec: PolicySpec) -> dict[str, GaussianPolicyEnsemble]:
    """The run's BC members ("initial"), accepted behaviours and final targets, from its stages."""
    ensembles = {}
    for kind, stage, prefix in (("initial", "bc", "policy"), ("behavior", "improve", "behavior"),
                                ("target", "improve", "target")):
        tensors, _ = ckpt.load(_stage(run, stage), "stage")
        n_members = tensors[f"{prefix}.body.net.0.weight"].shape[0]  # weights are stacked per member
        ens = GaussianPolicyEnsemble(spec, n_members)
        ckpt.load_prefixed(prefix, ens, tensors)
        ensembles[kind] = ens
    return ensembles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="an offline run folder (with final/, selection.json and stages/)")
    ap.add_argument("--env", required=True, help="Gymnasium task the dataset came from")
    ap.add_argument("--episodes", type=int, default=5, help="deterministic episodes per candidate")
    ap.add_argument("--seed", type=int, default=1000, help="first evaluation episode's reset seed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    final, normalizer, _, _ = load_policy(run / "final")
    selection = json.loads((run / "selection.json").read_text())
    ensembles = load_candidates(run, final.spec)
    for name, score in zip(selection["candidates"], selection["scores"]):
        kind, member = name.split()
        r = evaluate_policy(ensembles[kind], normalizer, make_gym_env(args.env), args.episodes,
                            seed=args.seed, member=int(member))
        print(f"{name:12s} AM-Q {score:10.1f}   return {r.mean():7.1f} +- {r.std():6.1f} (min {r.min():7.1f})",
              flush=True)
    print("chosen:", selection["candidates"][selection["index"]])


if __name__ == "__main__":
    main()

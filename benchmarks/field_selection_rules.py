"""The final-choice rules side by side on one field run's candidates (BENCHMARKS.md §6.2).

Reruns only the improvement stage of a finished field run (its value and dynamics stages are
copied and reused, so they are the run's own), with optional improvement overrides, on one
thread (deterministic). Then evaluates every candidate in the simulator on the mattress and
prints which one each rule picks from the run's own final AM-Q scores: `am_q` (the paper's
highest score) and `closest_certified` (selection.py).

    python benchmarks/field_selection_rules.py /work/bench/field3/seed0 --seed 0 --name base \\
        --out /work/exp/runs2
    python benchmarks/field_selection_rules.py /work/bench/field3/seed2 --seed 2 --name kl0 \\
        --out /work/exp/runs2 improvement.kl_alpha=0
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from uni_o4_ros.field.pipeline import OFFLINE_BUDGETS, PRETRAINED
from uni_o4_ros.learning import checkpoint as ckpt
from uni_o4_ros.learning.config import load_config
from uni_o4_ros.learning.offline import OfflineTrainer, load_policy
from uni_o4_ros.learning.policy import GaussianPolicyEnsemble
from uni_o4_ros.robot.episodes import read_episodes
from uni_o4_ros.sim.evaluate import evaluate_actor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("field_run", help="a finished field run (record/episodes and offline/stages)")
    ap.add_argument("overrides", nargs="*", help="improvement overrides, section.key=value")
    ap.add_argument("--seed", type=int, required=True, help="the field run's seed (its stages are keyed by it)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--out", default="runs/field_selection_rules")
    ap.add_argument("--budget", default="small")
    ap.add_argument("--episodes", type=int, default=3)
    args = ap.parse_intermixed_args()  # overrides may follow the options (as in the usage above)
    torch.set_num_threads(1)
    field, out, t0 = Path(args.field_run), Path(args.out) / args.name, time.time()
    (out / "stages").mkdir(parents=True, exist_ok=True)
    for d in (field / "offline" / "stages").iterdir():
        if not d.name.startswith("improve") and not (out / "stages" / d.name).exists():
            shutil.copytree(d, out / "stages" / d.name)
    pol, norm, _, _ = load_policy(PRETRAINED)
    cfg = load_config(None, OFFLINE_BUDGETS[args.budget] + [f"seed={args.seed}", *args.overrides])
    OfflineTrainer(cfg, read_episodes(field / "record" / "episodes"), out, init_policy=(pol, norm),
                   progress=False).run()
    print(f"{args.name}: offline {time.time() - t0:.0f} s", flush=True)

    sel = json.loads((out / "selection.json").read_text())
    tensors, _ = ckpt.load(next(out.glob("stages/improve-*")), "stage")
    ensembles = {}
    for prefix in ("behavior", "target"):
        ensembles[prefix] = GaussianPolicyEnsemble(pol.spec, cfg.bc.n_policies)
        ckpt.load_prefixed(prefix, ensembles[prefix], tensors)
    n = cfg.bc.n_policies
    rows: dict[int, list[tuple[float, float]]] = {}
    print("| candidate | AM-Q | gain ± SE | KL | return @ 0.5 | falls @ 0.5 | return @ 1.0 | falls @ 1.0 |")
    print("|---|---|---|---|---|---|---|---|")
    for k in range(n, 3 * n):
        ens, i = ensembles["behavior" if k < 2 * n else "target"], k % n

        def act(o, ens=ens, i=i):
            with torch.no_grad():
                mean, _ = ens(norm(torch.as_tensor(o[None], dtype=torch.float32)))
            return mean[i, 0].numpy()

        evs = [evaluate_actor(act, "mattress", vx, args.episodes, seed=10_000, initial_noise=0.05) for vx in (0.5, 1.0)]
        rows[k] = [(e.mean_return, e.falls_per_episode) for e in evs]
        print(f"| {sel['candidates'][k]} | {sel['scores'][k]:.3f} | {sel['gain'][k]:.3f} ± {sel['gain_se'][k]:.3f} "
              f"| {sel['kl'][k]:.2f} | " + " | ".join(f"{r:.2f} | {f:.2f}" for r, f in rows[k]) + " |", flush=True)
    # Both rules from the run's own scores, gains and KLs (selection.json records all of them).
    certified = [k for k, ok in enumerate(sel["certified"]) if ok]
    picks = {"am_q": max(range(3 * n), key=lambda k: sel["scores"][k]),
             "closest_certified": min(certified, key=lambda k: sel["kl"][k]) if certified else 0}
    for rule, k in picks.items():
        shown = "the starting policy" if k < n else sel["candidates"][k] + ": " + " / ".join(
            f"{r:.2f} (falls {f:.2f})" for r, f in rows[k])
        print(f"{args.name} {rule} picks {shown}", flush=True)
    (out / "candidates.json").write_text(json.dumps({"rows": rows, "picks": picks, "selection": sel}, indent=2))


if __name__ == "__main__":
    main()

"""Holdout MSE of Uni-O4's dynamics model epoch by epoch: how long the model keeps improving, and
where the authors' early stop (patience 5 epochs, >1% improvement) would have ended it.

Trains the offline pipeline's dynamics stage exactly as `uni-o4 offline` does for that seed (same
initialisation, same holdout split), with the stop rule off unless `--patience` is given, and
writes the per-epoch curve (the run's scalars.csv), a JSON summary and a PNG.

    python benchmarks/dynamics_curve.py --dataset data/hopper/hopper-medium.hdf5 --env Hopper-v5 --seed 1 \\
        --work runs/dynamics_curve_s1 --out benchmarks/results/dynamics_curve_hopper_medium_s1.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uni_o4_ros.data import read_hdf5  # noqa: E402
from uni_o4_ros.learning.config import load_config  # noqa: E402
from uni_o4_ros.learning.dynamics import HOLDOUT_IMPROVEMENT  # noqa: E402
from uni_o4_ros.learning.offline import OfflineTrainer  # noqa: E402
from uni_o4_ros.learning.scalars import read_log  # noqa: E402


def patience_stop(curve: list[tuple[int, float]], patience: int) -> int | None:
    """Epoch at which the authors' rule would stop on this curve (here judged on the members'
    mean MSE; the pipeline's rule asks whether any member improved), or None."""
    best, since = float("inf"), 0
    for epoch, mse in curve:
        if best == float("inf") or (best - mse) / best > HOLDOUT_IMPROVEMENT:
            best, since = mse, 0
        else:
            since += 1
        if since >= patience:
            return epoch
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--env", required=True, help="Gymnasium id; selects the termination rule")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=100_000, help="gradient steps (the paper's 1e5)")
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=None, help="the authors' stop rule (default: off)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", required=True, help="run folder (its dynamics stage is cached there)")
    ap.add_argument("--out", required=True, help="JSON summary; a PNG of the curve is written beside it")
    args = ap.parse_args()
    if (Path(args.work) / "scalars.csv").exists():
        raise SystemExit(f"{args.work} already holds a run: the curve is logged while training, use a new --work")
    torch.set_num_threads(args.threads)
    overrides = [f"env={args.env}", f"seed={args.seed}", f"dynamics.max_steps={args.max_steps}",
                 f"dynamics.max_epochs={args.max_epochs}", f"dynamics.patience={args.patience}"]
    trainer = OfflineTrainer(load_config(None, overrides), read_hdf5(args.dataset), args.work)
    t0 = time.monotonic()
    _, key = trainer.train_dynamics()
    seconds = time.monotonic() - t0
    stage = json.loads(next(Path(args.work).glob(f"stages/dynamics*{key}*/stage.json")).read_text())
    trainer.log.close()
    series = read_log(Path(args.work) / "scalars.csv")
    curve = sorted(series[("dynamics", "holdout_mse")])
    steps = dict(series[("dynamics", "steps")])
    stop5 = patience_stop(curve, 5)
    summary = {
        "dataset": args.dataset, "seed": args.seed, "overrides": overrides, "threads": args.threads,
        "seconds": round(seconds), "epochs": len(curve), "steps": int(steps[curve[-1][0]]),
        "best_epoch_mse": min(curve, key=lambda p: p[1]), "last_epoch_mse": curve[-1],
        "elites_holdout_mse": stage["holdout_mse"],  # each member's best weights restored, the 5 best
        "authors_rule_would_stop_at_epoch": stop5,
        "authors_rule_steps": None if stop5 is None else int(steps[stop5]),
        "curve": curve,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([steps[e] for e, _ in curve], [m for _, m in curve], lw=1.2)
    if stop5 is not None:
        ax.axvline(steps[stop5], color="tab:red", ls="--", lw=1, label="authors' rule (patience 5) stops")
        ax.legend()
    ax.set_xlabel("gradient steps")
    ax.set_ylabel("holdout MSE (mean of members)")
    ax.set_title(f"dynamics model, {Path(args.dataset).stem}, seed {args.seed}")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(json.dumps({k: v for k, v in summary.items() if k != "curve"}))


if __name__ == "__main__":
    main()

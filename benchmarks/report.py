"""Tables (Markdown) and a PNG from the benchmark results; pasted into BENCHMARKS.md by hand with
the commands that produced them.

    python benchmarks/report.py --results benchmarks/results
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def _rows(res: Path, pattern: str) -> list[dict]:
    """All result rows of the files matching `pattern` (parallel runs write separate files)."""
    return [json.loads(x) for f in sorted(res.glob(pattern)) for x in f.read_text().splitlines() if x.strip()]


def offline_table(rows: list[dict]) -> str:
    by = defaultdict(list)
    steps = {}
    for r in rows:
        by[(r["dataset"], r["algo"])].append(r["score"])
        steps[r["dataset"]] = r["steps"]
    datasets = sorted({d for d, _ in by})
    algos = ["uni_o4", "bc", "iql", "td3bc"]
    names = {"uni_o4": "Uni-O4 (ours)", "bc": "BC (d3rlpy)", "iql": "IQL (d3rlpy)", "td3bc": "TD3+BC (d3rlpy)"}
    out = ["| dataset | steps | " + " | ".join(names[a] for a in algos) + " |",
           "|---|---:|" + "---:|" * len(algos)]
    for d in datasets:
        cells = []
        for a in algos:
            s = by.get((d, a), [])
            cells.append(f"{np.mean(s):.1f} +- {np.std(s):.1f} (n={len(s)})" if s else "-")
        out.append(f"| {d} | {steps[d]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def o2o_table(rows: list[dict], png: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    out = ["| method | seed | score at each evaluation (env steps: " +
           ", ".join(str(s) for s in rows[0]["steps"]) + ") | min / first |", "|---|---:|---|---:|"]
    curves = defaultdict(list)
    for r in rows:
        sc = r["scores"]
        ratio = f"{min(sc) / sc[0]:.2f}" if sc[0] > 0 else "-"
        out.append(f"| {r['method']} | {r['seed']} | " + ", ".join(f"{x:.1f}" for x in sc) + f" | {ratio} |")
        curves[r["method"]].append(sc)
    for method, cs in curves.items():
        n = min(len(c) for c in cs)
        arr = np.array([c[:n] for c in cs])
        x = rows[0]["steps"][:n]
        ax.plot(x, arr.mean(0), label=f"{method} (mean of {len(cs)})")
        ax.fill_between(x, arr.min(0), arr.max(0), alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("D4RL-normalised score")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return "\n".join(out)


FIELD_STAGES = ("simulator", "offline", "online", "iql_offline", "iql_online")


def field_table(rows: list[dict]) -> str:
    """One table per evaluation protocol (budget, start noise): runs measured differently are never mixed."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r.get("budget", "small"), r.get("eval_initial_noise", 0.0), r["episodes"])].append(r)
    return "\n\n".join(_field_table(groups[k], *k) for k in sorted(groups))


def _field_table(rows: list[dict], budget: str, noise: float, episodes: int) -> str:
    """Mattress results per stage and commanded speed over seeds, and the issue's targets per seed."""
    mattress = [r for r in rows if r["terrain"] == "mattress"]
    seeds = sorted({r["seed"] for r in mattress})
    speeds = sorted({r["command_vx"] for r in mattress})
    cell = {(r["seed"], r["stage"], r["command_vx"]): r for r in mattress}
    start = (f"standing start with up to {noise:.2f} rad joint noise" if noise
             else "noise-free start (episodes identical)")
    out = [f"Budget {budget}; seeds {seeds}; mean ± std over seeds of per-seed means (mean actions, {episodes} "
           f"episodes of up to 1000 steps, {start}).", "",
           "| policy | " + " | ".join(f"return @ {v:.1f} m/s | tracking error @ {v:.1f} | falls/ep @ {v:.1f}"
                                     for v in speeds) + " |",
           "|---|" + "---|---|---|" * len(speeds)]
    for stage in FIELD_STAGES:
        parts = []
        for v in speeds:
            rs = [cell[(s, stage, v)] for s in seeds if (s, stage, v) in cell]
            if not rs:
                parts += ["-", "-", "-"]
                continue
            for key, fmt in (("mean_return", "{:.2f} ± {:.2f}"), ("tracking_error", "{:.3f} ± {:.3f}"),
                             ("falls_per_episode", "{:.2f} ± {:.2f}")):
                vals = [r[key] for r in rs]
                parts.append(fmt.format(np.mean(vals), np.std(vals)))
        out.append(f"| {stage} | " + " | ".join(parts) + " |")
    out += ["", "| seed | offline > simulator (return, both speeds) | online > offline (both speeds) | "
            "falls never increase sim -> offline -> online |", "|---|---|---|---|"]
    for s in seeds:
        def ret(stage, v, s=s):
            return cell[(s, stage, v)]["mean_return"] if (s, stage, v) in cell else float("nan")

        def falls(stage, v, s=s):
            return cell[(s, stage, v)]["falls_per_episode"] if (s, stage, v) in cell else float("nan")

        a = all(ret("offline", v) > ret("simulator", v) for v in speeds)
        b = all(ret("online", v) > ret("offline", v) for v in speeds)
        c = all(falls("offline", v) <= falls("simulator", v) and falls("online", v) <= falls("offline", v)
                for v in speeds)
        out.append(f"| {s} | {'yes' if a else 'no'} | {'yes' if b else 'no'} | {'yes' if c else 'no'} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    res = Path(args.results)
    if rows := _rows(res, "offline_quality*.jsonl"):
        print("## Offline quality\n")
        print(offline_table(rows))
    if rows := _rows(res, "offline_to_online*.jsonl"):
        print("\n## Offline -> online\n")
        print(o2o_table(rows, res / "offline_to_online.png"))
    if rows := _rows(res, "field*.jsonl"):
        print("\n## Field pipeline (mattress)\n")
        print(field_table(rows))
    if (res / "speed.json").exists():
        print("\n## Speed\n")
        for k, v in json.loads((res / "speed.json").read_text()).items():
            print(f"- {k}: {v:.3g}" if isinstance(v, float) else f"- {k}: {v}")


if __name__ == "__main__":
    main()

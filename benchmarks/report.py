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

from uni_o4_ros.field.report import compare_stages, falls_of


def _rows(res: Path, pattern: str) -> list[dict]:
    """All result rows of the files matching `pattern` (parallel runs write separate files)."""
    return [json.loads(x) for f in sorted(res.glob(pattern)) for x in f.read_text().splitlines() if x.strip()]


def offline_table(rows: list[dict]) -> str:
    # One row per (dataset, step budget): pooling a 50k-step run into the 5k-step cell would
    # report a mean of two different experiments.
    by = defaultdict(list)
    for r in rows:
        by[(r["dataset"], r["steps"], r["algo"])].append(r["score"])
    keys = sorted({(d, n) for d, n, _ in by})
    algos = ["uni_o4", "bc", "iql", "td3bc"]
    names = {"uni_o4": "Uni-O4 (ours)", "bc": "BC (d3rlpy)", "iql": "IQL (d3rlpy)", "td3bc": "TD3+BC (d3rlpy)"}
    out = ["| dataset | steps | " + " | ".join(names[a] for a in algos) + " |",
           "|---|---:|" + "---:|" * len(algos)]
    for d, n in keys:
        cells = []
        for a in algos:
            s = by.get((d, n, a), [])
            cells.append(f"{np.mean(s):.1f} +- {np.std(s):.1f} (n={len(s)})" if s else "-")
        out.append(f"| {d} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def o2o_table(rows: list[dict], png: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
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
        if len(cs) > 1:
            # The seed-mean curve is what the plot draws and what the paper's Figs. 3-4 show; a dip
            # of one seed can hide in it, so the per-seed rows above stay the primary reading.
            mean = arr.mean(0)
            ratio = f"{mean.min() / mean[0]:.2f}" if mean[0] > 0 else "-"
            out.append(f"| {method} | mean of {len(cs)} | " + ", ".join(f"{v:.1f}" for v in mean) + f" | {ratio} |")
        (line,) = ax.plot(x, arr.mean(0), lw=2, label=f"{method} (mean of {len(cs)}; thin: each seed)")
        ax.fill_between(x, arr.min(0), arr.max(0), color=line.get_color(), alpha=0.12)
        for c in arr:  # each seed thin, so a dip of one run is visible and not only a wider band
            ax.plot(x, c, color=line.get_color(), lw=0.8, alpha=0.5)
    vs = " vs PPO from scratch" if "scratch" in curves else ""
    ax.set_title(f"{rows[0]['dataset']}: fine-tuning{vs}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("D4RL-normalised score")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return "\n".join(out)


FIELD_STAGES = ("simulator", "offline", "online", "iql_offline", "iql_online")


def field_table(rows: list[dict]) -> str:
    """One table per variant (a label `benchmarks/field.py --variant` gives the runs of one setting and
    their baseline) and evaluation protocol (budget, start noise, fall rule): runs made or measured
    differently are never mixed. Fall rule 1 also counted a base below 0.12 m as a fall; 2 is the
    controller's tilt rule."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r.get("variant") or "", r.get("budget", "small"), r.get("eval_initial_noise", 0.0), r["episodes"],
                r.get("evaluation_protocol", 1))].append(r)
    return "\n\n".join(_field_table(groups[k], *k) for k in sorted(groups))


def _field_table(rows: list[dict], variant: str, budget: str, noise: float, episodes: int, protocol: int = 1) -> str:
    """Mattress results per stage and commanded speed over seeds, and the issue's targets per seed."""
    mattress = [r for r in rows if r["terrain"] == "mattress"]
    seeds = sorted({r["seed"] for r in mattress})
    speeds = sorted({r["command_vx"] for r in mattress})
    cell = {(r["seed"], r["stage"], r["command_vx"]): r for r in mattress}
    start = (f"standing start with up to {noise:.2f} rad joint noise" if noise
             else "noise-free start (episodes identical)")
    rule = "tilt over 1 rad" if protocol >= 2 else "tilt over 1 rad or base below 0.12 m"
    head = f"Variant {variant}; budget {budget}" if variant else f"Budget {budget}"
    out = [f"{head}; seeds {seeds}; mean ± std over seeds of per-seed means (mean actions, {episodes} "
           f"episodes of up to 1000 steps, {start}; a fall: {rule}).", "",
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
    # Targets per seed and speed. "beats" means a higher mean return; the verdict says whether the
    # change is beyond two standard errors (compare_stages), since with few episodes one fall decides.
    complete = [s for s in seeds if all((s, st, v) in cell for st in ("simulator", "offline", "online")
                                        for v in speeds)]
    if not complete:
        return "\n".join(out)  # a baseline measured alone: no targets to judge
    out += ["", "| seed | speed (m/s) | offline vs simulator: return change ± SE | online vs offline | "
            "episodes that fell: sim → offline → online |", "|---|---|---|---|---|"]
    for s in seeds:
        for v in speeds:
            if not all((s, st, v) in cell for st in ("simulator", "offline", "online")):
                continue
            a = compare_stages(cell[(s, "simulator", v)], cell[(s, "offline", v)])
            b = compare_stages(cell[(s, "offline", v)], cell[(s, "online", v)])
            n = a["episodes_before"]
            out.append(f"| {s} | {v:.1f} | {a['diff']:+.2f} ± {a['se']:.2f} ({a['verdict']}) | "
                       f"{b['diff']:+.2f} ± {b['se']:.2f} ({b['verdict']}) | "
                       f"{a['falls_before']} → {a['falls_after']} → {b['falls_after']} of {n} |")
    met = [_targets(cell, s, speeds) for s in complete]
    out += ["", "Targets met (mean return higher at both speeds; falls never increase): " + "; ".join(
        f"seed {s}: offline > sim {'yes' if m[0] else 'no'}, online > offline {'yes' if m[1] else 'no'}, "
        f"falls {'yes' if m[2] else 'no'}" for s, m in zip(complete, met))]
    return "\n".join(out)


def _targets(cell: dict, s: int, speeds: list[float]) -> tuple[bool, bool, bool]:
    def r(stage, v):
        return cell[(s, stage, v)]["mean_return"] if (s, stage, v) in cell else float("nan")

    def f(stage, v):
        return falls_of(cell[(s, stage, v)]) if (s, stage, v) in cell else float("nan")

    return (all(r("offline", v) > r("simulator", v) for v in speeds),
            all(r("online", v) > r("offline", v) for v in speeds),
            all(f("offline", v) <= f("simulator", v) and f("online", v) <= f("offline", v) for v in speeds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    res = Path(args.results)
    if rows := _rows(res, "offline_quality*.jsonl"):
        print("## Offline quality\n")
        print(offline_table(rows))
    if rows := _rows(res, "offline_to_online*.jsonl"):
        # one table and one plot per dataset: curves of different tasks are never averaged together
        for ds in sorted({r["dataset"] for r in rows}):
            print(f"\n## Offline -> online: {ds}\n")
            print(o2o_table([r for r in rows if r["dataset"] == ds], res / f"offline_to_online_{ds}.png"))
    if rows := _rows(res, "field*.jsonl"):
        print("\n## Field pipeline (mattress)\n")
        print(field_table(rows))
    if (res / "speed.json").exists():
        print("\n## Speed\n")
        for k, v in json.loads((res / "speed.json").read_text()).items():
            print(f"- {k}: {v:.3g}" if isinstance(v, float) else f"- {k}: {v}")


if __name__ == "__main__":
    main()

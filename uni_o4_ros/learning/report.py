"""Markdown + PNG report of the demo run (offline score, online curve, where the time went)."""

from __future__ import annotations

from pathlib import Path


def write_demo_report(out: Path, env: str, datasets: dict, offline: dict, online: dict, seconds: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, rets = online["eval_steps"], online["eval_returns"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, rets, marker="o", label="online PPO from the offline policy")
    if "eval_return" in offline:
        ax.axhline(offline["eval_return"], color="gray", ls="--", label="offline policy")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return (deterministic)")
    ax.set_title(f"Uni-O4 offline -> online on {env}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "report.png"
    fig.savefig(png, dpi=90)
    plt.close(fig)

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1f}"

    lines = [
        f"# Uni-O4 demo on {env}",
        "",
        f"Total wall time: {seconds / 60:.1f} min.",
        "",
        "## Datasets (made here by `uni-o4 collect`)",
        *[f"- {k}: `{v}`" for k, v in datasets.items()],
        "",
        "## Offline (policy selected by AM-Q only)",
        f"- AM-Q of the selected policy: {offline['am_q']:.2f}",
        f"- evaluation return: {fmt(offline.get('eval_return'))} +- {fmt(offline.get('eval_return_std'))}"
        f" (D4RL-normalised score {fmt(offline.get('eval_score'))})",
        f"- time: {offline['seconds']:.0f} s",
        "",
        "## Online fine-tuning",
        "| env steps | return | normalised score |",
        "|---:|---:|---:|",
        *[f"| {s} | {r:.1f} | {fmt(sc)} |" for s, r, sc in zip(steps, rets, online["eval_scores"])],
        "",
        *([f"Normalised score: {online['score_note']}.", ""] if online.get("score_note") else []),
        "![learning curve](report.png)",
        "",
        "Logs: `offline/scalars.csv`, `online/scalars.csv`; plots `offline/offline.png`, `online/online.png`.",
    ]
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n")
    return md

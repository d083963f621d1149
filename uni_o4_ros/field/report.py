"""The field run's report: one table per commanded speed, falls, AM-Q vs measured return, and the
hot-swap timeline of the online stage (Markdown + PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..data import DatasetError, read_hdf5  # noqa: E402
from ..learning.jsonlines import read_jsonl  # noqa: E402
from ..robot.episodes import episode_files  # noqa: E402

STAGE_ORDER = ("simulator", "offline", "online")


def se_return(row: dict) -> float:
    """Standard error of a row's mean return (rows written before per-episode returns: from std)."""
    if "se_return" in row:
        return float(row["se_return"])
    n = int(row["episodes"])
    return float(row["std_return"]) / np.sqrt(n - 1) if n > 1 else 0.0


def falls_of(row: dict) -> int:
    return int(round(row["falls_per_episode"] * row["episodes"]))


def compare_stages(before: dict, after: dict) -> dict:
    """The change of mean return from one stage to the next with its uncertainty. A change within
    two standard errors (Welch) is called noise: the issue's targets are comparisons of noisy means."""
    diff = after["mean_return"] - before["mean_return"]
    se = float(np.hypot(se_return(before), se_return(after)))
    verdict = "better" if diff > 2 * se else "worse" if diff < -2 * se else "within noise"
    return {"diff": diff, "se": se, "verdict": verdict, "falls_before": falls_of(before),
            "falls_after": falls_of(after), "episodes_before": int(before["episodes"]),
            "episodes_after": int(after["episodes"])}


def _online_versions(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(global step, policy version, reward) of every online transition, in recording order. The files are read
    by the validated reader: a damaged or hostile one is a DatasetError naming it, not a traceback."""
    steps, versions, rewards = [], [], []
    n = 0
    for f in episode_files(out / "online" / "episodes"):
        ds = read_hdf5(f)
        if "policy_version" not in ds.infos:
            raise DatasetError(f"{f}: no infos/policy_version (not an episode file of the online stage)")
        v, r = ds.infos["policy_version"], ds.rewards
        steps.append(np.arange(n, n + len(v)))
        versions.append(v)
        rewards.append(r)
        n += len(v)
    if not steps:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return np.concatenate(steps), np.concatenate(versions), np.concatenate(rewards)


def write_field_report(out: Path, cfg) -> Path:
    rows = json.loads((out / "evaluation.json").read_text())
    stages = {s: json.loads((out / "stages" / f"{s}.json").read_text()) for s in ("record", "offline", "online")}
    mattress = [r for r in rows if r["terrain"] == cfg.terrain]
    steps, versions, rewards = _online_versions(out)
    timeline_file = out / "online" / "learner" / "timeline.jsonl"
    timeline = read_jsonl(timeline_file) if timeline_file.is_file() else []

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    speeds = sorted({r["command_vx"] for r in mattress})
    width = 0.8 / max(1, len(speeds))
    for k, (key, label) in enumerate((("mean_return", "return per episode"),
                                      ("tracking_error", "velocity tracking error (m/s)"),
                                      ("falls_per_episode", "falls per episode"))):
        ax = axes[k]
        for j, vx in enumerate(speeds):
            vals = [next((r[key] for r in mattress if r["stage"] == s and r["command_vx"] == vx), np.nan)
                    for s in STAGE_ORDER]
            ax.bar(np.arange(len(STAGE_ORDER)) + j * width, vals, width, label=f"command {vx:.2f} m/s")
        ax.set_xticks(np.arange(len(STAGE_ORDER)) + width * (len(speeds) - 1) / 2, STAGE_ORDER)
        ax.set_title(f"{label}, {cfg.terrain}")
        ax.legend(fontsize=8)
    ax = axes[3]
    if len(steps):
        ax.plot(steps, versions, drawstyle="steps-post", label="policy version in use")
        ax.set_xlabel("online step on the mattress")
        ax.set_ylabel("policy version")
        ax2 = ax.twinx()
        k = max(1, min(200, len(rewards) // 10))
        ax2.plot(steps[k - 1:], np.convolve(rewards, np.ones(k) / k, mode="valid"), color="tab:orange", alpha=0.7,
                 label=f"reward ({k}-step mean)")
        ax2.set_ylabel("reward")
    ax.set_title("hot-swap timeline (online stage)")
    fig.tight_layout()
    png = out / "report.png"
    fig.savefig(png, dpi=90)
    plt.close(fig)

    def row(stage: str, vx: float) -> str:
        r = next((r for r in mattress if r["stage"] == stage and r["command_vx"] == vx), None)
        if r is None:
            return f"| {stage} | - | - | - | - | - |"
        hits = f"{sum(r['episode_trunk_hit'])} of {r['episodes']}" if "episode_trunk_hit" in r else "-"
        return (f"| {stage} | {r['mean_return']:.3f} ± {se_return(r):.3f} | {r['tracking_error']:.3f} | "
                f"{r['mean_vx']:.3f} | {falls_of(r)} of {r['episodes']} | {hits} |")

    lines = [
        "# Field run: simulator → offline (mattress data) → online (mattress)", "",
        f"Terrain: **{cfg.terrain}**. Deterministic (mean) actions, {cfg.eval_episodes} episode(s) of up to "
        f"{cfg.episode_steps} steps per cell, each from a standing start with up to "
        f"{cfg.eval_initial_noise:.2f} rad of joint noise. Reward: Table 3 (per-step maximum 0.03). "
        "A fall ends an episode by the robot controller's rule (|roll| or |pitch| over 1 rad); a trunk hit is "
        "a stumble in which the trunk pushed on the ground (over 1 N), whether the robot fell or walked on.", "",
    ]
    for vx in speeds:
        lines += [f"## Commanded speed {vx:.2f} m/s", "",
                  "| policy | return (mean ± SE) | tracking error (m/s) | mean vx (m/s) | episodes that fell "
                  "| episodes with a trunk hit |",
                  "|---|---|---|---|---|---|"]
        lines += [row(s, vx) for s in STAGE_ORDER] + [""]
    lines += ["## Stage by stage", "",
              "Each stage against the one before it on the mattress; \"within noise\" = the change of mean return is "
              "inside two standard errors.", "",
              "| command (m/s) | stage | return change (± SE) | episodes that fell | verdict |",
              "|---|---|---|---|---|"]
    for vx in speeds:
        cell = {r["stage"]: r for r in mattress if r["command_vx"] == vx}
        for prev, cur in zip(STAGE_ORDER, STAGE_ORDER[1:]):
            if prev in cell and cur in cell:
                c = compare_stages(cell[prev], cell[cur])
                lines.append(f"| {vx:.2f} | {prev} → {cur} | {c['diff']:+.3f} ± {c['se']:.3f} | "
                             f"{c['falls_before']}/{c['episodes_before']} → {c['falls_after']}/{c['episodes_after']} | "
                             f"{c['verdict']} |")
    lines += [""]
    flat = [r for r in rows if r["terrain"] != cfg.terrain]
    if flat:
        f = flat[0]
        lines += [f"For reference, the simulator policy on **{f['terrain']}** ground at {f['command_vx']:.2f} m/s: "
                  f"return {f['mean_return']:.3f}, tracking error {f['tracking_error']:.3f} m/s, "
                  f"{f['falls_per_episode']:.2f} falls per episode.", ""]
    off = stages["offline"]
    measured = next((r["mean_return"] for r in mattress if r["stage"] == "offline"), float("nan"))
    lines += [
        "## Stages", "",
        f"- record: {stages['record']['steps']} transitions in {stages['record']['episodes']} episodes "
        f"({stages['record']['seconds']:.0f} s of simulation through the node graph, {_pace(stages['record'])})",
        f"- offline: Uni-O4 from the simulator policy (Eq. 25), {off['transitions']} transitions, "
        f"{off['seconds']:.0f} s; AM-Q estimate of the selected policy {off['am_q']:.3f} "
        f"(sum of Q over a short model rollout) vs measured return {measured:.3f} ({cfg.episode_steps}-step episodes)",
        f"- online: {stages['online']['steps']} transitions, {len(timeline)} PPO updates hot-swapped into the "
        f"running policy node ({stages['online']['seconds']:.0f} s, {_pace(stages['online'])})",
        "",
    ]
    for name in ("record", "online"):
        if lost := stages[name].get("lost_episodes"):  # never reached the logger (its log in <stage>/logs says why)
            lines += [f"**{name}: episode(s) {', '.join(map(str, lost))} never reached the dataset_logger** and are "
                      "not in the data above.", ""]
    if timeline:
        t0 = timeline[0]["time"]
        lines += ["| version | seconds after first update | batch return |", "|---|---|---|"]
        lines += [f"| {t['version']} | {t['time'] - t0:.1f} | {t['batch_return']:.3f} |" for t in timeline]
        lines += [""]
    if len(versions):
        seen = [int(v) for v in np.unique(versions)]
        lines += [f"Versions that drove the robot during the online stage: {seen}.", ""]
    lines += ["![field report](report.png)", ""]
    md = out / "report.md"
    md.write_text("\n".join(lines))
    return md


def _pace(stage: dict) -> str:
    """How fast the node graph ran, and whether the policy kept up (commands a tick late)."""
    factor = stage.get("realtime_factor", 1.0)
    pace = "real time" if factor == 1.0 else f"{factor:g}x real time"
    ctl = stage.get("controller")
    if not ctl:
        return pace
    return (f"{pace}; {ctl['late_commands']} of {ctl['active_ticks']} commands "
            f"({100 * ctl['late_fraction']:.1f}%) came a tick late")

"""What a run folder holds, so that one command never writes into another's (no torch).

`uni-o4 online --run-dir` of an offline run's folder replaced its AM-Q pick (final/) and config.json, `offline
--init-policy runs/x/final --run-dir runs/x` overwrote the online policy it started from, and `collect --out`
of a run folder appended behaviour PPO's rows to its scalars.csv, all without a word. A folder is told by the
files its command leaves: a rerun into a folder of its own kind resumes, any other is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

HOLDS = {"offline": "an offline Uni-O4 run", "online": "an online run", "collect": "a collect run (behaviour PPO "
         "and its datasets)", "policy": "a saved policy", "pretrain": "a Go1 pretraining run (uni-o4 pretrain)",
         "field": "a field pipeline run (uni-o4 field)", "demo": "a D4RL demo run (uni-o4 demo)"}


def held_run(folder: str | Path) -> str | None:
    """The kind of run `folder` holds (a key of HOLDS), None if none (missing, empty, or other files only)."""
    folder = Path(folder)
    if (folder / "policy.json").is_file() or (folder / "policy.safetensors").is_file():
        return "policy"
    # The demo's stages each have their folder, data/ the first; a run's own settings at the top make it that run
    # (an offline run beside its collect output in data/)
    if _collect_run(folder / "data") and not any((folder / f).is_file() for f in ("config.json", "selection.json")):
        return "demo"
    if _collect_run(folder):
        return "collect"
    stages = folder / "stages"
    if (stages / "online").is_dir():
        return "online"
    if (stages / "pretrain").is_dir():
        return "pretrain"
    if stages.is_dir() and any(stages.glob("*.json")):  # the field pipeline's finished-stage markers
        return "field"
    config = folder / "config.json"
    if config.is_file():
        try:
            written = json.loads(config.read_text())
        except (OSError, ValueError):
            written = None
        if isinstance(written, dict):  # each command's settings, told by keys only they have
            if "scratch" in written:  # online's config.json adds what it started from to the settings
                return "online"
            if "record_steps" in written and "offline_budget" in written:  # a field run stopped in its first stage
                return "field"
            if "ppo" in written and "export_every" in written:
                return "pretrain"
        return "offline"
    if (folder / "selection.json").is_file() or (stages.is_dir() and any(stages.glob("value-*"))):
        return "offline"
    return None


def _collect_run(folder: Path) -> bool:
    """A collect run, finished or interrupted (its behaviour PPO resumes)."""
    return (folder / "collect.json").is_file() or (folder / "stages" / "behavior_ppo").is_dir()


def check_run_folder(folder: str | Path, kind: str, flag: str) -> None:
    """ValueError if `folder` holds another kind of run than `kind` (or a saved policy)."""
    held = held_run(folder)
    if held is not None and held != kind:
        raise ValueError(f"{flag} {folder} holds {HOLDS[held]}: this {kind} run would write its own files into it "
                         "(final/, config.json, scalars.csv), over that one's; give it a folder of its own")


def check_not_inside(run_dir: str | Path, policy_dir: str | Path, flag: str, kind: str,
                     option: str = "--run-dir") -> None:
    """ValueError if the run folder (`option`) is, or holds, the policy folder the run starts from: it would
    overwrite it."""
    run, policy = Path(run_dir).resolve(), Path(policy_dir).resolve()
    if run == policy or run in policy.parents:
        raise ValueError(f"{option} {run_dir} holds the policy it would start from ({flag} {policy_dir}) and would "
                         f"overwrite it: give the {kind} run its own folder, e.g. {option} "
                         f"{str(run_dir).rstrip('/')}-{kind}")

"""`uni-o4 pretrain`: online PPO on the flat-ground MuJoCo Go1, the paper's simulator stage
(Appendix A.4.3: standard PPO, flat ground, no domain randomisation).

Many environment copies are stepped together and the policy acts on all of them in one batched
forward pass. The run is resumable (every PPO iteration checkpoints) and exports a deployable
policy + V to OUT/latest every `export_every` steps and to OUT/final at the end, so a run cut short
still leaves a usable policy behind.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.atomic import write_json
from ..learning import checkpoint as ckpt
from ..learning.config import OnlineConfig, to_dict
from ..learning.normalizer import RunningNormalizer
from ..learning.offline import save_policy
from ..learning.online import OnlineTrainer
from ..learning.policy import GaussianPolicyEnsemble, PolicySpec, set_initial_log_std
from ..learning.scalars import plot_log
from ..learning.value import ValueNet
from ..ranges import check_ranges
from .go1_env import Go1EnvConfig, make_go1_env


def _ppo_defaults() -> OnlineConfig:
    # From-scratch locomotion PPO (rsl_rl / walk-these-ways style): many short rollouts, clip 0.2,
    # running state and return normalisation. Fine-tuning later uses Table 5's online settings.
    return OnlineConfig(
        total_steps=6_000_000, n_envs=16, rollout_steps=64, minibatch_size=256, epochs=5, clip=0.2,
        actor_lr=1.5e-4, critic_lr=1e-3, entropy_coef=0.003, lr_decay=False, normalize_reward=True,
        fixed_state_norm=False, eval_every=250_000, eval_episodes=2,
    )


@dataclass
class PretrainConfig:
    # The shipped checkpoint was trained with a 0.12 m base-height fall rule (before trunk contact
    # was the environment's rule); on flat ground both end an episode at about the same moment.
    env: Go1EnvConfig = field(default_factory=lambda: Go1EnvConfig(min_base_height=0.12))
    ppo: OnlineConfig = field(default_factory=_ppo_defaults)
    hidden: tuple[int, ...] = (512, 256, 128)  # walk-these-ways actor widths
    value_hidden: tuple[int, ...] = (512, 256, 128)
    activation: str = "elu"
    initial_log_std: float = -0.2
    export_every: int = 200_000
    seed: int = 0

    def __post_init__(self) -> None:
        check_ranges(self, {"hidden": ">=1", "value_hidden": ">=1", "export_every": ">=1", "seed": ">=0"})


# Settings a rerun may change and still continue the same run: how long it trains, how it is
# evaluated and how often it exports. Anything else (the task: env.*, the networks, PPO, the seed)
# would make one policy of two experiments, e.g. half trained on flat ground, labelled mattress.
RESUMABLE_CHANGES = ("ppo.total_steps", "ppo.eval_every", "ppo.eval_episodes", "export_every")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_resumable(cfg: PretrainConfig, out: str | Path) -> None:
    """Refuse, naming the setting, to go on with a run in `out` that was trained with other settings."""
    out = Path(out)
    if not ckpt.exists(out / "stages" / "pretrain", "stage"):
        return  # nothing trained yet: any settings may start it
    try:
        then = _flat(json.loads((out / "config.json").read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise ValueError(f"{out} holds a pretraining checkpoint but no readable config.json, so what it was trained "
                         "with is unknown; use another --out") from None
    now = _flat(json.loads(json.dumps(to_dict(cfg))))  # as config.json holds it: tuples are lists
    # Keys an older config.json lacks are left to the trainer's own checks (its checkpoint's PPO settings).
    changed = [f"{k}: {then[k]!r} -> {v!r}" for k, v in now.items()
               if k in then and k not in RESUMABLE_CHANGES and then[k] != v]
    if changed:
        raise ValueError(f"{out} holds a pretraining run made with other settings ({'; '.join(changed)}); rerun "
                         "with its settings to go on with it (only --steps and the evaluation may change), or use "
                         "another --out")


def pretrain(cfg: PretrainConfig, out: str | Path, progress: bool = True) -> Path:
    """Train (or resume) and return the folder of the exported final policy."""
    out = Path(out)
    check_resumable(cfg, out)  # before config.json is rewritten: a refused rerun must not relabel the run
    torch.manual_seed(cfg.seed)
    # The simulator is single-threaded and the networks are small: one torch thread avoids
    # oversubscribing a 2-core machine (measured: 2 threads beside another job ran PPO 10x slower).
    torch.set_num_threads(1)
    make_env = make_go1_env(**cfg.env.__dict__)
    probe = make_env()
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    out.mkdir(parents=True, exist_ok=True)
    actor = GaussianPolicyEnsemble(PolicySpec(obs_dim, act_dim, cfg.hidden, cfg.activation, "none"), 1)
    set_initial_log_std(actor, cfg.initial_log_std)
    critic = ValueNet(obs_dim, cfg.value_hidden)
    normalizer = RunningNormalizer(obs_dim)
    trainer = OnlineTrainer(cfg.ppo, make_env, actor, critic, normalizer, out, seed=cfg.seed, progress=progress,
                            stage="pretrain")
    trainer.check_resumable()  # e.g. a --steps below what the run has trained: refused before config.json says it
    write_json(out / "config.json", to_dict(cfg))
    started, exported = time.monotonic(), [trainer.env_steps]

    def export(name: str) -> None:
        save_policy(out / name, "policy", actor, trainer.ppo.normalizer.frozen_copy(), critic,
                    extra={"env": "go1-flat", "env_steps": trainer.env_steps, "terrain": cfg.env.terrain})

    def on_iteration(_rollout, _finished) -> None:
        if trainer.env_steps - exported[0] >= cfg.export_every:
            export("latest")
            exported[0] = trainer.env_steps

    trainer.run(on_iteration)
    export("final")
    elapsed = time.monotonic() - started
    log = out / "timing.jsonl"
    with log.open("a") as f:
        f.write(json.dumps({"env_steps": trainer.env_steps, "seconds_this_session": round(elapsed, 1)}) + "\n")
    plot_log(out / "scalars.csv", out / "pretrain.png", title="PPO pretraining, Go1 on flat ground")
    return out / "final"

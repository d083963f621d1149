"""Online phase: PPO fine-tuning from the offline policy and V, or PPO from scratch; resumable.

Every iteration (one on-policy rollout + PPO epochs) ends with a checkpoint, so an interrupted
run continues from the last finished iteration. Deterministic evaluations every `eval_every`
environment steps are logged beside the training episodes' returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import OnlineConfig, to_dict
from .normalizer import RunningNormalizer, StateNormalizer
from .policy import GaussianPolicyEnsemble, PolicySpec
from .ppo import PPO, Rollout, evaluate_policy
from .scalars import ScalarLog
from .value import ValueNet


@dataclass
class OnlineHistory:
    eval_steps: list[int] = field(default_factory=list)
    eval_returns: list[float] = field(default_factory=list)
    train_returns: list[tuple[int, float]] = field(default_factory=list)


def make_gym_env(name: str, seed: int | None = None) -> Callable[[], Any]:
    def make() -> Any:
        import gymnasium as gym

        env = gym.make(name)
        if seed is not None:
            env.action_space.seed(seed)
        return env

    return make


class OnlineTrainer:
    # Settings a rerun may change and still continue the same run: how long it trains and how
    # it is evaluated. Anything else would splice two different experiments into one curve.
    RESUMABLE_CHANGES = ("total_steps", "eval_every", "eval_episodes")

    def __init__(
        self,
        cfg: OnlineConfig,
        make_env: Callable[[], Any],
        actor: GaussianPolicyEnsemble,
        critic: ValueNet,
        normalizer: StateNormalizer,
        run_dir: str | Path,
        *,
        seed: int = 0,
        log: ScalarLog | None = None,
        progress: bool = True,
        stage: str = "online",
        score_fn: Callable[[float], float] | None = None,
    ) -> None:
        self.cfg, self.make_env, self.seed, self.stage = cfg, make_env, seed, stage
        self.run_dir = Path(run_dir)
        self.log = log or ScalarLog(self.run_dir / "scalars.csv")
        self.progress, self.score_fn = progress, score_fn
        if not cfg.fixed_state_norm and not isinstance(normalizer, RunningNormalizer):
            normalizer = RunningNormalizer.from_stats(normalizer.mean, normalizer.std)
        self.ppo = PPO(
            actor, critic, normalizer, clip=cfg.clip, actor_lr=cfg.actor_lr, critic_lr=cfg.critic_lr,
            epochs=cfg.epochs, minibatch_size=cfg.minibatch_size, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
            entropy_coef=cfg.entropy_coef, value_coef=cfg.value_coef, grad_clip=cfg.grad_clip,
            normalize_advantage=cfg.normalize_advantage, reward_scale=cfg.reward_scale,
            normalize_reward=cfg.normalize_reward, update_normalizer=not cfg.fixed_state_norm,
            target_kl=cfg.target_kl,
        )
        self.history = OnlineHistory()
        self.env_steps = 0
        self.ckpt_dir = self.run_dir / "stages" / stage
        # What the run starts from, so that a rerun into the same folder resumes only the same run.
        self.start_digest = ckpt.modules_digest(actor=actor, normalizer=self.ppo.normalizer)
        self._checkpoint: tuple[dict, dict] | None = None  # loaded and checked by check_resumable

    # ------------------------------------------------------------------ persistence
    def _save(self) -> None:
        p = self.ppo
        tensors = {**ckpt.prefixed("actor", p.actor), **ckpt.prefixed("critic", p.critic),
                   **ckpt.prefixed("normalizer", p.normalizer)}
        if p.return_rms is not None:
            tensors.update(ckpt.prefixed("return_rms", p.return_rms))
        a_t, a_m = ckpt.optimizer_tensors("actor_opt", p.actor_opt)
        c_t, c_m = ckpt.optimizer_tensors("critic_opt", p.critic_opt)
        tensors.update(a_t)
        tensors.update(c_t)
        ckpt.save(self.ckpt_dir, "stage", tensors, {
            "env_steps": self.env_steps, "config": to_dict(self.cfg), "actor_opt": a_m, "critic_opt": c_m,
            "start": self.start_digest, "seed": self.seed,
            "history": self.history.__dict__, "spec": p.actor.spec.to_dict(),
            "done": self.env_steps >= self.cfg.total_steps,
        }, diverged_advice=ckpt.SAME_RUN_ADVICE)

    def check_resumable(self) -> None:
        """Refuse now, before the caller writes anything into the run folder (its config.json), to go on
        with a checkpoint of another run, or one already trained past this run's total_steps (it would
        stop at once and be labelled with fewer steps than it has). run() checks it too."""
        if self._checkpoint is not None or not ckpt.exists(self.ckpt_dir, "stage"):
            return
        tensors, meta = ckpt.load(self.ckpt_dir, "stage", needs=("env_steps", "actor_opt", "critic_opt", "history"))
        p = self.ppo
        if "spec" in meta and meta["spec"] != p.actor.spec.to_dict():
            # e.g. a run of an older version (tanh mean): its weights would mean another policy here
            raise ValueError(f"{self.ckpt_dir} holds a {meta['spec']} policy, this run builds "
                             f"{p.actor.spec.to_dict()}: use another run directory")
        ckpt.check_same_run(self.run_dir, meta, self.start_digest, to_dict(self.cfg), self.seed,
                            self.RESUMABLE_CHANGES)
        trained = int(meta["env_steps"])
        # The loop overshoots its target by less than one step per environment; more was another target.
        if trained >= self.cfg.total_steps + self.cfg.n_envs:
            raise ValueError(f"{self.run_dir} has trained {trained} environment steps already, more than the "
                             f"{self.cfg.total_steps} asked: it is kept as it is; ask for {trained} or more steps "
                             "to go on with it, or use another run directory")
        self._checkpoint = (tensors, meta)

    def _resume(self) -> None:
        self.check_resumable()
        if self._checkpoint is None:
            return
        tensors, meta = self._checkpoint
        p = self.ppo
        ckpt.load_prefixed("actor", p.actor, tensors)
        ckpt.load_prefixed("critic", p.critic, tensors)
        ckpt.load_prefixed("normalizer", p.normalizer, tensors)
        if p.return_rms is not None:
            ckpt.load_prefixed("return_rms", p.return_rms, tensors)
        with ckpt.reading(self.ckpt_dir / "stage"):
            ckpt.load_optimizer("actor_opt", p.actor_opt, tensors, meta["actor_opt"])
            ckpt.load_optimizer("critic_opt", p.critic_opt, tensors, meta["critic_opt"])
            self.env_steps = int(meta["env_steps"])
            h = meta["history"]
            self.history = OnlineHistory(h["eval_steps"], h["eval_returns"], [tuple(x) for x in h["train_returns"]])

    # ------------------------------------------------------------------ loop
    def evaluate(self) -> float:
        # Every evaluation of a run starts its episodes from the same reset seeds (common random
        # numbers): a change along the curve is then the policy's, not the draw of initial states.
        # They are the first of the offline evaluation's seeds (10_000 + 100 * seed, offline_quality).
        rets = evaluate_policy(self.ppo.actor, self.ppo.normalizer, self.make_env, self.cfg.eval_episodes,
                               seed=10_000 + self.seed * 100)
        mean = float(rets.mean())
        self.history.eval_steps.append(self.env_steps)
        self.history.eval_returns.append(mean)
        row = {"eval_return": mean, "eval_return_std": float(rets.std())}
        if self.score_fn is not None:
            row["eval_score"] = self.score_fn(mean)
        self.log.log(self.stage, self.env_steps, row)
        return mean

    def run(self, on_iteration: Callable[[Rollout, list[dict]], None] | None = None) -> OnlineHistory:
        torch.manual_seed(self.seed)
        self._resume()
        cfg = self.cfg
        envs = [self.make_env() for _ in range(cfg.n_envs)]
        obs = np.stack([e.reset(seed=self.seed * 1000 + self.env_steps + i)[0] for i, e in enumerate(envs)])
        if not self.history.eval_steps:
            self.evaluate()
        bar = tqdm(total=cfg.total_steps, initial=self.env_steps, desc=self.stage, unit="step",
                   disable=not self.progress, dynamic_ncols=True, mininterval=1.0)
        next_eval = (self.env_steps // cfg.eval_every + 1) * cfg.eval_every
        try:
            while self.env_steps < cfg.total_steps:
                n = min(cfg.rollout_steps, (cfg.total_steps - self.env_steps + cfg.n_envs - 1) // cfg.n_envs)
                rollout, obs, finished = self.ppo.collect(envs, obs, n)
                self.ppo.set_progress(self.env_steps / cfg.total_steps if cfg.lr_decay else 0.0)
                warmup = self.env_steps < cfg.critic_warmup_steps
                stats = self.ppo.update(rollout, train_actor=not warmup)
                stats["critic_warmup"] = float(warmup)
                self.env_steps += n * cfg.n_envs
                for ep in finished:
                    self.history.train_returns.append((self.env_steps, ep["return"]))
                if finished:
                    stats["train_return"] = float(np.mean([ep["return"] for ep in finished]))
                self.log.log(self.stage, self.env_steps, stats)
                if on_iteration is not None:
                    on_iteration(rollout, finished)
                if self.env_steps >= next_eval or self.env_steps >= cfg.total_steps:
                    ret = self.evaluate()
                    bar.set_postfix(eval_return=f"{ret:.1f}", refresh=False)
                    next_eval += cfg.eval_every
                self._save()
                bar.update(n * cfg.n_envs)
        finally:
            bar.close()
            for e in envs:
                e.close()
        return self.history


def scratch_agent(
    obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64), activation: str = "tanh",
    mean_activation: str = "tanh",
) -> tuple[GaussianPolicyEnsemble, ValueNet, RunningNormalizer]:
    """PPO-from-scratch networks (CleanRL-sized), with a running state normaliser. The mean stays
    tanh-bounded: CleanRL's clipped linear mean ("clip") was no better over 3 seeds on Hopper and
    worse on HalfCheetah (BENCHMARKS §2)."""
    from .policy import set_initial_log_std

    actor = GaussianPolicyEnsemble(PolicySpec(obs_dim, act_dim, hidden, activation, mean_activation), 1)
    set_initial_log_std(actor, -0.5)
    return actor, ValueNet(obs_dim, hidden), RunningNormalizer(obs_dim)


# PPO from scratch uses the common from-scratch settings (CleanRL's), not the fine-tuning ones of
# Table 5: clip 0.2, lr 3e-4 for both networks, 64-sample minibatches, running state and reward
# normalisation.
SCRATCH_SETTINGS: dict[str, Any] = {
    "clip": 0.2, "actor_lr": 3e-4, "critic_lr": 3e-4, "minibatch_size": 64, "epochs": 10, "rollout_steps": 2048,
    "entropy_coef": 0.0, "normalize_reward": True, "fixed_state_norm": False}


def scratch_config(**overrides: Any) -> OnlineConfig:
    return OnlineConfig(**{**SCRATCH_SETTINGS, **overrides})

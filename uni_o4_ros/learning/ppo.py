"""Online PPO (Eq. 1) with GAE, used for fine-tuning, from-scratch training and data collection.

The actor is the same GaussianPolicyEnsemble (n = 1) that offline training produces, so the
offline policy and V continue online unchanged. Actions are sampled and their log-probabilities
stored at collection time (the authors' robot code sampled the mean, which leaves PPO unable to
move the mean). Timeouts are not terminal: a truncated episode bootstraps with gamma V(s_T).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .networks import clip_grad_norm_per_member
from .normalizer import RunningNormalizer, StateNormalizer
from .policy import GaussianPolicyEnsemble
from .value import ValueNet


@dataclass
class Rollout:
    obs: torch.Tensor  # (T, E, obs) normalised
    raw_obs: torch.Tensor  # (T, E, obs) as the env gave them
    actions: torch.Tensor  # (T, E, act) the sampled (unclipped) actions
    log_probs: torch.Tensor  # (T, E)
    rewards: torch.Tensor  # (T, E) with truncation bootstrap folded in
    env_rewards: torch.Tensor  # (T, E) unmodified
    dones: torch.Tensor  # (T, E) true terminations or truncations (episode boundary)
    terminals: torch.Tensor  # (T, E) true terminations only
    timeouts: torch.Tensor  # (T, E)
    values: torch.Tensor  # (T, E)
    next_raw_obs: torch.Tensor  # (T, E, obs)
    last_value: torch.Tensor  # (E,)


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's clipped objective per sample, min(r A, clip(r, 1 - eps, 1 + eps) A): the one objective of Uni-O4's
    offline improvement (A = Q - V) and its online fine-tuning (A from GAE). A ratio past the clip on the side
    the advantage favours gets no gradient; on the other side it keeps its full one (the pessimistic bound)."""
    return torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    terminals: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(lambda). After `dones[t]` the next value belongs to a new episode, so it is cut;
    truncations already carry gamma V(s_T) inside `rewards`."""
    t_len = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    gae = torch.zeros_like(last_value)
    for t in reversed(range(t_len)):
        next_value = last_value if t == t_len - 1 else values[t + 1]
        cont = 1.0 - dones[t].float()
        delta = rewards[t] + gamma * next_value * cont - values[t]
        gae = delta + gamma * lam * cont * gae
        adv[t] = gae
    return adv, adv + values


class PPO:
    def __init__(
        self,
        actor: GaussianPolicyEnsemble,
        critic: ValueNet,
        normalizer: StateNormalizer,
        *,
        clip: float,
        actor_lr: float,
        critic_lr: float,
        epochs: int,
        minibatch_size: int,
        gamma: float,
        gae_lambda: float,
        entropy_coef: float = 0.0,
        value_coef: float = 0.5,
        grad_clip: float = 0.5,
        normalize_advantage: bool = True,
        reward_scale: float = 1.0,
        normalize_reward: bool = False,
        update_normalizer: bool = False,
        target_kl: float | None = None,
    ) -> None:
        if actor.n != 1:
            raise ValueError("online PPO trains a single policy (ensemble of size 1)")
        self.actor, self.critic, self.normalizer = actor, critic, normalizer
        self.clip, self.epochs, self.minibatch_size = clip, epochs, minibatch_size
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.entropy_coef, self.value_coef, self.grad_clip = entropy_coef, value_coef, grad_clip
        self.normalize_advantage, self.reward_scale = normalize_advantage, reward_scale
        if target_kl is not None and not target_kl > 0:
            raise ValueError(f"target_kl must be positive or None, got {target_kl}")
        self.target_kl = target_kl
        self.actor_opt = torch.optim.Adam(actor.parameters(), lr=actor_lr, eps=1e-5)
        self.critic_opt = torch.optim.Adam(critic.parameters(), lr=critic_lr, eps=1e-5)
        self.base_lrs = (actor_lr, critic_lr)
        self.update_normalizer = update_normalizer and isinstance(normalizer, RunningNormalizer)
        # From scratch, rewards are divided by the running std of the discounted return (as
        # CleanRL / SB3 VecNormalize do); fine-tuning keeps raw rewards so the offline V stays valid.
        self.return_rms = RunningNormalizer(1) if normalize_reward else None
        self._disc_return: np.ndarray | None = None

    def set_progress(self, fraction_done: float) -> None:
        """Linear learning-rate decay to zero over the run."""
        f = max(0.0, 1.0 - fraction_done)
        for opt, lr in zip((self.actor_opt, self.critic_opt), self.base_lrs):
            for g in opt.param_groups:
                g["lr"] = lr * f

    @torch.no_grad()
    def act(self, raw_obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(E, obs) raw -> actions (E, act), log-probs (E,), values (E,)."""
        obs = self.normalizer(torch.as_tensor(raw_obs, dtype=torch.float32))
        a, logp = self.actor.act(obs, deterministic=deterministic)
        return a[0].numpy(), logp[0].numpy(), self.critic(obs).numpy()

    def collect(self, envs: Sequence, obs: np.ndarray, steps: int) -> tuple[Rollout, np.ndarray, list[dict]]:
        """Run `steps` steps in each env; returns the rollout, the next obs and finished episodes."""
        e = len(envs)
        buf: dict[str, list] = {k: [] for k in (
            "obs", "raw", "act", "logp", "rew", "env_rew", "done", "term", "trunc", "val", "next")}
        finished: list[dict] = []
        if len(getattr(self, "_episodes", [])) != e:
            self._episodes = [{"return": 0.0, "length": 0} for _ in range(e)]
        for _ in range(steps):
            if self.update_normalizer:
                self.normalizer.update(torch.as_tensor(obs, dtype=torch.float32))
            norm = self.normalizer(torch.as_tensor(obs, dtype=torch.float32))
            with torch.no_grad():
                a, logp = self.actor.act(norm, deterministic=False)
                val = self.critic(norm)
            a, logp = a[0], logp[0]
            env_a = self.actor.executed(a).numpy()  # the sampled `a` itself is stored: its log-prob is PPO's
            next_obs = np.empty_like(obs)
            rew = np.zeros(e, np.float32)
            boot = np.zeros(e, np.float32)
            term = np.zeros(e, bool)
            trunc = np.zeros(e, bool)
            nxt_raw = np.empty_like(obs)
            for i, env in enumerate(envs):
                o, r, te, tr, info = env.step(env_a[i])
                if not (np.isfinite(o).all() and np.isfinite(r)):
                    # Caught here, a NaN names its source; trained on, it would surface later as
                    # "training diverged, try a lower learning rate".
                    what = "observation" if not np.isfinite(o).all() else "reward"
                    raise ValueError(f"the environment returned a non-finite {what} (episode step "
                                     f"{self._episodes[i]['length'] + 1}); this rollout is not trained on, the "
                                     "last checkpoint is kept")
                rew[i], term[i], trunc[i] = r, te, tr
                nxt_raw[i] = o
                ep = self._episodes[i]
                ep["return"] += float(r)
                ep["length"] += 1
                if te or tr:
                    finished.append(dict(ep, terminated=bool(te)))
                    self._episodes[i] = {"return": 0.0, "length": 0}
                    if tr and not te:
                        with torch.no_grad():
                            final = self.normalizer(torch.as_tensor(o[None], dtype=torch.float32))
                            boot[i] = float(self.critic(final)[0])
                    o, _ = env.reset()
                next_obs[i] = o
            scale = self.reward_scale
            if self.return_rms is not None:
                if self._disc_return is None or len(self._disc_return) != e:
                    self._disc_return = np.zeros(e)
                self._disc_return = self._disc_return * self.gamma + rew
                self.return_rms.update(torch.as_tensor(self._disc_return[:, None], dtype=torch.float32))
                self._disc_return[term | trunc] = 0.0
                scale = scale / float(self.return_rms.std[0])
            buf["obs"].append(norm)
            buf["raw"].append(torch.as_tensor(obs, dtype=torch.float32))
            buf["act"].append(a)
            buf["logp"].append(logp)
            buf["env_rew"].append(torch.as_tensor(rew))
            buf["rew"].append(torch.as_tensor(rew * scale + self.gamma * boot))
            buf["done"].append(torch.as_tensor(term | trunc))
            buf["term"].append(torch.as_tensor(term))
            buf["trunc"].append(torch.as_tensor(trunc & ~term))
            buf["val"].append(val)
            buf["next"].append(torch.as_tensor(nxt_raw, dtype=torch.float32))
            obs = next_obs
        with torch.no_grad():
            last_value = self.critic(self.normalizer(torch.as_tensor(obs, dtype=torch.float32)))
        st = {k: torch.stack(v) for k, v in buf.items()}
        rollout = Rollout(
            obs=st["obs"], raw_obs=st["raw"], actions=st["act"], log_probs=st["logp"], rewards=st["rew"],
            env_rewards=st["env_rew"], dones=st["done"], terminals=st["term"], timeouts=st["trunc"],
            values=st["val"], next_raw_obs=st["next"], last_value=last_value,
        )
        return rollout, obs, finished

    def update(self, rollout: Rollout, train_actor: bool = True) -> dict[str, float]:
        """PPO epochs over one on-policy rollout; `train_actor=False` fits the critic alone."""
        adv, returns = compute_gae(
            rollout.rewards, rollout.values, rollout.dones, rollout.terminals,
            rollout.last_value, self.gamma, self.gae_lambda,
        )
        obs = rollout.obs.reshape(-1, rollout.obs.shape[-1])
        act = rollout.actions.reshape(-1, rollout.actions.shape[-1])
        old_logp, adv, returns = rollout.log_probs.reshape(-1), adv.reshape(-1), returns.reshape(-1)
        n = obs.shape[0]
        # policy_std: the mean standard deviation of the actions the policy samples, i.e. how far
        # its exploration strays from the mean action that deterministic evaluation executes.
        stats = {"policy_loss": 0.0, "value_loss": 0.0, "clip_frac": 0.0, "approx_kl": 0.0, "policy_std": 0.0}
        count = actor_steps = 0
        for _ in range(self.epochs):
            perm = torch.randperm(n)
            for start in range(0, n, self.minibatch_size):
                idx = perm[start : start + self.minibatch_size]
                mb_adv = adv[idx]
                if self.normalize_advantage and idx.numel() > 1:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                mean, log_std = self.actor(obs[idx])
                logp = self.actor.gaussian_log_prob(mean, log_std, act[idx])[0]
                log_ratio = logp - old_logp[idx]
                ratio = log_ratio.exp()
                pg = -clipped_surrogate(ratio, mb_adv, self.clip).mean()
                entropy = (log_std + 0.5 * (1.0 + np.log(2 * np.pi))).sum(-1).mean()
                actor_loss = pg - self.entropy_coef * entropy
                with torch.no_grad():
                    approx_kl = float(((ratio - 1) - log_ratio).mean())
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    # The policy has already moved as far from the one that collected the rollout as
                    # one update may (SB3 / Spinning Up's rule): the actor stops here, the critic
                    # goes on fitting the returns for the remaining epochs.
                    train_actor = False
                if train_actor:
                    actor_steps += 1
                    self.actor_opt.zero_grad(set_to_none=True)
                    actor_loss.backward()
                    clip_grad_norm_per_member(self.actor, self.grad_clip)
                    self.actor_opt.step()

                v_loss = (self.critic(obs[idx]) - returns[idx]).pow(2).mean()
                self.critic_opt.zero_grad(set_to_none=True)
                (self.value_coef * v_loss).backward()
                torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.grad_clip)
                self.critic_opt.step()
                with torch.no_grad():
                    stats["policy_loss"] += float(pg)
                    stats["value_loss"] += float(v_loss)
                    stats["clip_frac"] += float(((ratio - 1).abs() > self.clip).float().mean())
                    stats["approx_kl"] += approx_kl
                    stats["policy_std"] += float(log_std.exp().mean())
                count += 1
        out = {k: v / max(1, count) for k, v in stats.items()}
        out["actor_steps"] = float(actor_steps)
        return out


def evaluate_policy(
    actor: GaussianPolicyEnsemble,
    normalizer: StateNormalizer,
    make_env: Callable[[], object],
    episodes: int,
    seed: int,
    member: int = 0,
) -> np.ndarray:
    """Undiscounted returns of the deterministic (mean) policy over `episodes` episodes."""
    env = make_env()
    returns = []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            total, done = 0.0, False
            while not done:
                with torch.no_grad():
                    mean, _ = actor(normalizer(torch.as_tensor(obs[None], dtype=torch.float32)))
                a = mean[member, 0]
                a = actor.executed(a)
                obs, r, te, tr, _ = env.step(a.numpy())
                total += float(r)
                done = te or tr
            returns.append(total)
    finally:
        env.close()
    return np.asarray(returns)

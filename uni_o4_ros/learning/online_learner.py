"""Online learning from streamed transitions (the robot's online stage), without ROS.

Transitions arrive one by one from the running policy. Only transitions of the version currently
deployed are kept: anything older is dropped, so every PPO batch is on-policy. After `batch_size`
of them, one PPO update runs, the version number increases and the new weights are checkpointed
(safetensors + JSON) before they are handed out for publishing. A restarted learner loads the
checkpoint and continues from that version. The version it stands on (its newest, unless refused) is
also kept as a deployable policy folder, `run_dir/policy` (actor, normaliser and V, with its version):
the policy to deploy next time, or to start offline learning from (the paper's online -> offline step).

Transitions of a recorder run that started before the one learned from (an old bag played back beside the
robot, whose policy versions may bear the same numbers as today's) are left out too while that run is heard
(`dropped_earlier_run`; runs.StreamRuns).

A version the policy node refuses (`max_update_shift`, a wrong HMAC key) never runs, so nothing of it
can be learned from. When the robot runs the version it was made from, the learner goes back to that
one (`refused`) and learns on from its transitions, numbering its next version above the refused one.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import finite_transition, transition_dims
from ..robot.runs import StreamRuns, is_session
from . import checkpoint as ckpt
from .config import OnlineConfig, to_dict
from .jsonlines import append_jsonl
from .normalizer import StateNormalizer
from .policy import GaussianPolicyEnsemble, PolicySpec
from .ppo import PPO, Rollout
from .value import ValueNet


def _place(t: dict) -> tuple[str, int, int]:
    """Where a transition stands: (recorder run, episode, step). A restarted recorder numbers episodes from 1
    again, so the episode id alone does not tell its transitions from the run before's."""
    return str(t.get("recorder_session", "")), int(t["episode_id"]), int(t["step"])


@dataclass
class UpdateResult:
    version: int
    stats: dict[str, float]


KEEP_PARENTS = 3  # versions a learner can go back to (the policy node keeps as many to answer with)


@dataclass
class Parent:
    """The actor (and its optimiser's state) a version was made from: what a refusal of it goes back to."""

    version: int
    tensors: dict[str, torch.Tensor]  # actor.* and actor_opt.*
    actor_opt: dict  # the optimiser's param groups and scalars, as checkpoint.optimizer_tensors gives them


class OnlineLearnerCore:
    def __init__(self, actor: GaussianPolicyEnsemble, critic: ValueNet, normalizer: StateNormalizer,
                 cfg: OnlineConfig, run_dir: str | Path, version: int = 0) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.ppo = PPO(actor, critic, normalizer, clip=cfg.clip, actor_lr=cfg.actor_lr, critic_lr=cfg.critic_lr,
                       epochs=cfg.epochs, minibatch_size=cfg.minibatch_size, gamma=cfg.gamma,
                       gae_lambda=cfg.gae_lambda, entropy_coef=cfg.entropy_coef, grad_clip=cfg.grad_clip,
                       target_kl=cfg.target_kl)
        self.version = version  # of the actor this learner stands on: its transitions are the on-policy ones
        self.published = version  # the highest version number handed out (above `version` after a refusal)
        # What `version` was made from, and what that was made from..., oldest first, KEEP_PARENTS at most: a
        # refusal goes back one, a second withdrawal (the robot's previous version fails too) another.
        self.parents: list[Parent] = []
        self.buffer: list[dict] = []
        self._used_last: tuple[str, int, int] | None = None  # _place of the last row of the batch used last
        self.dropped_stale = 0
        # Transitions in a row from another version than this learner's newest: while the robot does not
        # run what the learner published (the policy node refused it, or another learner's version runs),
        # every transition is stale and nothing is learned; `stalled` says when to tell the operator.
        self.stale_streak = 0
        self.stale_version: int | None = None
        self.dropped_invalid = 0
        self.recorder_runs = StreamRuns()  # the recorder run learned from: the newest by its start
        self.dropped_earlier_run = 0
        self.earlier_run: str = ""  # the session of the last transition left out as of an earlier run
        self.gave_up: str | None = None  # the run add() last gave up for an earlier one, silent for QUIET_S
        self.not_exploring = 0  # batches left unused: their actions were the policy's mean
        self.updates = 0
        # What this learner fine-tunes (the policy and its input statistics; V may start untrained,
        # i.e. random, so it is left out); a restart with another initial policy or other PPO
        # settings into the same run_dir is refused instead of resuming (and publishing) the old
        # run's weights.
        self.start_digest = ckpt.modules_digest(actor=actor, normalizer=normalizer)
        if ckpt.exists(self.run_dir, "learner"):
            self._load()

    def add(self, t: dict, now: float | None = None) -> UpdateResult | None:
        """Add one transition; returns an update when a full on-policy batch was used. `now` (s, monotonic; the
        clock by default) times a recorder run's silence (runs.StreamRuns)."""
        session = str(t.get("recorder_session", ""))
        if not is_session(session):
            self.dropped_invalid += 1
            return None
        held = self.recorder_runs.current
        run = self.recorder_runs.hear(session, int(t.get("recorder_started_ns", 0)),
                                      time.monotonic() if now is None else now)
        if run == "earlier":
            self.dropped_earlier_run += 1
            self.earlier_run = session
            return None
        self.gave_up = held.session if run == "switch_earlier" else None
        if int(t["policy_version"]) != self.version:
            self.dropped_stale += 1  # collected by an older policy: not on-policy any more
            self.stale_streak += 1
            self.stale_version = int(t["policy_version"])
            return None
        self.stale_streak = 0
        if not self._usable(t):
            # One NaN (a sensor glitch in the reward) would poison every later update and end the
            # learner with a "diverged" error: the transition is counted and left out instead. The
            # gap it leaves cuts GAE there, as an episode boundary does.
            self.dropped_invalid += 1
            return None
        if self.buffer and _place(self.buffer[-1]) == _place(t):
            # The recorder sends an episode's last transition again to mark it as the end (the robot stopped
            # acting on the policy): it replaces the first one.
            self.buffer[-1] = t
            return None
        if not self.buffer and _place(t) == self._used_last:
            # ... and when the first one ended a batch already learned from, the mark comes too late: a batch that
            # kept the version (critic warm-up) took it in again, as the next batch's first row
            return None
        self.buffer.append(t)
        if len(self.buffer) < self.cfg.rollout_steps:
            return None
        return self._update()

    @property
    def stalled(self) -> bool:
        """True at every whole batch of stale transitions in a row. A hot-swap costs the transitions of
        one update's duration (~100 at 50 Hz, BENCHMARKS §4d), far fewer than a batch: more means the
        deployed policy is not this learner's newest version."""
        return self.stale_streak > 0 and self.stale_streak % self.cfg.rollout_steps == 0

    def _usable(self, t: dict) -> bool:
        """Finite, and of this policy's dimensions."""
        spec = self.ppo.actor.spec
        return transition_dims(t) == (spec.obs_dim, spec.act_dim) and finite_transition(t)

    def _update(self) -> UpdateResult | None:
        rows, self.buffer = self.buffer, []
        self._used_last = _place(rows[-1])
        norm = self.ppo.normalizer
        obs = norm(torch.as_tensor(np.stack([r["observation"] for r in rows]), dtype=torch.float32))
        nxt = norm(torch.as_tensor(np.stack([r["next_observation"] for r in rows]), dtype=torch.float32))
        actions = torch.as_tensor(np.stack([r["action"] for r in rows]), dtype=torch.float32)
        if not self._explored(obs, actions):
            self.not_exploring += 1
            return None
        with torch.no_grad():
            values = self.ppo.critic(obs)
            next_values = self.ppo.critic(nxt)
        term = torch.tensor([bool(r["terminal"]) for r in rows])
        tout = torch.tensor([bool(r["timeout"]) for r in rows])
        rew = torch.tensor([float(r["reward"]) for r in rows])
        # A transition whose successor is not the next row (episode end, or a gap) bootstraps from
        # its own s' (timeouts) or not at all (terminals); GAE is cut there.
        cut = term | tout
        cut[:-1] |= torch.tensor([_place(rows[i + 1]) != (*_place(rows[i])[:2], rows[i]["step"] + 1)
                                  for i in range(len(rows) - 1)])
        boot = torch.where(cut & ~term, self.cfg.gamma * next_values, torch.zeros_like(next_values))
        last_value = next_values[-1:] * (~term[-1:]).float()
        rollout = Rollout(
            obs=obs[:, None], raw_obs=obs[:, None],
            actions=actions[:, None],
            log_probs=torch.tensor([float(r["log_prob"]) for r in rows])[:, None],
            rewards=(rew + boot)[:, None], env_rewards=rew[:, None], dones=cut[:, None], terminals=term[:, None],
            timeouts=tout[:, None], values=values[:, None], next_raw_obs=nxt[:, None], last_value=last_value,
        )
        # Critic warm-up (`critic_warmup_steps`): the actor stays as deployed, so no new version is
        # published and the transitions it keeps collecting stay on-policy.
        warmup = self.updates * self.cfg.rollout_steps < self.cfg.critic_warmup_steps
        parent = None if warmup else self._snapshot()
        stats = self.ppo.update(rollout, train_actor=not warmup)
        self.updates += 1
        if warmup:
            self._save()
            return None
        self.parents = [*self.parents, parent][-KEEP_PARENTS:]
        self.version = self.published = self.published + 1
        self._save()
        self._export()
        # One line per published version: when it was made, from which batch and version (for the field report).
        append_jsonl(self.run_dir / "timeline.jsonl", {
            "version": self.version, "made_from": parent.version, "time": time.time(),
            "batch_return": float(rew.sum()), "batch_size": len(rows),
            "dropped_stale": self.dropped_stale, "dropped_invalid": self.dropped_invalid, **stats})
        return UpdateResult(self.version, stats)

    def refused(self, version: int, running: int, reason: str = "") -> bool:
        """The policy node refused (or withdrew at a tick) `version` and the robot runs `running`. When `version`
        is this learner's newest and `running` one of the versions it was made from (one update too large: a
        divergence, a tighter max_update_shift, a wrong key; versions withdrawn one after another; the robot
        back on an older version it kept), go back to `running`: its transitions are on-policy again, so learning
        goes on, and the next update is numbered above the refused one (the policy node takes only newer ones).
        True when it went back. A verdict on an older version is left alone: this learner's newest, made from it,
        may still reach the robot (judged against what it runs), and going back then left the two apart for good.
        So is any other running version (another learner's, or one too old to be kept): it waits, and the
        operator decides."""
        kept = [a.version for a in self.parents]
        back = kept.index(running) if version == self.version and running in kept else None
        if version != self.version:
            return False
        append_jsonl(self.run_dir / "refused.jsonl", {"version": version, "running": running, "time": time.time(),
                                                      "reason": reason, "rolled_back": back is not None})
        if back is None:
            return False
        p, parent = self.ppo, self.parents[back]
        ckpt.load_prefixed("actor", p.actor, parent.tensors)
        ckpt.load_optimizer("actor_opt", p.actor_opt, parent.tensors, parent.actor_opt)
        self.version, self.parents = parent.version, self.parents[:back]
        self.buffer, self.stale_streak, self.stale_version = [], 0, None
        self._save()
        self._export()  # the policy folder holds what the robot runs, never a refused version
        return True

    def _snapshot(self) -> Parent:
        p = self.ppo
        opt_tensors, opt_meta = ckpt.optimizer_tensors("actor_opt", p.actor_opt)
        tensors = {k: v.detach().clone() for k, v in {**ckpt.prefixed("actor", p.actor), **opt_tensors}.items()}
        return Parent(self.version, tensors, copy.deepcopy(opt_meta))

    def _explored(self, obs: torch.Tensor, actions: torch.Tensor) -> bool:
        """Whether the deployed policy sampled its actions. A policy that acted with its mean (the policy
        node's `deterministic: true`) gives PPO nothing to learn the mean from: the gradient of
        log pi(a|s) with respect to the mean is (a - mean) / std^2 = 0. The authors' robot code trained
        on such data; an update from it would only shrink or grow the std. One in a thousandth of a std
        from the mean in every action of a batch is not sampling."""
        with torch.no_grad():
            mean, log_std = self.ppo.actor(obs)  # (1, B, act): the one deployed policy
        return bool(((actions - mean[0]).abs() / log_std[0].exp()).max() > 1e-3)

    def _save(self) -> None:
        p = self.ppo
        tensors = {**ckpt.prefixed("actor", p.actor), **ckpt.prefixed("critic", p.critic),
                   **ckpt.prefixed("normalizer", p.normalizer)}
        a_t, a_m = ckpt.optimizer_tensors("actor_opt", p.actor_opt)
        c_t, c_m = ckpt.optimizer_tensors("critic_opt", p.critic_opt)
        for i, parent in enumerate(self.parents):  # kept, so that a learner restarted before a refusal reached it
            tensors.update({f"parent{i}.{k}": v for k, v in parent.tensors.items()})  # can still go back
        ckpt.save(self.run_dir, "learner", {**tensors, **a_t, **c_t}, {
            "version": self.version, "published": self.published, "updates": self.updates,
            "parents": [{"version": a.version, "actor_opt": a.actor_opt} for a in self.parents],
            "actor_opt": a_m, "critic_opt": c_m,
            "spec": p.actor.spec.to_dict(), "config": to_dict(self.cfg), "dropped_stale": self.dropped_stale,
            "dropped_invalid": self.dropped_invalid,
            "start": self.start_digest}, diverged_advice=ckpt.SAME_RUN_ADVICE)

    def _export(self) -> None:
        """The version this learner stands on (its newest, unless refused) as a policy folder. Its two files
        are replaced one after the other, so a crash between them can leave the folder's version label one
        behind its weights: a resumed learner writes it again from its checkpoint."""
        from .offline import save_policy

        save_policy(self.run_dir / "policy", "policy", self.ppo.actor, self.ppo.normalizer, self.ppo.critic,
                    extra={"version": self.version, "source": "online learner", "run_dir": str(self.run_dir)})

    def _load(self) -> None:
        tensors, meta = ckpt.load(self.run_dir, "learner",
                                  needs=("spec", "actor_opt", "critic_opt", "version", "updates"))
        p = self.ppo
        if PolicySpec.from_dict(meta["spec"]) != p.actor.spec:
            raise ckpt.CheckpointError(f"{self.run_dir}: checkpoint is for a different policy architecture")
        ckpt.check_same_run(self.run_dir, meta, self.start_digest, to_dict(self.cfg))
        ckpt.load_prefixed("actor", p.actor, tensors)
        ckpt.load_prefixed("critic", p.critic, tensors)
        ckpt.load_prefixed("normalizer", p.normalizer, tensors)
        with ckpt.reading(self.run_dir / "learner"):
            ckpt.load_optimizer("actor_opt", p.actor_opt, tensors, meta["actor_opt"])
            ckpt.load_optimizer("critic_opt", p.critic_opt, tensors, meta["critic_opt"])
            self.version, self.updates = int(meta["version"]), int(meta["updates"])
            self.published = int(meta.get("published", self.version))
            # counted over the whole run: timeline.jsonl's figures went back to 0 at every resume
            self.dropped_stale = int(meta.get("dropped_stale", 0))
            self.dropped_invalid = int(meta.get("dropped_invalid", 0))
            # "parent" (one, tensors parent.*): a checkpoint of this package before it kept several
            if "parents" in meta:
                kept, prefixes = meta["parents"], [f"parent{i}." for i in range(len(meta["parents"]))]
            else:  # null while there was none (warm-up, after a go-back)
                kept, prefixes = ([meta["parent"]], ["parent."]) if meta.get("parent") else ([], [])
            self.parents = [Parent(int(a["version"]), {k[len(pre):]: v for k, v in tensors.items()
                                                       if k.startswith(pre)}, a["actor_opt"])
                            for a, pre in zip(kept, prefixes, strict=True)]
        self._export()

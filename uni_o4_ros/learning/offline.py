"""The offline phase of Uni-O4 as resumable, cached stages.

    value (IQL Q/V) -> dynamics -> ensemble BC (or init from a given policy) -> multi-step
    improvement with AM-Q -> selection by AM-Q

Every stage lives in `run_dir/stages/<stage>-<key>/`, where the key hashes the stage's config,
the dataset's content and the keys of the stages it depends on: a changed setting or dataset
gets a fresh stage instead of silently reusing a stale model (the authors' code reuses cached
files regardless). A stage checkpoints every `checkpoint_every` steps and resumes from there.
Nothing in this module touches an environment.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.atomic import write_json
from . import checkpoint as ckpt
from .behavior_cloning import ensemble_bc_loss
from .config import UniO4Config, config_hash, to_dict
from .dynamics import GaussianEnsembleModel, train_dynamics
from .improvement import MultiStepImprover
from .networks import copy_member
from .normalizer import StateNormalizer
from .ope import am_q_per_start
from .policy import GaussianPolicyEnsemble, PolicySpec
from .scalars import ScalarLog
from .selection import choose, gaussian_kl
from .termination import RULES, TerminationFn, rule_for_env
from .value import IQLCritic, ValueNet


def dataset_digest(ds: Any) -> str:
    h = hashlib.sha256()
    for name in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations"):
        arr = np.ascontiguousarray(getattr(ds, name))
        h.update(name.encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


@dataclass
class OfflineResult:
    policy: GaussianPolicyEnsemble  # the selected policy, n = 1
    critic: IQLCritic
    normalizer: StateNormalizer
    am_q: float
    run_dir: Path


class TrainingStopped(RuntimeError):
    """Raised when `should_stop` fires; the stage in progress was checkpointed first."""


class _Batches:
    """Uniform minibatches of dataset indices from a seeded generator."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.b = n, batch_size
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self) -> torch.Tensor:
        return torch.randint(self.n, (self.b,), generator=self.g)


def _terminals_without_next_state(obs: np.ndarray, next_obs: np.ndarray, terminals: np.ndarray) -> np.ndarray:
    """Rows that are terminal with s' = s, as a mask over all rows."""
    rows = np.flatnonzero(terminals)
    unknown = np.zeros(len(terminals), bool)
    unknown[rows[(next_obs[rows] == obs[rows]).all(1)]] = True
    return unknown


class OfflineTrainer:
    """Offline Uni-O4 on one dataset (an `OfflineDataset`: `read_hdf5`, `from_arrays`): IQL Q and V, the
    dynamics ensemble, ensemble BC (or `init_policy`, online -> offline), then multi-step improvement with
    AM-Q; `run()` returns the AM-Q-selected policy and saves it to run_dir/final. Each stage is cached in
    run_dir/stages under a hash of its settings and the dataset, so a rerun resumes and a changed setting
    retrains what it changes. Nothing here reads an environment's return."""

    def __init__(
        self,
        cfg: UniO4Config,
        dataset: Any,
        run_dir: str | Path,
        *,
        init_policy: tuple[GaussianPolicyEnsemble, StateNormalizer] | None = None,
        checkpoint_every: int = 2000,
        progress: bool = True,
        log: ScalarLog | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        if init_policy is not None:  # before anything is written: a rejected run leaves no folder
            spec, dims = init_policy[0].spec, (dataset.observations.shape[1], dataset.actions.shape[1])
            if (spec.obs_dim, spec.act_dim) != dims:
                raise ValueError(f"the initial policy expects obs/act dims {spec.obs_dim}/{spec.act_dim}, the dataset "
                                 f"has {dims[0]}/{dims[1]}: a policy of another task or robot")
        from ..data import validate

        validate(dataset)  # a NaN reward would surface as "training diverged", a (N, 1) column as a shape error
        self.cfg, self.ds = cfg, dataset
        self.termination()  # an env with no termination rule is said now, not after the value and dynamics stages
        self._check_enough_rows(len(dataset))
        # Online -> offline: keep the online policy's input statistics so its weights stay valid. From the data:
        # made before the run folder, so a dataset whose statistics overflow leaves none.
        normalizer = (init_policy[1] if init_policy is not None
                      else StateNormalizer.from_data(np.asarray(dataset.observations)))
        # Polled between steps, e.g. a node's shutdown flag: the stage saves and training ends
        # cleanly instead of dying in the middle of a torch call at interpreter exit.
        self.should_stop = should_stop or (lambda: False)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.init_policy = init_policy
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.log = log or ScalarLog(self.run_dir / "scalars.csv")
        t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
        self.obs, self.act = t(dataset.observations), t(dataset.actions)
        self.rew, self.next_obs = t(dataset.rewards), t(dataset.next_observations)
        # Only true terminations stop the bootstrap; timeouts are artefacts of episode length
        # (the authors' code treats them as terminal too).
        self.terminal = t(dataset.terminals)
        self.normalizer = normalizer
        self.obs_n = self.normalizer(self.obs)
        self.next_obs_n = self.normalizer(self.next_obs)
        self.digest = dataset_digest(dataset)
        self.spec = PolicySpec(
            obs_dim=self.obs.shape[1], act_dim=self.act.shape[1], hidden=tuple(cfg.policy.hidden),
            activation=cfg.policy.activation, mean_activation=cfg.policy.mean_activation,
            log_std_min=cfg.policy.log_std_min, log_std_max=cfg.policy.log_std_max,
        )
        self.norm_key = hashlib.sha256(self.normalizer.mean.numpy().tobytes()).hexdigest()[:8]

    def _check_enough_rows(self, n: int) -> None:
        """The dynamics model holds out a share of the rows to pick its elites, and fits the rest: a dataset too
        small to leave one row out and two to fit (their spread normalises its inputs) ended, a stage later, in
        "training diverged ... try a lower learning rate"."""
        d = self.cfg.dynamics
        if n < (least := rows_needed(d)):
            raise ValueError(f"{n} transition(s) are too few: the dynamics model holds out "
                             f"{d.holdout_ratio:g} of them (dynamics.holdout_ratio) and fits the rest; it needs at "
                             f"least {least}")

    # ------------------------------------------------------------------ helpers
    def state_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The dataset's per-dimension state range, where model rollouts for AM-Q are kept."""
        return (torch.minimum(self.obs.min(0).values, self.next_obs.min(0).values),
                torch.maximum(self.obs.max(0).values, self.next_obs.max(0).values))

    def termination(self) -> TerminationFn:
        """The rule that ends AM-Q's model rollouts: `dynamics.termination`, or the env's when "auto"."""
        d = self.cfg.dynamics
        return rule_for_env(d.termination if d.termination != "auto" else self.cfg.env)

    def termination_name(self) -> str:
        """The name of `termination()`'s rule in RULES (what "auto" resolved to)."""
        rule = self.termination()
        return next(name for name, fn in RULES.items() if fn is rule)

    def q_scale(self) -> float:
        """The value level of a constant mean reward, mean |r| / (1 - gamma): the output scale of a
        layer-normalised Q (`value.q_layer_norm`)."""
        return max(float(self.rew.abs().mean()), 1e-6) / (1.0 - self.cfg.value.gamma)

    def _key(self, *parts: Any) -> str:
        """A stage's cache key: its config, inputs and the seed its training draws from."""
        return config_hash(*parts, self.cfg.seed)

    def _stage_dir(self, name: str, key: str) -> Path:
        return self.run_dir / "stages" / f"{name}-{key}"

    def _seed(self, name: str) -> int:
        return self.cfg.seed * 1000 + sum(name.encode()) % 997

    def _loop(
        self, name: str, total: int, start: int, step_fn: Callable[[int], dict[str, float]],
        save_fn: Callable[[int], None], every: int | None = None,
    ) -> None:
        every = every or self.checkpoint_every
        bar = tqdm(total=total, initial=start, desc=name, disable=not self.progress, dynamic_ncols=True,
                   mininterval=1.0)
        last_save = time.monotonic()
        for step in range(start, total):
            if self.should_stop():
                save_fn(step)
                bar.close()
                raise TrainingStopped(f"{name} stopped at step {step} of {total}; a rerun resumes there")
            stats = step_fn(step)
            if stats and ((step + 1) % 100 == 0 or step == start):
                self.log.log(name, step + 1, stats)
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(stats.items())[:3]}, refresh=False)
            bar.update(1)
            if (step + 1) % every == 0 or time.monotonic() - last_save > 120:
                save_fn(step + 1)
                last_save = time.monotonic()
        bar.close()
        save_fn(total)

    # ------------------------------------------------------------------ stages
    def train_value(self) -> tuple[IQLCritic, str]:
        c = self.cfg.value
        key = self._key(c, self.digest, self.norm_key)
        d = self._stage_dir("value", key)
        torch.manual_seed(self._seed("value"))
        critic = IQLCritic.from_config(c, self.obs.shape[1], self.act.shape[1], self.q_scale())
        warmup, total = c.mc_warmup_steps, c.mc_warmup_steps + c.steps
        start = self._resume(d, critic, {"q_opt": critic.q_opt, "v_opt": critic.v_opt})
        if start < total:
            batches = _Batches(len(self.obs), c.batch_size, self._seed("value") + start)
            returns = torch.as_tensor(self.ds.discounted_returns(c.gamma)) if warmup else None

            def step_fn(step: int) -> dict[str, float]:
                i = batches()
                if step < warmup:
                    stats = critic.warmup_update(self.obs_n[i], self.act[i], returns[i])
                    if step + 1 == warmup:
                        critic.sync_target()
                    return stats
                return critic.update(self.obs_n[i], self.act[i], self.rew[i], self.next_obs_n[i], self.terminal[i])

            def save_fn(step: int) -> None:
                self._save(d, critic, {"q_opt": critic.q_opt, "v_opt": critic.v_opt}, step, total, c)

            critic.n_updates = max(0, start - warmup)
            self._loop("value", total, start, step_fn, save_fn)
        critic.n_updates = c.steps
        return critic, key

    def train_dynamics(self) -> tuple[GaussianEnsembleModel, str]:
        c = self.cfg.dynamics
        rows = slice(None)
        key = self._key(c, self.digest)
        terminals = np.asarray(self.ds.terminals, bool)
        if self.ds.metadata.get("next_observations_rebuilt"):
            # A terminal row's s' is then the next episode's start, which no model should learn to reach.
            rows = ~terminals
            key = self._key(c, self.digest, "terminal rows left out")
        elif (unknown := _terminals_without_next_state(self.ds.observations, self.ds.next_observations,
                                                       terminals)).any():
            # A terminal whose s' is s was written without its next state (the robot's recorder, when the
            # policy never answered the fallen state; every fall before it learned to): fitted, the model
            # would learn that a fall changes nothing, and AM-Q's rollouts would never see one.
            rows = ~unknown
            key = self._key(c, self.digest, "terminal rows without their next state left out")
        d = self._stage_dir("dynamics", key)
        torch.manual_seed(self._seed("dynamics"))
        model = GaussianEnsembleModel(c.n_members, self.obs.shape[1], self.act.shape[1], tuple(c.hidden), c.n_elites)
        if ckpt.exists(d, "stage") and ckpt.load(d, "stage")[1].get("done"):
            tensors, _ = ckpt.load(d, "stage")
            ckpt.load_prefixed("model", model, tensors)
            return model, key
        bar = tqdm(desc="dynamics", unit="epoch", disable=not self.progress, dynamic_ncols=True)

        def on_epoch(epoch: int, stats: dict[str, float]) -> None:
            if self.should_stop():  # dynamics trains in minutes: a stop restarts this stage
                bar.close()
                raise TrainingStopped(f"dynamics stopped at epoch {epoch}; a rerun trains it again")
            self.log.log("dynamics", epoch, stats)
            bar.update(1)
            bar.set_postfix(holdout_mse=f"{stats['holdout_mse']:.4g}", refresh=False)

        stats = train_dynamics(
            model, self.ds.observations[rows], self.ds.actions[rows], self.ds.rewards[rows],
            self.ds.next_observations[rows],
            n_elites=c.n_elites, lr=c.lr, batch_size=c.batch_size, weight_decay=tuple(c.weight_decay),
            holdout_ratio=c.holdout_ratio, max_holdout=c.max_holdout, patience=c.patience,
            max_epochs=c.max_epochs, max_steps=c.max_steps, rng=np.random.default_rng(self._seed("dynamics")),
            on_epoch=on_epoch,
        )
        bar.close()
        ckpt.save(d, "stage", ckpt.prefixed("model", model),
                  {"done": True, "config": to_dict(c), "dataset": self.digest, **stats})
        return model, key

    def train_bc(self) -> tuple[GaussianPolicyEnsemble, str]:
        c = self.cfg.bc
        if self.init_policy is not None:
            # Online -> offline (Appendix A.4.4 line 7): every member starts as the online policy;
            # no behaviour cloning. Diversity then comes from the Eq. 25 term during improvement.
            src = self.init_policy[0]
            if src.spec.obs_dim != self.spec.obs_dim or src.spec.act_dim != self.spec.act_dim:
                raise ValueError(
                    f"initial policy has obs/act dims {src.spec.obs_dim}/{src.spec.act_dim}, "
                    f"dataset has {self.spec.obs_dim}/{self.spec.act_dim}")
            ens = GaussianPolicyEnsemble(src.spec, c.n_policies)

            for i in range(c.n_policies):
                copy_member(ens, i, src, 0)
            self.spec = src.spec
            return ens, "init-" + hashlib.sha256(
                b"".join(v.numpy().tobytes() for v in src.state_dict().values())).hexdigest()[:12]
        key = self._key(c, self.cfg.policy, self.digest, self.norm_key)
        d = self._stage_dir("bc", key)
        torch.manual_seed(self._seed("bc"))
        policy = GaussianPolicyEnsemble(self.spec, c.n_policies)
        opt = torch.optim.Adam(policy.parameters(), lr=c.lr)
        start = self._resume(d, policy, {"opt": opt}, prefix="policy")
        if start < c.steps:
            batches = _Batches(len(self.obs), c.batch_size, self._seed("bc") + start)

            def step_fn(_: int) -> dict[str, float]:
                i = batches()
                loss, stats = ensemble_bc_loss(policy, self.obs_n[i], self.act[i], c.alpha, c.disagreement)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return stats

            self._loop("bc", c.steps, start, step_fn,
                       lambda s: self._save(d, policy, {"opt": opt}, s, c.steps, c, prefix="policy"))
        return policy, key

    def improve(
        self, policy: GaussianPolicyEnsemble, critic: IQLCritic, model: GaussianEnsembleModel, upstream: str
    ) -> tuple[GaussianPolicyEnsemble, float]:
        c, o = self.cfg.improvement, self.cfg.ope
        # With dynamics.termination "auto" the rule follows the env, which no config above names: another env
        # of the same dimensions (Walker2d and HalfCheetah are both 17/6) reused the improvement scored by the
        # other's rule.
        key = self._key(c, o, upstream, f"termination {self.termination_name()}")
        d = self._stage_dir("improve", key)
        termination = self.termination()
        adv_head, ope_head = o.heads()  # ope.q_head: both None (paper's min) or split (config.py)
        torch.manual_seed(self._seed("improve"))
        initial = copy.deepcopy(policy).requires_grad_(False)  # the improver trains `policy` in place
        imp = MultiStepImprover(policy, critic, lr=c.lr, clip=c.clip, total_steps=c.steps,
                                grad_clip=c.grad_clip, normalize_advantage=c.normalize_advantage,
                                kl_alpha=c.kl_alpha if self.init_policy is not None else 0.0,
                                advantage_head=adv_head)
        start = 0
        if ckpt.exists(d, "stage"):
            tensors, meta = ckpt.load(d, "stage", needs=("opt", "step", "iteration"))
            ckpt.load_prefixed("target", imp.target, tensors)
            ckpt.load_prefixed("behavior", imp.behavior, tensors)
            with ckpt.reading(d / "stage"):
                ckpt.load_optimizer("opt", imp.opt, tensors, meta["opt"])
            imp.sched.last_epoch = meta["step"]
            imp.state.step = start = meta["step"]
            imp.state.iteration = meta["iteration"]
        gen = torch.Generator().manual_seed(self._seed("improve") + start)
        bounds = self.state_bounds()
        batches = _Batches(len(self.obs), c.batch_size, self._seed("improve") + start)

        def score(policies: list[GaussianPolicyEnsemble], n_starts: int = o.n_start_states,
                  g: torch.Generator = gen) -> torch.Tensor:
            # Every candidate is scored from the same start states, so the comparison is not
            # drowned by the spread between draws of starts. Returns (candidates, starts).
            starts = self.obs[torch.randint(len(self.obs), (n_starts,), generator=g)]
            return am_q_per_start(
                policies, critic.q, model, termination, self.normalizer, starts, o.horizon, o.gamma,
                generator=torch.Generator().manual_seed(int(torch.randint(2**31, (1,), generator=g))),
                state_bounds=bounds, q_head=ope_head)

        def step_fn(step: int) -> dict[str, float]:
            stats = imp.update(self.obs_n[batches()])
            if (step + 1) % c.eval_every == 0:
                s = score([imp.target, imp.behavior]).mean(1)
                n = imp.target.n
                events = imp.replace(s[:n], s[n:])
                row = {f"am_q_target_{i}": float(s[i]) for i in range(n)}
                row.update({f"am_q_behavior_{i}": float(s[n + i]) for i in range(n)})
                row["replacements"] = float(len(events))
                self.log.log("improve_ope", step + 1, row)
            return stats

        def save_fn(step: int) -> None:
            t_opt, m_opt = ckpt.optimizer_tensors("opt", imp.opt)
            tensors = {**ckpt.prefixed("target", imp.target), **ckpt.prefixed("behavior", imp.behavior), **t_opt}
            ckpt.save(d, "stage", tensors, {
                "step": step, "iteration": imp.state.iteration, "opt": m_opt, "config": to_dict(c),
                "done": step >= c.steps,
                "events": [e.__dict__ for e in imp.state.events],
            })

        if start < c.steps:
            self._loop("improve", c.steps, start, step_fn, save_fn, every=max(c.eval_every, 500))

        # Final choice by AM-Q alone (no environment returns), among the starting policies, the
        # accepted behaviour policies and the final targets, scored on the same fresh start states.
        n = imp.target.n
        candidates = [initial, imp.behavior, imp.target]
        # Its own generator: a run resumed after the loop finished must choose what an
        # uninterrupted run chooses (the loop's generator is reseeded at the resume step).
        per_start = score(candidates, max(o.n_start_states, self.cfg.selection.start_states),
                          torch.Generator().manual_seed(self._seed("select")))
        choice = choose(per_start, [k % n for k in range(3 * n)], self._kl_from(initial, candidates),
                        self.cfg.selection.rule, self.cfg.selection.z)
        best = choice.index
        source = candidates[best // n]
        chosen = GaussianPolicyEnsemble(source.spec, 1)
        copy_member(chosen, 0, source, best % n)
        self.log.log("select", c.steps, {"am_q_selected": choice.scores[best], "selected_index": float(best)})
        write_json(self.run_dir / "selection.json", {
            "selected": ("initial", "behavior", "target")[best // n], "member": best % n,
            "iterations": imp.state.iteration, "candidates": [f"{kind} {i}" for kind in
                                                              ("initial", "behavior", "target") for i in range(n)],
            **choice.to_dict(),
        })
        return chosen, choice.scores[best]

    @torch.no_grad()
    def _kl_from(self, initial: GaussianPolicyEnsemble, candidates: list[GaussianPolicyEnsemble]) -> torch.Tensor:
        """Mean KL(starting member i || candidate from member i) over the dataset's states."""
        ref_mean, ref_log_std = initial(self.obs_n)
        return torch.cat([gaussian_kl(ref_mean, ref_log_std, *ens(self.obs_n)).mean(1) for ens in candidates])

    def run(self, version: int | None = None) -> OfflineResult:
        """All stages; the chosen policy in run_dir/final, labelled `version` if given (the version a learner
        publishes it as: a policy node or an online learner started from the folder then knows it)."""
        critic, v_key = self.train_value()
        model, d_key = self.train_dynamics()
        policy, b_key = self.train_bc()
        chosen, score = self.improve(policy, critic, model, upstream=f"{v_key}-{d_key}-{b_key}")
        extra = {"am_q": score, "config": to_dict(self.cfg), "dataset": self.digest}
        save_policy(self.run_dir / "final", "policy", chosen, self.normalizer, critic=critic,
                    extra=extra if version is None else {**extra, "version": version})
        return OfflineResult(chosen, critic, self.normalizer, score, self.run_dir)

    # ------------------------------------------------------------------ persistence
    def _save(self, d: Path, module: torch.nn.Module, opts: dict[str, torch.optim.Optimizer], step: int,
              total: int, cfg: Any, prefix: str = "model") -> None:
        tensors = ckpt.prefixed(prefix, module)
        meta: dict[str, Any] = {"step": step, "done": step >= total, "config": to_dict(cfg),
                                "dataset": self.digest, "opts": {}}
        for name, opt in opts.items():
            t, m = ckpt.optimizer_tensors(name, opt)
            tensors.update(t)
            meta["opts"][name] = m
        ckpt.save(d, "stage", tensors, meta)

    def _resume(self, d: Path, module: torch.nn.Module, opts: dict[str, torch.optim.Optimizer],
                prefix: str = "model") -> int:
        if not ckpt.exists(d, "stage"):
            return 0
        tensors, meta = ckpt.load(d, "stage", needs=("opts", "step"))
        ckpt.load_prefixed(prefix, module, tensors)
        with ckpt.reading(d / "stage"):
            for name, opt in opts.items():
                ckpt.load_optimizer(name, opt, tensors, meta["opts"][name])
            return int(meta["step"])


def rows_needed(d: Any) -> int:
    """The fewest transitions the dynamics model (a DynamicsConfig) can be fit on: one held out to pick its
    elites, two to fit (their spread normalises its inputs)."""
    held = lambda rows: int(min(d.max_holdout, d.holdout_ratio * rows))  # noqa: E731 - dynamics.py's split
    return next(rows for rows in range(3, 10**6) if held(rows) >= 1 and rows - held(rows) >= 2)


def save_policy(
    directory: str | Path, name: str, policy: GaussianPolicyEnsemble, normalizer: StateNormalizer,
    critic: IQLCritic | ValueNet | None = None, extra: dict | None = None,
) -> None:
    """A deployable policy: weights + normaliser (+ V for online fine-tuning) and its spec."""
    tensors = {**ckpt.prefixed("policy", policy), **ckpt.prefixed("normalizer", normalizer)}
    meta = {"spec": policy.spec.to_dict(), "n": policy.n, **(extra or {})}
    if critic is not None:
        v = critic.v if isinstance(critic, IQLCritic) else critic
        tensors.update(ckpt.prefixed("value", v))
        meta["v_hidden"] = [m.out_features for m in v.net.net if hasattr(m, "out_features")][:-1]
    ckpt.save(directory, name, tensors, meta)


def load_policy(directory: str | Path, name: str = "policy") -> tuple[GaussianPolicyEnsemble, StateNormalizer, dict,
                                                                       dict[str, torch.Tensor]]:
    tensors, meta = ckpt.load(directory, name)
    bad = ckpt.first_non_finite(tensors)
    if bad is not None:
        raise ckpt.CheckpointError(f"policy {Path(directory) / name} is unusable: tensor {bad!r} has NaN/inf values")
    try:
        spec = PolicySpec.from_dict(meta["spec"])
        # Shapes only until the weights are checked against them: a policy.json with hidden [60000, 60000]
        # allocated (and randomly initialised) 14 GB per layer before the check said the weights are not its.
        with torch.device("meta"):
            policy = GaussianPolicyEnsemble(spec, int(meta.get("n", 1)))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: torch's, e.g. a negative width
        raise ckpt.CheckpointError(f"policy {Path(directory) / name}.json does not describe a policy "
                                   f"({type(exc).__name__}: {exc})") from None
    ckpt.load_prefixed("policy", policy, tensors, assign=True)
    if any(tuple(tensors.get(f"normalizer.{k}", torch.empty(0)).shape) != (spec.obs_dim,) for k in ("mean", "std")):
        raise ckpt.CheckpointError(f"policy {Path(directory) / name} has no state normaliser of its {spec.obs_dim} "
                                   "inputs (normalizer.mean, normalizer.std): it cannot read states without one")
    if (tensors["normalizer.std"] <= 0).any():  # as a policy update must (policy_update.decode_update)
        raise ckpt.CheckpointError(f"policy {Path(directory) / name} has a state normaliser whose std is not positive "
                                   f"(column {int(torch.argmax((tensors['normalizer.std'] <= 0).int()))}): every "
                                   "state it reads would be inf or NaN")
    normalizer = StateNormalizer(tensors["normalizer.mean"], tensors["normalizer.std"])
    return policy, normalizer, meta, tensors


def load_value(directory: str | Path, meta: dict, tensors: dict[str, torch.Tensor], obs_dim: int,
               default_hidden: tuple[int, ...] | None = None) -> ValueNet | None:
    """The V saved beside a policy (load_policy's `meta` and `tensors`), None if there is none. Its widths come from
    policy.json's `v_hidden` (`default_hidden` for a folder that names none); a hand-edited one (5, "ab", [-3])
    is a CheckpointError, not a TypeError from inside torch."""
    if not any(k.startswith("value.") for k in tensors):
        return None
    hidden = meta.get("v_hidden", default_hidden)
    if not (isinstance(hidden, (list, tuple)) and hidden
            and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden)):
        raise ckpt.CheckpointError(f"policy {Path(directory)}: v_hidden {hidden!r} in policy.json is not a list of "
                                   "layer widths (e.g. [256, 256, 256])")
    with torch.device("meta"):  # shapes only until the weights are checked against them, as load_policy
        critic = ValueNet(obs_dim, tuple(hidden))
    ckpt.load_prefixed("value", critic, tensors, assign=True)
    return critic

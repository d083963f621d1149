"""Make D4RL-style datasets here (no download exists): train a behaviour agent with our own PPO,
then roll out its snapshots.

    medium         N steps of the snapshot whose evaluation return is closest to
                   `medium_fraction` x the best snapshot's (D4RL: a policy at about a third to
                   a half of expert performance), actions sampled from the stochastic policy
    medium-replay  every transition the agent saw during training up to that snapshot
    medium-expert  medium + N steps of the best snapshot ("expert")
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.atomic import atomic_write, write_json
from . import checkpoint as ckpt
from .normalizer import RunningNormalizer
from .online import OnlineTrainer, make_gym_env, scratch_agent, scratch_config
from .policy import GaussianPolicyEnsemble, PolicySpec
from .ppo import Rollout
from .scalars import ScalarLog, plot_log

if TYPE_CHECKING:
    from ..data import OfflineDataset


@dataclass
class CollectConfig:
    env: str = "Hopper-v5"
    seed: int = 0
    train_steps: int = 1_000_000
    eval_every: int = 20_000
    eval_episodes: int = 5
    dataset_steps: int = 200_000
    medium_fraction: float = 0.45

    def __post_init__(self) -> None:
        # Checked before hours of behaviour training, not after them.
        for name in ("train_steps", "eval_every", "eval_episodes", "dataset_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.medium_fraction <= 1.0:
            raise ValueError(f"medium_fraction must be in (0, 1], got {self.medium_fraction}")


class _Replay:
    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []  # the chunks on disk (a resumed run's), then this process's
        self._added = False

    def add(self, r: Rollout, env_step_end: int) -> dict[str, np.ndarray] | None:
        """Append a rollout; returns an earlier part it changed (to be written again), if any.

        A resumed run goes on from its checkpoint, which is written after the chunk: a process stopped in
        between left chunks of steps it trains again, which this rollout's replace (before, both were kept
        and medium-replay held a rollout twice). And it starts its environments afresh: the episode running
        in the last chunk kept was cut there, so that chunk's last row becomes a timeout."""
        start = env_step_end - len(r.raw_obs)
        self.parts = [p for p in self.parts if p["end"][0] <= start]
        changed = None
        if not self._added and self.parts and not self.parts[-1]["terminals"][-1]:
            changed = self.parts[-1]
            changed["timeouts"][-1] = True
        self._added = True
        clip = lambda a: a.clamp(-1, 1).numpy()  # noqa: E731  the actions the env executed
        self.parts.append({
            "observations": r.raw_obs[:, 0].numpy(), "actions": clip(r.actions[:, 0]),
            "rewards": r.env_rewards[:, 0].numpy(), "terminals": r.terminals[:, 0].numpy(),
            "timeouts": r.timeouts[:, 0].numpy(), "next_observations": r.next_raw_obs[:, 0].numpy(),
            "end": np.full(len(r.raw_obs), env_step_end),
        })

    def until(self, step: int) -> OfflineDataset:
        from ..data import OfflineDataset

        keep = [p for p in self.parts if p["end"][0] <= step]
        cat = {k: np.concatenate([p[k] for p in keep]) for k in keep[0] if k != "end"}
        # The last transition of the replay is cut mid-episode: mark it a timeout so episode
        # boundaries stay consistent for readers.
        cat["timeouts"][-1] = not cat["terminals"][-1]
        return OfflineDataset(**_typed(cat), infos={}, metadata={})


def _typed(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in d.items():
        out[k] = v.astype(bool) if k in ("terminals", "timeouts") else v.astype(np.float32)
    return out


def rollout_dataset(
    actor: GaussianPolicyEnsemble, normalizer: torch.nn.Module, env_name: str, steps: int, seed: int,
    desc: str = "rollout", progress: bool = True,
) -> OfflineDataset:
    """`steps` transitions of the stochastic policy, with log-probs, qpos and qvel in infos/."""
    import gymnasium as gym

    from ..data import OfflineDataset

    env = gym.make(env_name)
    obs, _ = env.reset(seed=seed)
    cols: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts",
                                             "next_observations", "logp", "qpos", "qvel")}
    g = torch.Generator().manual_seed(seed)
    for t in tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0, dynamic_ncols=True):
        data = env.unwrapped.data
        cols["qpos"].append(data.qpos.copy())
        cols["qvel"].append(data.qvel.copy())
        with torch.no_grad():
            mean, log_std = actor(normalizer(torch.as_tensor(obs[None], dtype=torch.float32)))
            a = actor.executed(mean + torch.randn(mean.shape, generator=g) * log_std.exp())
            logp = actor.gaussian_log_prob(mean, log_std, a)
        nxt, r, te, tr, _ = env.step(a[0, 0].numpy())
        last = t == steps - 1
        for k, v in (("observations", obs), ("actions", a[0, 0].numpy()), ("rewards", r), ("terminals", te),
                     ("timeouts", tr or (last and not te)), ("next_observations", nxt), ("logp", float(logp))):
            cols[k].append(v)
        obs = nxt if not (te or tr) else env.reset()[0]
    env.close()
    arr = {k: np.asarray(v) for k, v in cols.items()}
    infos = {"action_log_probs": arr.pop("logp").astype(np.float32),
             "qpos": arr.pop("qpos").astype(np.float32), "qvel": arr.pop("qvel").astype(np.float32)}
    return OfflineDataset(**_typed(arr), infos=infos, metadata={})


KINDS = ("medium", "medium-replay", "medium-expert")


def dataset_paths(cfg: CollectConfig, out: Path) -> dict[str, Path]:
    name = cfg.env.split("-")[0].lower()
    return {kind: out / f"{name}-{kind}.hdf5" for kind in KINDS}


def finished_datasets(cfg: CollectConfig, out: Path) -> dict[str, Path] | None:
    """The datasets a finished collect in `out` wrote with these very settings, or None when there is
    nothing finished to reuse. Refuses, naming the settings, to replace datasets made with others."""
    record = out / "collect.json"
    if not record.exists():
        return None
    try:
        meta = json.loads(record.read_text())
        # collect.json of runs before it kept the settings: what it did record of them
        then = meta.get("settings") or {"env": meta["env"], "seed": int(meta["seed"]),
                                        "train_steps": int(meta["behavior_train_steps"]),
                                        "dataset_steps": int(meta["summary"]["medium"]["transitions"])}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        raise ValueError(f"{record} is unreadable, so which settings made the datasets in {out} is unknown; "
                         "they are kept: use another --out") from None
    changed = [f"{k}: {then[k]!r} -> {v!r}" for k, v in asdict(cfg).items() if k in then and then[k] != v]
    if changed:
        raise ValueError(f"{out} holds datasets made with other settings ({'; '.join(changed)}); they are kept: "
                         "use another --out for these settings")
    paths = dataset_paths(cfg, out)
    # Same settings and seed: a missing dataset is written again, and comes out the same.
    return paths if all(p.is_file() for p in paths.values()) else None


def collect(cfg: CollectConfig, out_dir: str | Path, progress: bool = True) -> dict[str, Path]:
    """Train the behaviour agent (resumable) and write the three datasets; returns their paths."""
    out = Path(out_dir)
    # A finished collect is reused untouched, not written again: a rerun with another thread count
    # would otherwise relabel datasets with a torch_threads that did not make them.
    if (done := finished_datasets(cfg, out)) is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    env_fn = make_gym_env(cfg.env, cfg.seed)
    probe = env_fn()
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    probe.close()
    torch.manual_seed(cfg.seed)
    actor, critic, normalizer = scratch_agent(obs_dim, act_dim)
    ocfg = scratch_config(total_steps=cfg.train_steps, eval_every=cfg.eval_every, eval_episodes=cfg.eval_episodes)
    log = ScalarLog(out / "scalars.csv")
    trainer = OnlineTrainer(ocfg, env_fn, actor, critic, normalizer, out, seed=cfg.seed, log=log,
                            progress=progress, stage="behavior_ppo")
    replay = _Replay()
    replay_dir = out / "replay"
    replay_dir.mkdir(exist_ok=True)
    snaps = out / "snapshots"

    def on_iteration(rollout: Rollout, _: list[dict]) -> None:
        # Called after the trainer counted this rollout's steps, before its evaluation and its
        # checkpoint; replay chunks are append-only so a resumed run keeps the whole history.
        step = trainer.env_steps
        if (cut := replay.add(rollout, step)) is not None:
            atomic_write(replay_dir / f"chunk_{int(cut['end'][0]):08d}.npz", lambda tmp: _savez(tmp, cut))
        atomic_write(replay_dir / f"chunk_{step:08d}.npz", lambda tmp, part=replay.parts[-1]: _savez(tmp, part))
        if step // cfg.eval_every > (step - len(rollout.raw_obs)) // cfg.eval_every or step >= cfg.train_steps:
            ckpt.save(snaps, f"step_{step:08d}", {**ckpt.prefixed("actor", actor),
                                                  **ckpt.prefixed("normalizer", normalizer)},
                      {"env_steps": step, "spec": actor.spec.to_dict()})

    for chunk in sorted(replay_dir.glob("chunk_*.npz")):
        try:
            with np.load(chunk, allow_pickle=False) as z:
                replay.parts.append({k: z[k] for k in z.files})
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{chunk} is damaged ({type(exc).__name__}: {exc}), so this collect run cannot resume "
                             f"with its whole history: collect again into a new --out") from None
    history = trainer.run(on_iteration)
    plot_log(out / "scalars.csv", out / "behavior_ppo.png", title=f"behaviour PPO on {cfg.env}")

    evals = dict(zip(history.eval_steps, history.eval_returns))
    snap_steps = sorted(int(p.stem.split("_")[1]) for p in snaps.glob("step_*.json"))
    scored = [(s, evals[s]) for s in snap_steps if s in evals]
    if not scored:
        raise RuntimeError("no evaluated snapshots: increase train_steps or lower eval_every")
    expert_step, expert_ret = max(scored, key=lambda x: x[1])
    target = cfg.medium_fraction * expert_ret
    medium_step, medium_ret = min(scored, key=lambda x: abs(x[1] - target))

    def load_snap(step: int) -> tuple[GaussianPolicyEnsemble, torch.nn.Module]:
        tensors, meta = ckpt.load(snaps, f"step_{step:08d}", needs=("spec",))
        a = GaussianPolicyEnsemble(PolicySpec.from_dict(meta["spec"]), 1)  # the snapshot's own architecture
        n = RunningNormalizer(obs_dim)
        ckpt.load_prefixed("actor", a, tensors)
        ckpt.load_prefixed("normalizer", n, tensors)
        return a, n

    meta = {"env": cfg.env, "seed": cfg.seed, "behavior_train_steps": cfg.train_steps,
            "medium_step": medium_step, "medium_eval_return": medium_ret,
            "expert_step": expert_step, "expert_eval_return": expert_ret,
            # floating-point results depend on it: the same seed on another thread count is another dataset
            "torch_threads": torch.get_num_threads()}
    from ..data import OfflineDataset, write_hdf5

    med_actor, med_norm = load_snap(medium_step)
    exp_actor, exp_norm = load_snap(expert_step)
    medium = rollout_dataset(med_actor, med_norm, cfg.env, cfg.dataset_steps, cfg.seed + 1, "medium", progress)
    expert = rollout_dataset(exp_actor, exp_norm, cfg.env, cfg.dataset_steps, cfg.seed + 2, "expert", progress)
    replay_ds = replay.until(medium_step)
    paths, summary = dataset_paths(cfg, out), {}
    for kind, ds in (("medium", medium), ("medium-replay", replay_ds),
                     ("medium-expert", OfflineDataset.concatenate([medium, expert]))):
        ds.metadata.update({"algorithm": "uni_o4_ros PPO", "kind": kind, **{k: str(v) for k, v in meta.items()}})
        write_hdf5(paths[kind], ds, overwrite=True)
        summary[kind] = dataset_summary(ds)
    write_json(out / "collect.json", {**meta, "datasets": {k: str(v) for k, v in paths.items()}, "summary": summary,
                                      "settings": asdict(cfg)})
    return paths


def dataset_summary(ds: OfflineDataset) -> dict[str, float | int]:
    """What a user checks first about a dataset: its size and how good its episodes are (the
    stochastic behaviour's returns, which sit below the snapshot's deterministic evaluation)."""
    rets = ds.episode_returns()
    return {"transitions": len(ds), "episodes": len(rets), "mean_return": float(rets.mean()),
            "std_return": float(rets.std()), "max_return": float(rets.max())}


def _savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez appends ".npz" to a name that lacks it
        np.savez(f, **arrays)

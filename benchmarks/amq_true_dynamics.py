"""Which half of AM-Q misranks a run's candidates: the dynamics model or the Q function?

AM-Q (the paper's offline policy evaluation) sums Q along H-step rollouts of the learned model.
This scores every candidate of one Uni-O4 offline run (BC members, accepted behaviours, final
targets) twice from the same dataset start states: once as the run did (learned model, its
termination rule, clamped to the data's state range) and once with the model replaced by the
simulator itself (MuJoCo set to each start state, the task's own termination), with the same Q,
horizon and deterministic actions. If both orderings agree, the model is not what misranks; the
true H-step reward beside them shows whether Q's ordering is the environment's. Optionally a
fresh critic, trained by the pipeline's value stage with another seed on half of the episodes,
scores the true-dynamics rollouts too: if it agrees with the run's critic, the ordering is a
bias every such Q shares, not one Q's noise that the improvement happened to climb.

Reads the run's cached stages (nothing of the run is retrained); the full-episode returns from
reset states are the ones `offline_candidates.py` prints.

    python benchmarks/amq_true_dynamics.py runs/bench_offline/hopper-medium-s1 \\
        --dataset data/hopper/hopper-medium.hdf5 --env Hopper-v5 --fresh-critic half
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from offline_candidates import _stage, load_candidates  # the sibling script: same folder on sys.path
from tqdm import tqdm

from uni_o4_ros.data import OfflineDataset, read_hdf5
from uni_o4_ros.learning import checkpoint as ckpt
from uni_o4_ros.learning.config import UniO4Config, apply_overrides, from_dict
from uni_o4_ros.learning.dynamics import GaussianEnsembleModel
from uni_o4_ros.learning.offline import OfflineTrainer, dataset_digest, load_policy
from uni_o4_ros.learning.online import make_gym_env
from uni_o4_ros.learning.ope import am_q_per_start
from uni_o4_ros.learning.policy import GaussianPolicyEnsemble
from uni_o4_ros.learning.ppo import evaluate_policy
from uni_o4_ros.learning.value import DoubleQ, IQLCritic


class SimulatorAtState:
    """A Gymnasium MuJoCo locomotion task (v5, x position excluded from the observation) put into
    the state an observation describes: qpos = (0, obs[:nq-1]), qvel = obs[nq-1:]."""

    def __init__(self, env_name: str, obs_dim: int) -> None:
        import gymnasium as gym

        self.env = gym.make(env_name)
        self.env.reset(seed=0)
        self.sim = self.env.unwrapped
        self.nq, self.nv = self.sim.model.nq, self.sim.model.nv
        if self.nq - 1 + self.nv != obs_dim:
            raise SystemExit(f"{env_name}: observations have {obs_dim} dims, not nq - 1 + nv = "
                             f"{self.nq - 1 + self.nv}; cannot set its state from them")

    def rollout(
        self, start: np.ndarray, act_fn: Callable[[torch.Tensor], torch.Tensor],
        q_fns: dict[str, Callable[[torch.Tensor, torch.Tensor], float]], horizon: int, gamma: float,
    ) -> tuple[dict[str, float], int, float]:
        """(sum of gamma^t Q along the true trajectory per critic, live steps, true reward over them)."""
        self.env.reset(seed=0)
        self.sim.set_state(np.concatenate([[0.0], start[: self.nq - 1]]), start[self.nq - 1 :])
        obs = self.sim._get_obs()
        if not np.allclose(obs, start, atol=1e-4):  # the layout assumed above is the task's
            raise SystemExit(f"the simulator set to a dataset state observes {obs}, not {start}")
        q_sums, reward, discount = dict.fromkeys(q_fns, 0.0), 0.0, 1.0
        for t in range(horizon):
            o = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
            act = act_fn(o)
            for label, q_fn in q_fns.items():
                q_sums[label] += discount * q_fn(o, act)
            obs, r, terminated, _, _ = self.env.step(act[0].numpy())
            reward += float(r)
            discount *= gamma
            if terminated:
                return q_sums, t + 1, reward
        return q_sums, horizon, reward


def _load_stage(run: Path, name: str, module: torch.nn.Module, digest: str) -> None:
    tensors, meta = ckpt.load(_stage(run, name), "stage")
    if meta.get("dataset") != digest:
        raise SystemExit(f"{run}: its {name} stage was trained on other data than --dataset")
    ckpt.load_prefixed("model", module, tensors)


def _episode_half(ds: OfflineDataset) -> OfflineDataset:
    """Every second episode: half of the data the run's critic was trained on, drawn by episode."""
    keep = np.concatenate([np.arange(s.start, s.stop) for s in ds.episode_slices()[1::2]])
    return OfflineDataset(**{k: getattr(ds, k)[keep] for k in ("observations", "actions", "rewards", "terminals",
                                                                 "timeouts", "next_observations")})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="an offline run folder (final/, selection.json and stages/)")
    ap.add_argument("--dataset", required=True, help="the HDF5 file the run was trained on")
    ap.add_argument("--env", required=True, help="the Gymnasium MuJoCo task the data came from")
    ap.add_argument("--starts", type=int, default=128, help="dataset start states (the same for every candidate)")
    ap.add_argument("--horizon", type=int, help="rollout length (default: the run's ope.horizon)")
    ap.add_argument("--seed", type=int, default=7, help="seed of the start states and model draws")
    ap.add_argument("--fresh-critic", choices=("none", "half", "all"), default="none",
                    help="also score with a critic trained anew (seed + 1) on every second episode or on all")
    ap.add_argument("--fresh-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of the fresh critic's run config, e.g. value.steps=50000 (repeatable)")
    ap.add_argument("--episodes", type=int, default=5, help="full episodes from reset per candidate (0: none)")
    ap.add_argument("--out", help="write the table as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    final, normalizer, meta, _ = load_policy(run / "final")
    cfg = from_dict(UniO4Config, meta["config"])
    horizon = args.horizon or cfg.ope.horizon
    ds = read_hdf5(args.dataset)
    digest = dataset_digest(ds)
    v, d = cfg.value, cfg.dynamics
    obs_dim, act_dim = ds.obs_dim, ds.act_dim
    critic = IQLCritic.from_config(v, obs_dim, act_dim)  # a layer-normalised Q's scale comes with the stage
    _load_stage(run, "value", critic, digest)
    model = GaussianEnsembleModel(d.n_members, obs_dim, act_dim, tuple(d.hidden), d.n_elites)
    _load_stage(run, "dynamics", model, digest)
    critics: dict[str, DoubleQ] = {"run": critic.q}
    if args.fresh_critic != "none":
        try:
            fresh_cfg = apply_overrides(from_dict(UniO4Config, {**meta["config"], "seed": cfg.seed + 1}), None,
                                        args.fresh_set)
        except ValueError as exc:
            raise SystemExit(f"--fresh-set: {exc}") from None
        data = _episode_half(ds) if args.fresh_critic == "half" else ds
        with tempfile.TemporaryDirectory() as tmp:
            # The run's state normaliser, so both critics read the same inputs.
            critics["fresh"] = OfflineTrainer(fresh_cfg, data, tmp, init_policy=(final, normalizer)).train_value()[0].q

    trainer = OfflineTrainer(cfg, ds, run, progress=False)  # termination rule and state range only
    candidates = load_candidates(run, final.spec)
    ensembles = [candidates[kind] for kind in ("initial", "behavior", "target")]
    names = [f"{kind} {i}" for kind, ens in zip(("initial", "behavior", "target"), ensembles) for i in range(ens.n)]
    gen = torch.Generator().manual_seed(args.seed)
    starts = trainer.obs[torch.randint(len(trainer.obs), (args.starts,), generator=gen)]
    trace: dict[str, torch.Tensor] = {}
    model_am_q = am_q_per_start(ensembles, critic.q, model, trainer.termination(), normalizer, starts, horizon,
                                cfg.ope.gamma, generator=gen, state_bounds=trainer.state_bounds(), trace=trace)
    sim = SimulatorAtState(args.env, obs_dim)

    def q_fn_of(q: DoubleQ) -> Callable[[torch.Tensor, torch.Tensor], float]:
        def q_fn(o: torch.Tensor, a: torch.Tensor) -> float:
            with torch.no_grad():
                return float(q.min_q(normalizer(o), a))
        return q_fn

    q_fns = {label: q_fn_of(q) for label, q in critics.items()}
    rows = []
    members = [(ens, i) for ens in ensembles for i in range(ens.n)]
    for j, (ens, i) in enumerate(tqdm(members, desc="true dynamics", unit="candidate")):
        def act_fn(o: torch.Tensor, ens: GaussianPolicyEnsemble = ens, i: int = i) -> torch.Tensor:
            with torch.no_grad():
                return ens.executed(ens(normalizer(o))[0][i])

        out = [sim.rollout(s, act_fn, q_fns, horizon, cfg.ope.gamma) for s in starts.double().numpy()]
        row = {"candidate": names[j], "model_am_q": float(model_am_q[j].mean()),
               "model_live": float(trace["live_steps"][j].mean())}
        row.update({f"true_am_q_{label}": float(np.mean([o[0][label] for o in out])) for label in critics})
        row["true_live"] = float(np.mean([o[1] for o in out]))
        row["true_reward"] = float(np.mean([o[2] for o in out]))
        if args.episodes:
            row["episode_return"] = float(evaluate_policy(ens, normalizer, make_gym_env(args.env), args.episodes,
                                                          seed=1000, member=i).mean())
        rows.append(row)

    cols = [k for k in rows[0] if k != "candidate"]
    print(f"H = {horizon}, {args.starts} dataset starts; critics: {', '.join(critics)}")
    print(f"{'candidate':11s} " + " ".join(f"{c:>16s}" for c in cols))
    for row in rows:
        print(f"{row['candidate']:11s} " + " ".join(f"{row[c]:16.1f}" for c in cols))
    for c in [c for c in cols if "am_q" in c or c in ("true_reward", "episode_return")]:
        best = max(rows, key=lambda r: r[c])
        print(f"highest {c}: {best['candidate']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"run": str(run), "dataset": args.dataset, "horizon": horizon,
                                              "starts": args.starts, "fresh_critic": args.fresh_critic,
                                              "fresh_set": args.fresh_set, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

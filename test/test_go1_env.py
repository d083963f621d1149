"""The Gymnasium Go1 task: the paper's observation and reward checked against hand computation on
the real MuJoCo model, episode boundaries, the mattress, and `uni-o4 pretrain` (resumable)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import poll_process_table, process_table
from uni_o4_ros.learning.offline import load_policy
from uni_o4_ros.robot.go1 import DEFAULT_Q, rotation_matrix
from uni_o4_ros.sim.go1_env import Go1Env, Go1EnvConfig


def test_first_observation_is_the_paper_layout():
    env = Go1Env()
    obs, info = env.reset(seed=1, options={"vx": 0.7})
    assert obs.shape == (290,) and info["command_vx"] == 0.7
    frames = obs.reshape(5, 58)
    assert np.all(frames[:4] == 0.0)  # history starts empty, newest frame last
    f = frames[4]
    np.testing.assert_allclose(f[0:3], [0.0, 0.0, -1.0], atol=1e-6)  # upright: gravity straight down
    assert f[3] == pytest.approx(0.7 * 2.0)  # vx command x 2.0 (walk-these-ways scale)
    assert f[7] == pytest.approx(3.0)  # step frequency command, scale 1
    np.testing.assert_allclose(f[18:30], 0.0, atol=1e-6)  # q - q_default at the default pose
    np.testing.assert_allclose(f[30:42], 0.0, atol=1e-6)  # dq x 0.05 at rest
    np.testing.assert_allclose(f[42:54], 0.0)  # no action yet
    # gait clocks after one 20 ms tick at 3 Hz: phase 0.06; trot offsets (0.5, 0, 0, 0.5)
    phase = 0.06
    np.testing.assert_allclose(f[54:58], np.sin(2 * np.pi * np.array([phase + 0.5, phase, phase, phase + 0.5])),
                               atol=1e-5)


def test_reward_is_table3_from_the_simulated_motion():
    env = Go1Env()
    env.reset(seed=0, options={"vx": 0.5})
    rng = np.random.default_rng(0)
    last_a, last_dq = np.zeros(12), env.sim.state().dq
    for _ in range(3):
        a = rng.normal(0, 0.5, 12).astype(np.float32)
        obs, r, term, trunc, info = env.step(a)
        st = env.sim.state()
        v = rotation_matrix(st.quaternion).T @ st.linear_velocity
        ddq = (st.dq - last_dq) / 0.02
        r_pos = 0.02 * np.exp(-((v[0] - 0.5) ** 2 + v[1] ** 2) / 0.25) + 0.01 * np.exp(-st.angular_velocity[2] ** 2
                                                                                       / 0.25)
        r_neg = -(4e-4 * v[2] ** 2 + 2e-5 * np.sum(st.tau**2) + 2e-5 * np.sum(st.dq**2) + 5e-9 * np.sum(ddq**2)
                  + 2e-3 * np.sum((a - last_a) ** 2))
        assert r == pytest.approx(r_pos * np.exp(0.02 * r_neg), rel=1e-5)
        assert info["vx"] == pytest.approx(v[0]) and not (term or trunc)
        np.testing.assert_allclose(obs[-58:][42:54], a)  # the action just taken is the newest "last action"
        np.testing.assert_allclose(obs[-58:][18:30], st.q - DEFAULT_Q, atol=1e-6)
        last_a, last_dq = a, st.dq


def test_episode_ends_by_timeout_or_by_a_fall():
    env = Go1Env(Go1EnvConfig(max_steps=20))
    env.reset(seed=0)
    ends = [env.step(np.zeros(12))[2:4] for _ in range(20)]
    assert ends[-1] == (False, True) and all(e == (False, False) for e in ends[:-1])
    env.reset(seed=0, options={"roll": 1.4})  # tipped over beyond the 1 rad fall threshold
    _, _, term, trunc, info = env.step(np.zeros(12))
    assert term and not trunc and info["fell"]


def test_a_fall_is_the_controllers_tilt_rule_not_a_low_base_on_sinking_ground():
    import mujoco

    from uni_o4_ros.robot.go1 import roll_pitch

    def crouch_on_the_mattress(cfg: Go1EnvConfig) -> list[tuple[float, bool, bool]]:
        """A robot crouching on the mattress (thighs 1.2, calves -2.6 rad, held there) sinks until
        its trunk rests on the surface; (base height, trunk pushing on the ground, ended) per step."""
        env = Go1Env(cfg)
        env.reset(seed=0, options={"vx": 0.0})
        crouch = DEFAULT_Q.copy().reshape(4, 3)
        crouch[:, 1], crouch[:, 2] = 1.2, -2.6
        env.sim.data.qpos[env.sim.qpos_idx] = crouch.ravel()
        env.sim.data.qpos[2] = 0.115
        mujoco.mj_forward(env.sim.model, env.sim.data)
        env.safety.reset(crouch.ravel())
        hold = (crouch.ravel() - DEFAULT_Q) / 0.25
        hold[0::3] = 0.0
        steps = []
        for _ in range(15):
            _, _, term, _, info = env.step(hold)
            assert info["fell"] == term
            steps.append((info["base_height"], info["trunk_on_ground"], term))
            if term:
                break
        assert max(abs(a) for a in roll_pitch(env.sim.state().quaternion)) < 0.3  # level throughout
        return steps

    # The robot's rule (tilt): a base below 0.12 m with the trunk clear of the surface is no fall,
    # nor is the trunk resting on it; both are visible in the step info.
    steps = crouch_on_the_mattress(Go1EnvConfig(terrain="mattress"))
    assert len(steps) == 15 and not any(ended for _, _, ended in steps)
    assert sum(h < 0.12 and not trunk for h, trunk, _ in steps) >= 3  # sunk, trunk 1+ cm clear
    assert steps[-1][1]  # and then the trunk pushing on the mattress
    # Pretraining's flat-ground rule (base below 0.12 m) ends the episode at the first low step.
    steps = crouch_on_the_mattress(Go1EnvConfig(terrain="mattress", min_base_height=0.12))
    assert steps[-1][2] and steps[-1][0] < 0.12 and all(h >= 0.12 for h, _, _ in steps[:-1])


def test_mattress_sinks_the_standing_robot():
    sink, height = {}, {}
    for terrain in ("flat", "mattress"):
        env = Go1Env(Go1EnvConfig(terrain=terrain))
        env.reset(seed=0, options={"vx": 0.0})
        infos = [env.step(np.zeros(12))[4] for _ in range(100)]
        sink[terrain] = np.mean([i["sinkage"] for i in infos[50:]])
        height[terrain] = np.mean([i["base_height"] for i in infos[50:]])
    assert sink["mattress"] - sink["flat"] > 0.015  # centimetres deeper into the ground
    assert height["flat"] - height["mattress"] > 0.015


def test_bad_terrain_and_nan_action_are_refused():
    with pytest.raises(ValueError, match="unknown terrain"):
        Go1Env(Go1EnvConfig(terrain="ice"))
    env = Go1Env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(12, np.nan))


def test_pretrain_exports_a_deployable_policy_and_resumes(tmp_path):
    out = tmp_path / "pretrain"
    base = [sys.executable, "-m", "uni_o4_ros.cli", "pretrain", "--out", str(out), "--n-envs", "2", "--no-progress",
            "--set", "ppo.rollout_steps=64", "--set", "ppo.eval_every=100000", "--set", "ppo.eval_episodes=1",
            "--set", "env.max_steps=50", "--set", "hidden=[32,32]", "--set", "value_hidden=[32,32]"]
    subprocess.run(base + ["--steps", "128"], check=True, capture_output=True, timeout=300)
    policy, normalizer, meta, tensors = load_policy(out / "final")
    assert policy.spec.obs_dim == 290 and policy.spec.act_dim == 12 and meta["env_steps"] == 128
    assert "v_hidden" in meta and any(k.startswith("value.") for k in tensors)  # fine-tunable: V travels along
    subprocess.run(base + ["--steps", "256"], check=True, capture_output=True, timeout=300)
    _, _, meta, _ = load_policy(out / "final")
    assert meta["env_steps"] == 256
    timing = [json.loads(line) for line in (out / "timing.jsonl").read_text().splitlines()]
    assert [t["env_steps"] for t in timing] == [128, 256]
    rows = [line.split(",") for line in (out / "scalars.csv").read_text().splitlines()]
    updates = [int(r[1]) for r in rows if len(r) > 2 and r[2] == "policy_loss"]
    assert updates == [128, 256]  # one PPO iteration per run: the second continued, it did not restart
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hidden"] == [32, 32] and cfg["env"]["terrain"] == "flat"


def test_a_pretraining_rerun_with_other_settings_is_refused_and_leaves_the_run_as_it_was(tmp_path, capsys):
    """Seen: a refused --seed rerun still rewrote config.json (which then said seed 5), and more --steps
    with env.terrain=mattress went on with a flat-ground run, labelled mattress. Only how long it trains
    (not shorter than it has) and how it is evaluated may change on a resume."""
    from uni_o4_ros.cli import main

    out = tmp_path / "pretrain"
    base = ["pretrain", "--out", str(out), "--n-envs", "2", "--no-progress", "--set", "ppo.rollout_steps=64",
            "--set", "ppo.eval_every=100000", "--set", "ppo.eval_episodes=1", "--set", "env.max_steps=50",
            "--set", "hidden=[32,32]", "--set", "value_hidden=[32,32]"]
    assert main([*base, "--steps", "128"]) == 0
    capsys.readouterr()
    kept = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    for extra, named in ((["--seed", "5"], "(seed: 0 -> 5)"),
                         (["--set", "hidden=[16,16]"], "(hidden: [32, 32] -> [16, 16])"),
                         (["--set", "value_hidden=[16,16]"], "(value_hidden: [32, 32] -> [16, 16])"),
                         (["--set", "env.terrain=mattress"], "(env.terrain: 'flat' -> 'mattress')"),
                         # fewer steps than trained: it stopped at once and config.json said the fewer steps
                         (["--steps", "64"], "has trained 128 environment steps already, more than the 64 asked")):
        code = main([*base, "--steps", "256", *extra])
        err = capsys.readouterr().err
        assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
        assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file()} == kept, extra
    # the run's own settings with more steps and another evaluation go on with it
    assert main([*base, "--steps", "256", "--set", "ppo.eval_episodes=2"]) == 0
    assert load_policy(out / "final")[2]["env_steps"] == 256
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["ppo"]["total_steps"], cfg["ppo"]["eval_episodes"], cfg["env"]["terrain"]) == (256, 2, "flat")


def test_evaluation_cells_in_parallel_processes_match_one_by_one_in_order(standing_policy):
    from uni_o4_ros.sim.evaluate import evaluate_go1, evaluate_go1_cells

    cells = [(str(standing_policy), terrain, vx, 2, 7, 60, 0.05)
             for terrain, vx in (("mattress", 0.5), ("flat", 1.0), ("mattress", 1.0))]
    parallel = [ev.to_dict() for ev in evaluate_go1_cells(cells, workers=2)]
    serial = [evaluate_go1(*c).to_dict() for c in cells]
    assert [(r["terrain"], r["command_vx"]) for r in parallel] == [("mattress", 0.5), ("flat", 1.0), ("mattress", 1.0)]
    assert len({r["mean_return"] for r in serial}) == 3  # the cells differ, so an order mix-up would show
    for p, s in zip(parallel, serial):
        np.testing.assert_allclose(p["episode_returns"], s["episode_returns"], rtol=1e-5)


def test_a_killed_evaluation_leaves_no_worker_processes(standing_policy):
    """SIGTERM to a field run during its evaluation (seen: two evaluation workers still alive 49 min
    after their parent was killed): the parent exits with 143 and its workers end with it."""
    import signal
    from pathlib import Path

    code = ("from uni_o4_ros.nodes.processes import stop_signals_raise_exit\n"
            "from uni_o4_ros.sim.evaluate import evaluate_go1_cells\n"
            f"cells = [({str(standing_policy)!r}, 'flat', 0.5, 3, 0, 1000, 0.0)] * 12\n"
            "with stop_signals_raise_exit():\n"
            "    list(evaluate_go1_cells(cells, workers=2))\n")
    child = subprocess.Popen([sys.executable, "-c", code])

    def workers() -> list[int]:  # children of the evaluating process
        return [pid for pid, ppid, cmd in process_table() if ppid == child.pid and b"spawn_main" in cmd]

    try:
        assert poll_process_table(lambda: len(workers()) == 2, 120), "the evaluation workers never started"
        seen = workers()
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=120) == 128 + signal.SIGTERM
        gone = poll_process_table(lambda: not any(Path(f"/proc/{pid}").exists() for pid in seen), 60)
        assert gone, "evaluation workers outlived their parent"
    finally:
        child.kill()

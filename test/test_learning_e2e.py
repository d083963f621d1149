"""End to end through the `uni-o4` command line with real MuJoCo and real HDF5 files (tiny budgets)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import ROOT
from uni_o4_ros.cli import main
from uni_o4_ros.data import OfflineDataset, read_hdf5, write_hdf5
from uni_o4_ros.learning import checkpoint as ckpt
from uni_o4_ros.learning.budgets import budget_overrides
from uni_o4_ros.learning.collect import rollout_dataset
from uni_o4_ros.learning.config import OnlineConfig, load_config
from uni_o4_ros.learning.normalizer import StateNormalizer
from uni_o4_ros.learning.online import OnlineTrainer, make_gym_env, scratch_agent


@pytest.fixture(scope="module")
def hopper_h5(tmp_path_factory) -> Path:
    """8k transitions of an untrained PPO agent's stochastic policy on Hopper-v5, on disk."""
    torch.manual_seed(0)
    actor, _, norm = scratch_agent(11, 3)
    ds = rollout_dataset(actor, norm, "Hopper-v5", 8000, seed=0, progress=False)
    path = tmp_path_factory.mktemp("data") / "hopper-tiny.hdf5"
    write_hdf5(path, ds)
    return path


def test_collected_dataset_is_consistent_with_the_simulator(hopper_h5):
    ds = read_hdf5(hopper_h5)
    assert len(ds) == 8000 and ds.obs_dim == 11 and ds.act_dim == 3
    assert np.abs(ds.actions).max() <= 1.0
    ends = ds.terminals | ds.timeouts
    assert ends[-1]  # the last, unfinished episode is closed with a timeout
    cont = ~ends[:-1]
    np.testing.assert_array_equal(ds.next_observations[:-1][cont], ds.observations[1:][cont])
    assert ds.terminals.sum() > 10  # an untrained hopper falls, and falls are terminals
    assert {"action_log_probs", "qpos", "qvel"} <= set(ds.infos)


def test_offline_then_online_end_to_end(hopper_h5, tmp_path, capsys):
    run = tmp_path / "offline"
    rc = main(["offline", "--dataset", str(hopper_h5), "--env", "Hopper-v5", "--run-dir", str(run),
               "--budget", "tiny", "--no-progress"])
    assert rc == 0
    summary = json.loads((run / "summary.json").read_text())
    assert np.isfinite(summary["am_q"])
    assert ckpt.exists(run / "final", "policy")
    assert (run / "offline.png").stat().st_size > 1000
    sel = json.loads((run / "selection.json").read_text())
    assert len(sel["scores"]) == 12 and sel["selected"] in ("initial", "behavior", "target")
    assert sel["rule"] == "am_q" and sel["index"] == int(np.argmax(sel["scores"]))  # the paper's rule
    log = (run / "scalars.csv").read_text()
    for stage in ("value,", "dynamics,", "bc,", "improve,", "improve_ope,", "select,"):
        assert stage in log
    assert "am_q_target_3" in log  # AM-Q logged per policy

    online = tmp_path / "online"
    # Naming the run folder instead of its policy is a common slip: point at RUN/final, start nothing.
    assert main(["online", "--policy", str(run), "--env", "Hopper-v5", "--run-dir", str(online),
                 "--budget", "tiny", "--no-progress"]) == 2
    assert f"its selected policy is {run / 'final'}" in capsys.readouterr().err
    assert not online.exists()
    rc = main(["online", "--policy", str(run / "final"), "--env", "Hopper-v5", "--run-dir", str(online),
               "--budget", "tiny", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.rfind('{\n  "eval_steps"'):])
    assert result["eval_steps"] == [0, 2048, 4096] and all(np.isfinite(result["eval_returns"]))
    # the score says what it is: D4RL's v2 references, returns measured on the Gymnasium task
    assert "D4RL's v2 reference returns (random -20.2723, expert 3234.3)" in result["score_note"]
    assert "measured on Hopper-v5" in result["score_note"]
    tensors, meta = ckpt.load(online / "stages" / "online", "stage")
    assert meta["env_steps"] == 4096 and meta["done"]
    # the state normalisation stayed fixed to the dataset statistics
    torch.testing.assert_close(tensors["normalizer.mean"], ckpt.load(run / "final", "policy")[0]["normalizer.mean"])
    assert (online / "online.png").exists()
    config = json.loads((online / "config.json").read_text())  # the settings it ran with, as offline's folder
    assert config["online"]["total_steps"] == 4096 and config["policy"] == str(run / "final")


def test_rerun_reuses_cached_stages_and_a_changed_setting_does_not(hopper_h5, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["offline", "--dataset", str(hopper_h5), "--run-dir", str(run), "--budget", "tiny", "--no-progress",
            "--env", "Hopper-v5"]
    assert main(args) == 0
    stages = sorted(p.name for p in (run / "stages").iterdir())
    value_dir = next((run / "stages").glob("value-*"))
    stamp = value_dir.joinpath("stage.safetensors").stat().st_mtime_ns
    first_choice = json.loads((run / "selection.json").read_text())
    assert main(args) == 0
    assert sorted(p.name for p in (run / "stages").iterdir()) == stages
    # the final choice of a run resumed after the loop is the uninterrupted run's, score for score
    assert json.loads((run / "selection.json").read_text()) == first_choice
    assert value_dir.joinpath("stage.safetensors").stat().st_mtime_ns == stamp  # not retrained
    assert main(args + ["--set", "value.expectile=0.5"]) == 0
    values = sorted(p.name for p in (run / "stages").glob("value-*"))
    assert len(values) == 2  # a new value stage, the old one untouched
    assert len(list((run / "stages").glob("dynamics-*"))) == 1  # dynamics does not depend on it
    # another seed is another run: nothing trained under seed 0 is reused for it
    assert main(args + ["--set", "seed=1"]) == 0
    assert len(list((run / "stages").glob("value-*"))) == 3 and len(list((run / "stages").glob("dynamics-*"))) == 2
    # a stage file damaged outside the writer (a half-copied disk): one line saying what to delete,
    # and after deleting it the rerun redoes that stage and chooses exactly as before
    choice = json.loads((run / "selection.json").read_text())
    newest = max((run / "stages").glob("value-*"), key=lambda p: p.stat().st_mtime_ns)
    weights = newest / "stage.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    capsys.readouterr()
    assert main(args + ["--set", "seed=1"]) == 2
    err = capsys.readouterr().err
    assert "is unreadable" in err and f"if {newest} is a stage of a run" in err
    assert "deleting it makes a rerun redo that stage" in err
    shutil.rmtree(newest)
    assert main(args + ["--set", "seed=1"]) == 0
    assert json.loads((run / "selection.json").read_text()) == choice


def test_another_env_of_the_same_dimensions_is_improved_under_its_own_termination_rule(tmp_path):
    """dynamics.termination "auto" follows --env, which no stage's settings named: rerun for HalfCheetah (17/6,
    as Walker2d), the run reused the improvement AM-Q had scored with Walker2d's fall rule. Value and
    dynamics do not depend on it and are reused."""
    rng = np.random.default_rng(0)
    n = 300
    write_hdf5(tmp_path / "d.hdf5", OfflineDataset(
        observations=rng.normal(size=(n, 17)).astype(np.float32), actions=rng.uniform(-1, 1, (n, 6)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32), terminals=np.zeros(n, bool),
        timeouts=np.arange(n) % 100 == 99, next_observations=rng.normal(size=(n, 17)).astype(np.float32)))
    run = tmp_path / "run"
    args = ["offline", "--dataset", str(tmp_path / "d.hdf5"), "--run-dir", str(run), "--budget", "tiny",
            "--no-progress", *[x for ov in ("value.steps=20", "bc.steps=20", "dynamics.max_steps=20",
                                            "improvement.steps=20", "improvement.eval_every=10", "ope.horizon=3",
                                            "ope.n_start_states=8", "selection.start_states=8")
                               for x in ("--set", ov)]]
    for env in ("Walker2d-v5", "HalfCheetah-v5"):
        assert main([*args, "--env", env]) == 0
    stages = [p.name.split("-")[0] for p in (run / "stages").iterdir()]
    assert sorted(stages) == ["bc", "dynamics", "improve", "improve", "value"], stages


def test_ctrl_c_checkpoints_the_step_offline_training_is_at_and_a_rerun_goes_on_from_it(hopper_h5, tmp_path):
    """Before, Ctrl-C raised wherever the trainer was: a rerun went back to the last periodic checkpoint
    (every 2000 steps or 2 minutes), or to step 0, although the message said it resumes."""
    import re
    import signal

    from conftest import poll_process_table
    from uni_o4_ros.learning.scalars import read_log

    run, log = tmp_path / "run", tmp_path / "run" / "scalars.csv"
    argv = [sys.executable, "-m", "uni_o4_ros.cli", "offline", "--dataset", str(hopper_h5), "--run-dir", str(run),
            "--budget", "tiny", "--no-progress", "--env", "Hopper-v5", "--set", "value.steps=1000000"]

    def value_steps() -> list[int]:
        return [step for step, _ in read_log(log).get(("value", "q_loss"), [])] if log.exists() else []

    def interrupted_after(step: int) -> str:
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        try:
            assert poll_process_table(lambda: any(s > step for s in value_steps()), 240), "no value steps logged"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == 130 and "Traceback" not in err, err
        return err

    err = interrupted_after(200)
    stopped = int(re.search(r"interrupted: value stopped at step (\d+) of 1000000; a rerun resumes there", err)[1])
    assert stopped > 200
    err = interrupted_after(stopped)
    # the rerun's first logged step is the one after the stop (none before it was trained again) ...
    second = int(re.search(r"value stopped at step (\d+)", err)[1])
    assert second > stopped
    rows = [int(r.split(",")[1]) for r in log.read_text().splitlines()[1:] if r.startswith("value,") and
            r.split(",")[2] == "q_loss"]
    assert stopped + 1 in rows and rows == sorted(set(rows)), "steps logged twice or out of order"
    # ... and the curve reads as one run
    assert value_steps() == sorted(set(value_steps())) and value_steps()[-1] <= second


def test_online_training_resumes_where_it_stopped(tmp_path):
    torch.manual_seed(0)
    cfg = OnlineConfig(total_steps=2048, rollout_steps=1024, minibatch_size=256, epochs=1, eval_every=1024,
                       eval_episodes=1)
    actor, critic, norm = scratch_agent(4, 1)
    OnlineTrainer(cfg, make_gym_env("InvertedPendulum-v5"), actor, critic, norm, tmp_path, progress=False).run()
    _, meta = ckpt.load(tmp_path / "stages" / "online", "stage")
    assert meta["env_steps"] == 2048
    cfg.total_steps = 3072  # a longer run is the same run: it continues
    torch.manual_seed(0)  # the same command again builds the same start
    actor2, critic2, norm2 = scratch_agent(4, 1)
    trainer = OnlineTrainer(cfg, make_gym_env("InvertedPendulum-v5"), actor2, critic2, norm2, tmp_path,
                            progress=False)
    trainer._resume()
    assert trainer.env_steps == 2048
    torch.testing.assert_close(actor2.state_dict(), actor.state_dict())
    trainer.run()
    assert trainer.env_steps == 3072 and trainer.history.eval_steps[:3] == [0, 1024, 2048]
    # a checkpoint of another policy architecture (here: another mean parameterisation) is refused, not loaded
    other, _, _ = scratch_agent(4, 1, mean_activation="clip")
    with pytest.raises(ValueError, match="another run directory"):
        OnlineTrainer(cfg, make_gym_env("InvertedPendulum-v5"), other, critic2, norm2, tmp_path, progress=False).run()
    # another start, seed or training setting is another experiment: refused, never spliced onto this curve
    torch.manual_seed(1)  # (run() itself reseeds the global generator with the run's seed)
    fresh, fresh_critic, fresh_norm = scratch_agent(4, 1)  # other initial weights
    with pytest.raises(ValueError, match="started from another policy"):
        OnlineTrainer(cfg, make_gym_env("InvertedPendulum-v5"), fresh, fresh_critic, fresh_norm, tmp_path,
                      progress=False).run()
    torch.manual_seed(0)
    same = scratch_agent(4, 1)
    with pytest.raises(ValueError, match="seed 0, not 1"):
        OnlineTrainer(cfg, make_gym_env("InvertedPendulum-v5"), *same, tmp_path, seed=1, progress=False).run()
    with pytest.raises(ValueError, match=r"other settings \(clip 0.1 -> 0.2\)"):
        OnlineTrainer(dataclasses.replace(cfg, clip=0.2), make_gym_env("InvertedPendulum-v5"), *same, tmp_path,
                      progress=False).run()
    _, meta = ckpt.load(tmp_path / "stages" / "online", "stage")
    assert meta["env_steps"] == 3072  # none of the refused runs touched the checkpoint


def test_critic_warmup_keeps_the_actor_fixed_until_its_steps_are_spent(tmp_path):
    torch.manual_seed(0)
    cfg = OnlineConfig(total_steps=3072, rollout_steps=1024, minibatch_size=256, epochs=2, eval_every=10**6,
                       eval_episodes=1, critic_warmup_steps=2048)
    actor, critic, norm = scratch_agent(4, 1)
    actor0 = {k: v.clone() for k, v in actor.state_dict().items()}
    critic0 = {k: v.clone() for k, v in critic.state_dict().items()}
    seen = []  # the actor's and critic's drift from their start after each PPO iteration

    def drift(module, start):
        return max(float((v - start[k]).abs().max()) for k, v in module.state_dict().items())

    OnlineTrainer(cfg, make_gym_env("InvertedPendulum-v5"), actor, critic, norm, tmp_path, progress=False).run(
        on_iteration=lambda rollout, finished: seen.append((drift(actor, actor0), drift(critic, critic0))))
    assert len(seen) == 3
    assert seen[0][0] == 0.0 and seen[1][0] == 0.0, "the actor moved during the critic warmup"
    assert 0.0 < seen[0][1] != seen[1][1], "the critic did not learn during the warmup"
    assert seen[2][0] > 0.0, "the actor never trained after the warmup"


def test_every_evaluation_of_a_run_starts_from_the_same_states_so_an_unchanged_policy_scores_the_same(tmp_path):
    torch.manual_seed(0)
    # The critic warm-up spans the whole run: the actor never changes, only the evaluation could.
    cfg = OnlineConfig(total_steps=3072, rollout_steps=1024, minibatch_size=256, epochs=1, eval_every=1024,
                       eval_episodes=3, critic_warmup_steps=10**6)
    actor, critic, norm = scratch_agent(4, 1)
    hist = OnlineTrainer(cfg, make_gym_env("InvertedPendulum-v5"), actor, critic, norm, tmp_path, seed=3,
                         progress=False).run()
    assert hist.eval_steps == [0, 1024, 2048, 3072]
    assert len(set(hist.eval_returns)) == 1, hist.eval_returns
    # ... and those states are the run's own: another seed's run starts its evaluations elsewhere
    other = OnlineTrainer(cfg, make_gym_env("InvertedPendulum-v5"), actor, critic, norm, tmp_path / "s4", seed=4,
                          progress=False)
    assert other.evaluate() != hist.eval_returns[0]


def test_target_kl_stops_the_actor_when_the_policy_has_moved_that_far_and_lets_the_critic_finish():
    """PPO's KL early stop (online.target_kl): on one real rollout, the update with a target moves the
    policy by about that KL and no further, while the critic trains every epoch as without it."""
    from uni_o4_ros.learning.ppo import PPO

    def one_update(target_kl):
        torch.manual_seed(0)
        actor, critic, norm = scratch_agent(4, 1)
        ppo = PPO(actor, critic, norm, clip=0.2, actor_lr=3e-3, critic_lr=1e-3, epochs=10, minibatch_size=64,
                  gamma=0.99, gae_lambda=0.95, target_kl=target_kl)
        env = make_gym_env("InvertedPendulum-v5")()
        rollout, _, _ = ppo.collect([env], env.reset(seed=0)[0][None], 1024)
        env.close()
        obs = rollout.obs[:, 0]
        with torch.no_grad():
            m0, s0 = actor(obs)
        stats = ppo.update(rollout)
        with torch.no_grad():
            m1, s1 = actor(obs)
        # KL(before || after) of the diagonal Gaussians, averaged over the rollout's states
        kl = (s1 - s0 + (torch.exp(2 * s0) + (m0 - m1) ** 2) / (2 * torch.exp(2 * s1)) - 0.5).sum(-1).mean()
        # the logged exploration std is the policy's own, between its values before and after
        lo, hi = sorted((float(s0.exp().mean()), float(s1.exp().mean())))
        assert 0.95 * lo <= stats["policy_std"] <= 1.05 * hi, (stats["policy_std"], lo, hi)
        return float(kl), stats, critic.state_dict()

    free_kl, free, free_critic = one_update(None)
    kl, limited, critic = one_update(0.01)
    assert free["actor_steps"] == 10 * 1024 // 64
    assert 0 < limited["actor_steps"] < free["actor_steps"] / 4
    assert kl < 2 * 0.01 < free_kl / 2, (kl, free_kl)
    for k, v in critic.items():  # the critic's epochs are not cut short
        torch.testing.assert_close(v, free_critic[k])
    with pytest.raises(ValueError, match="target_kl"):
        PPO(*scratch_agent(4, 1), clip=0.2, actor_lr=3e-4, critic_lr=3e-4, epochs=1, minibatch_size=64,
            gamma=0.99, gae_lambda=0.95, target_kl=0.0)


def test_online_ppo_improves_return_on_a_fast_task(tmp_path):
    torch.manual_seed(0)
    actor, critic, norm = scratch_agent(4, 1)
    cfg = OnlineConfig(total_steps=16384, rollout_steps=2048, minibatch_size=64, epochs=10, clip=0.2,
                       actor_lr=3e-4, critic_lr=1e-3, fixed_state_norm=False, eval_every=8192, eval_episodes=3)
    hist = OnlineTrainer(cfg, make_gym_env("InvertedPendulum-v5", 0), actor, critic, norm, tmp_path,
                         progress=False).run()
    assert hist.eval_returns[0] < 100
    assert hist.eval_returns[-1] > 5 * hist.eval_returns[0] and hist.eval_returns[-1] >= 500


MISTAKES = [
    (["offline", "--dataset", "/nonexistent.hdf5", "--run-dir", "X"], "nonexistent"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--env", "Walker2d-v5"], "dim"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--set", "bc.alpah=1"], "alpah"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--budget", "huge"], "budget"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--seed", "-1"], "--seed: must be at least 0"),
    # the policy node's seed range: `field` took it and was refused only once its node graph had started
    (["field", "--sim", "--seed", "4294967296"], "--seed: must be at most 4294967295, got 4294967296"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--set", "value.q_hidden=256"],
     "value.q_hidden: expected a list such as [256, 256], got 256"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--set", "online=5"], "online: is a section of settings"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--set", "bc.steps=1.5"],
     "bc.steps: expected a whole number, got 1.5"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--set", "device=cuda"], "device: only 'cpu'"),
    # robot data's dimensions are checked as a task's are (Hopper's 11/3 are not the Go1's 290/12)
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--env", "go1"],
     "observation dim mismatch: environment expects 290, dataset has 11"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--env", "go1", "--eval-episodes", "3"],
     "--eval-episodes needs a Gymnasium task"),
    (["demo", "--kind", "expert", "--out", "X"], "--kind: invalid choice"),
    (["online", "--scratch", "--policy", "HOPPER_POLICY", "--env", "Hopper-v5", "--run-dir", "X"],
     "--scratch starts from nothing"),
    (["evaluate", "--policy", "HOPPER_POLICY", "--env", "go1"], "the Go1 is no Gymnasium task"),
    (["collect", "--env", "Pendulum-v1", "--out", "X"], "Pendulum-v1 is not a MuJoCo task"),
    (["estop", "engage", "--timeout", "-1"], "--timeout: must be in (0, 3600) seconds, got -1"),
    (["plot", "DEMO_RUN"], "its subfolder(s) offline/ do: uni-o4 plot"),
    (["offline", "--dataset", "MIXED_REC", "--run-dir", "X", "--env", "go1"],
     "episode_000002.hdf5: observation/action dims 17/6, while episode_000001.hdf5 has 11/3"),
    # an existing --out is refused before the bag (here not even one) is read, not after
    (["bag2h5", "AFILE", "--out", "AFILE"], "afile exists: not replaced"),
    (["bag2h5", "AFILE", "--out", "DANGLING"], "dangling.hdf5 exists: not replaced"),  # a link to nothing, kept
    (["bag2h5", "AFILE", "--out", "AFILE/X"], "afile is a file, not a folder"),  # said before the bag is read
    (["plot", "DAMAGED_RUN"], "scalars.csv: none of its 2 rows could be read (damaged?)"),
    (["collect", "--env", "Hopper-v5", "--out", "X", "--budget", "tiny"], "unrecognized arguments: --budget"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "AFILE/X"], "afile/X: Not a directory"),
    (["evaluate", "--policy", "HOPPER", "--env", "Hopper-v5"], "is a file; a saved policy is a folder"),
    (["evaluate", "--policy", "LISTJSON_POLICY", "--env", "Hopper-v5"],
     "policy.json holds a list, not the mapping of settings"),
    (["evaluate", "--policy", "WRONGSHAPE_POLICY", "--env", "Hopper-v5"],
     "has shape (1, 11, 64), its spec makes (1, 11, 32): weights and spec do not belong together"),
    # a spec too large to build (layers of a million units): checked against the weights before anything is
    # allocated; before, torch's allocation error was a traceback (or, under 24 GB, minutes of swapping)
    (["evaluate", "--policy", "HUGESPEC_POLICY", "--env", "Hopper-v5"],
     "its spec makes (1, 11, 1000000): weights and spec do not belong together"),
    (["evaluate", "--policy", "NONORM_POLICY", "--env", "Hopper-v5"], "has no state normaliser of its 11 inputs"),
    # settings a stage cannot run with, said before the recording (or the simulators) it came after
    (["field", "--sim", "--low-speed", "1.0", "--high-speed", "0.5", "--out", "X"],
     "the low speed (1 m/s) must be below the high one (0.5 m/s)"),
    (["field", "--sim", "--budget", "paper", "--record-steps", "1", "--out", "X"],
     "--record-steps 1: the offline stage's dynamics model needs at least 5 transitions"),
    (["pretrain", "--n-envs", "100000", "--out", "X"], "--n-envs: at most 1024"),
    (["field", "--sim", "--policy", "PT_RUN", "--out", "X"], "a pretraining run's policy is in its final/ folder"),
    (["bringup", "--standin", "--policy", "GO1_POLICY", "--operator-delay", "nan", "--out", "X"],
     "--operator-delay must be a number of seconds >= 0, got nan"),
    # the learner exports its versions into RUN_DIR/policy: over the policy the robot started from
    (["bringup", "--sim", "--policy", "GO1_COPY/policy", "--learn", "GO1_COPY", "--out", "X"],
     "--learn GO1_COPY holds the policy it would start from (--policy GO1_COPY/policy)"),
    # a std of 0 made every state inf or NaN: evaluate reported a NaN return (no valid JSON), exit 0
    (["evaluate", "--policy", "STD0_POLICY", "--env", "Hopper-v5"],
     "has a state normaliser whose std is not positive (column 4)"),
    (["online", "--env", "Hopper-v5", "--run-dir", "X"], "--policy"),
    (["evaluate", "--policy", "/nonexistent", "--env", "Hopper-v5"], "nonexistent"),
    (["online", "--scratch", "--env", "NoSuchTask-v1", "--run-dir", "X"], "unknown environment 'NoSuchTask-v1'"),
    (["collect", "--env", "Hopper-v9", "--out", "X"], "unknown environment 'Hopper-v9'"),
    (["offline", "--dataset", "HOPPER", "--env", "Hopper-v2", "--run-dir", "X"],
     "(D4RL's tasks ran on mujoco-py, which Gymnasium dropped: use Hopper-v5; scores are normalised"),
    (["online", "--scratch", "--env", "CartPole-v1", "--run-dir", "X"],
     "CartPole-v1 has a Discrete() action space; Uni-O4 needs vectors of continuous"),
    (["collect", "--env", "Hopper-v5", "--out", "X", "--train-steps", "0"], "--train-steps: must be at least 1"),
    (["collect", "--env", "Hopper-v5", "--out", "X", "--medium-fraction", "1.5"],
     "argument --medium-fraction: must be in (0, 1], got 1.5"),
    (["field", "--sim", "--out", "X", "--high-speed", "nan"], "--high-speed"),
    (["field", "--sim", "--out", "X", "--record-steps", "-100"], "--record-steps"),
    (["field", "--sim", "--out", "X", "--realtime-factor", "0"], "--realtime-factor"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--config", "BADYAML"], "not valid YAML"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--set", "bc.alpha=[0.1"], "not valid YAML"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--set", "ope.q_head=max"], "ope.q_head"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--set", "value.expectile=1.5"],
     "value.expectile: must be in (0, 1), got 1.5"),
    (["online", "--scratch", "--env", "Hopper-v5", "--run-dir", "X", "--set", "online.clip=-1"],
     "online.clip: must be in (0, 1), got -1"),
    (["evaluate", "--policy", "HOPPER_POLICY", "--env", "HalfCheetah-v5"],
     "policy expects obs/act dims 11/3, HalfCheetah-v5 has 17/6"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--init-policy", "CHEETAH_POLICY"],
     "the initial policy expects obs/act dims 17/6, the dataset has 11/3"),
    (["offline", "--dataset", "UNSCALED", "--run-dir", "X", "--env", "Hopper-v5"],
     "unscaled.hdf5: 'actions' exceed the action bound 1.0 (max |a| = 50.000)"),
    # a misspelt name is refused before any stage trains (selection.rule was refused after all four)
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--set", "selection.rule=bogus"],
     "selection.rule: must be one of am_q, closest_certified, got 'bogus'"),
    # an unset shell variable: Gymnasium's traceback, or the default task taken without a word
    (["evaluate", "--policy", "HOPPER_POLICY", "--env", ""], "--env: is empty (an unset shell variable?)"),
    (["offline", "--dataset", "HOPPER", "--run-dir", "X", "--env", " "], "--env: is empty"),
    # weights another program saved: torch's dtype error at the first forward pass, a traceback
    (["evaluate", "--policy", "F64_POLICY", "--env", "Hopper-v5"], "is float64, this network's is float32"),
    (["online", "--policy", "VHIDDEN_POLICY", "--env", "Hopper-v5", "--run-dir", "X"],
     "v_hidden 5 in policy.json is not a list of layer widths"),
]


def _make_the_mistake(argv: list[str], message: str, hopper_h5: Path, tmp_path: Path) -> tuple[list[str], str]:
    """The files a mistake needs, made in tmp_path; the argv and message with their placeholders filled in."""
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("bc:\n  alpha: [0.1\n")  # unclosed list
    subst = {"HOPPER": str(hopper_h5), "X": str(tmp_path / "X"), "BADYAML": str(bad_yaml),
             "HOPPER_POLICY": str(tmp_path / "hopper_policy"), "CHEETAH_POLICY": str(tmp_path / "cheetah_policy"),
             "UNSCALED": str(tmp_path / "unscaled.hdf5")}
    if "UNSCALED" in argv:  # one action in torque units among Hopper's [-1, 1]
        ds = read_hdf5(hopper_h5)
        ds.actions[7, 1] = 50.0
        write_hdf5(tmp_path / "unscaled.hdf5", ds)
    from uni_o4_ros.learning.offline import save_policy

    (tmp_path / "afile").write_text("a file where a folder is expected\n")
    (tmp_path / "demo_run" / "offline").mkdir(parents=True)  # uni-o4 demo's layout: runs one level down
    (tmp_path / "demo_run" / "offline" / "scalars.csv").write_text("stage,step,name,value\nbc,1,loss,0.5\n")
    (tmp_path / "mixed_rec").mkdir()
    for number, (obs_dim, act_dim) in enumerate(((11, 3), (17, 6)), 1):  # two recordings' episodes in one folder
        rng = np.random.default_rng(number)
        write_hdf5(tmp_path / "mixed_rec" / f"episode_{number:06d}.hdf5", OfflineDataset(
            observations=rng.normal(size=(5, obs_dim)).astype(np.float32),
            actions=rng.uniform(-1, 1, (5, act_dim)).astype(np.float32), rewards=np.ones(5, np.float32),
            terminals=np.zeros(5, bool), timeouts=np.eye(5, dtype=bool)[-1],
            next_observations=rng.normal(size=(5, obs_dim)).astype(np.float32)))
    subst["MIXED_REC"] = str(tmp_path / "mixed_rec")
    (tmp_path / "damaged_run").mkdir()
    (tmp_path / "damaged_run" / "scalars.csv").write_text("stage,step,name,value\n\x00\x00,,\nbc,one,loss,x\n")
    subst.update(DEMO_RUN=str(tmp_path / "demo_run"), DAMAGED_RUN=str(tmp_path / "damaged_run"))
    subst.update({"AFILE/X": str(tmp_path / "afile" / "X"), "AFILE": str(tmp_path / "afile")})
    for name, dims in (("HOPPER_POLICY", (11, 3)), ("CHEETAH_POLICY", (17, 6)), ("LISTJSON_POLICY", (11, 3)),
                       ("WRONGSHAPE_POLICY", (11, 3)), ("HUGESPEC_POLICY", (11, 3)), ("NONORM_POLICY", (11, 3)),
                       ("F64_POLICY", (11, 3)), ("VHIDDEN_POLICY", (11, 3)), ("STD0_POLICY", (11, 3))):
        if name in argv:
            actor, critic, normalizer = scratch_agent(*dims)
            if name == "NONORM_POLICY":
                normalizer.mean = torch.zeros(5)  # saved with a normaliser of another task's states
            if name == "STD0_POLICY":
                normalizer.std[4:] = 0.0
            if name == "F64_POLICY":
                actor.double()
            save_policy(tmp_path / name.lower(), "policy", actor, normalizer,
                        critic=critic if name == "VHIDDEN_POLICY" else None)
            subst[name] = str(tmp_path / name.lower())
            spec_file = tmp_path / name.lower() / "policy.json"
            if name == "LISTJSON_POLICY":  # damage from outside: valid JSON, not a policy's
                spec_file.write_text("[1, 2]\n")
            if name in ("WRONGSHAPE_POLICY", "HUGESPEC_POLICY"):  # a hand edit of the spec beside its weights
                meta = json.loads(spec_file.read_text())
                meta["spec"]["hidden"] = [32 if name == "WRONGSHAPE_POLICY" else 10**6] * len(meta["spec"]["hidden"])
                spec_file.write_text(json.dumps(meta))
            if name == "VHIDDEN_POLICY":
                spec_file.write_text(json.dumps({**json.loads(spec_file.read_text()), "v_hidden": 5}))
    subst["GO1_POLICY"] = str(ROOT / "uni_o4_ros" / "sim" / "checkpoints" / "go1_flat")
    if "DANGLING" in argv:
        (tmp_path / "dangling.hdf5").symlink_to(tmp_path / "nowhere")
        subst["DANGLING"] = str(tmp_path / "dangling.hdf5")
    if "PT_RUN" in argv:  # a pretraining run's folder: its policy is in final/
        shutil.copytree(subst["GO1_POLICY"], tmp_path / "pt_run" / "final")
        subst["PT_RUN"] = str(tmp_path / "pt_run")
    if "GO1_COPY" in argv:
        shutil.copytree(subst["GO1_POLICY"], tmp_path / "go1_copy" / "policy")
        subst.update({"GO1_COPY": str(tmp_path / "go1_copy"), "GO1_COPY/policy": str(tmp_path / "go1_copy" / "policy")})
        message = message.replace("GO1_COPY", str(tmp_path / "go1_copy"))
    return [subst.get(a, a) for a in argv], message


def _said_as_one_error_line(command: str, message: str, returncode: int, stderr: str) -> None:
    assert returncode == 2, stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    # One error line; before it at most argparse's usage synopsis for a malformed option.
    assert lines[-1].startswith(f"uni-o4 {command}: error:") and message in lines[-1], stderr
    assert all(ln.startswith(("usage:", " ")) for ln in lines[:-1]), stderr


@pytest.mark.parametrize("argv, message", MISTAKES)
def test_user_mistakes_end_with_one_line_and_exit_code_2(argv, message, hopper_h5, tmp_path, capfd):
    """In this process, through the main() the `uni-o4` entry point calls (a process each took 2 s of torch's
    import, 2 of the suite's 17 minutes); the test below runs a few through the entry point itself. The error
    stream is captured at its file descriptor, so what C code writes there (MuJoCo, HDF5) counts too. A warning
    is recorded, not printed, here: none may be given, as a user would see it above the error (warnings given
    once, at an import, are the entry-point test's to see)."""
    import warnings

    argv, message = _make_the_mistake(argv, message, hopper_h5, tmp_path)
    with warnings.catch_warnings(record=True) as warned:
        try:
            returncode = main(argv)
        except SystemExit as exc:  # argparse's own errors end the process
            returncode = exc.code
    _said_as_one_error_line(argv[0], message, returncode, capfd.readouterr().err)
    assert not warned, [str(w.message) for w in warned]
    assert not (tmp_path / "X").exists(), "a rejected command must not leave an output folder behind"


def test_user_mistakes_end_with_one_line_through_the_entry_point(hopper_h5, tmp_path):
    """A few of the mistakes above as a user makes them: a process of its own, whose whole stderr is the line."""
    # a missing dataset, a malformed option (argparse's usage first), a bad YAML file, a policy for another task
    chosen = [next(m for m in MISTAKES if pick(m)) for pick in (
        lambda m: "/nonexistent.hdf5" in m[0], lambda m: "4294967296" in m[0], lambda m: "BADYAML" in m[0],
        lambda m: "CHEETAH_POLICY" in m[0])]
    for number, (argv, message) in enumerate(chosen):
        (tmp_path / str(number)).mkdir()
        argv, message = _make_the_mistake(argv, message, hopper_h5, tmp_path / str(number))
        proc = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", *argv], capture_output=True, text=True,
                              timeout=300)
        _said_as_one_error_line(argv[0], message, proc.returncode, proc.stderr)
        assert not (tmp_path / str(number) / "X").exists(), "a rejected command must not leave an output folder"


def test_online_refuses_a_run_dir_that_holds_the_policy_it_starts_from(tmp_path, capsys):
    """`online --policy runs/x/final --run-dir runs/x` wrote its own final over the offline pick it started
    from (and over the V that fine-tuning needs), exit 0."""
    from uni_o4_ros.learning.offline import save_policy

    actor, critic, normalizer = scratch_agent(11, 3)
    save_policy(tmp_path / "run" / "final", "policy", actor, normalizer, critic=critic, extra={"am_q": 1.0})
    before = {f.name: f.read_bytes() for f in (tmp_path / "run" / "final").iterdir()}
    assert main(["online", "--policy", str(tmp_path / "run" / "final"), "--env", "Hopper-v5", "--run-dir",
                 str(tmp_path / "run"), "--budget", "tiny", "--no-progress"]) == 2
    assert f"would overwrite it: give the online run its own folder, e.g. --run-dir {tmp_path / 'run'}-online" \
        in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in (tmp_path / "run" / "final").iterdir()} == before
    assert sorted(f.name for f in (tmp_path / "run").iterdir()) == ["final"]


def test_no_command_writes_into_another_commands_run_folder_or_the_policy_it_starts_from(tmp_path, capsys):
    """`offline --init-policy runs/x/final --run-dir runs/x` overwrote the online policy it started from; `online
    --run-dir` of an offline run's folder replaced its AM-Q pick and config.json; `collect --out` of a run folder
    appended behaviour PPO's rows to its scalars.csv; `online --run-dir` of the very policy folder wrote into it.
    All exit 0, nothing said. Each is refused before anything is written, and the folders are left as they were."""
    from uni_o4_ros.learning.offline import save_policy

    def snapshot() -> dict:
        return {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}

    actor, critic, normalizer = scratch_agent(11, 3)
    save_policy(tmp_path / "online_run" / "final", "policy", actor, normalizer, critic=critic)
    (tmp_path / "online_run" / "config.json").write_text(json.dumps({"seed": 0, "policy": None, "scratch": True}))
    save_policy(tmp_path / "offline_run" / "final", "policy", actor, normalizer, critic=critic, extra={"am_q": 1.0})
    (tmp_path / "offline_run" / "selection.json").write_text("{}\n")
    (tmp_path / "offline_run" / "scalars.csv").write_text("stage,step,name,value\nbc,1,loss,0.5\n")
    for folder, marker in (("pretrained", "stages/pretrain/stage.json"), ("field_run", "stages/record.json")):
        (tmp_path / folder / marker).parent.mkdir(parents=True)  # what `uni-o4 pretrain` and `field` leave
        (tmp_path / folder / marker).write_text("{}\n")
        (tmp_path / folder / "config.json").write_text("{}\n")
    (tmp_path / "half_demo" / "offline").mkdir(parents=True)  # a demo folder whose offline/ holds an online run
    (tmp_path / "half_demo" / "offline" / "config.json").write_text(json.dumps({"seed": 0, "scratch": True}))
    (tmp_path / "field_started").mkdir()  # a field run stopped in its first stage: its settings only
    (tmp_path / "field_started" / "config.json").write_text(json.dumps({"record_steps": 1, "offline_budget": "x"}))
    ds = tmp_path / "d.hdf5"
    rng = np.random.default_rng(0)
    write_hdf5(ds, OfflineDataset(observations=rng.normal(size=(50, 11)).astype(np.float32),
                                  actions=rng.uniform(-1, 1, (50, 3)).astype(np.float32),
                                  rewards=np.ones(50, np.float32),
                                  terminals=np.zeros(50, bool), timeouts=np.eye(50, dtype=bool)[-1],
                                  next_observations=rng.normal(size=(50, 11)).astype(np.float32)))
    before = snapshot()
    tiny = ["--budget", "tiny", "--no-progress"]
    for argv, said in (
            (["offline", "--dataset", str(ds), "--init-policy", str(tmp_path / "online_run" / "final"), "--run-dir",
              str(tmp_path / "online_run"), *tiny], "give the offline run its own folder"),
            (["offline", "--dataset", str(ds), "--run-dir", str(tmp_path / "online_run"), *tiny],
             "holds an online run: this offline run would write its own files into it"),
            (["online", "--policy", str(tmp_path / "online_run" / "final"), "--env", "Hopper-v5", "--run-dir",
              str(tmp_path / "offline_run"), *tiny], "holds an offline Uni-O4 run: this online run would write"),
            (["online", "--policy", str(tmp_path / "offline_run" / "final"), "--env", "Hopper-v5", "--run-dir",
              str(tmp_path / "offline_run" / "final"), *tiny], "holds the policy it would start from"),
            (["collect", "--env", "Hopper-v5", "--out", str(tmp_path / "offline_run"), "--no-progress"],
             "holds an offline Uni-O4 run: this collect run would write"),
            (["offline", "--dataset", str(ds), "--run-dir", str(tmp_path / "pretrained"), *tiny],
             "holds a Go1 pretraining run (uni-o4 pretrain)"),
            (["online", "--policy", str(tmp_path / "offline_run" / "final"), "--env", "Hopper-v5", "--run-dir",
              str(tmp_path / "field_run"), *tiny], "holds a field pipeline run (uni-o4 field)"),
            (["offline", "--dataset", str(ds), "--run-dir", str(tmp_path / "field_started"), *tiny],
             "holds a field pipeline run (uni-o4 field)"),
            # field, pretrain and demo checked no folder: they rewrote config.json (and scalars.csv) and set to work
            (["field", "--sim", "--out", str(tmp_path / "offline_run"), *tiny],
             "holds an offline Uni-O4 run: this field run would write"),
            (["pretrain", "--out", str(tmp_path / "offline_run"), "--no-progress"],
             "holds an offline Uni-O4 run: this pretrain run would write"),
            (["demo", "--out", str(tmp_path / "offline_run"), *tiny], "holds an offline Uni-O4 run: this demo run"),
            (["demo", "--out", str(tmp_path / "half_demo"), *tiny],
             f"its offline/ folder {tmp_path / 'half_demo' / 'offline'} holds an online run"),
    ):
        assert main(argv) == 2, argv
        assert said in capsys.readouterr().err, argv
        assert snapshot() == before, argv  # nothing written, nothing replaced
    # an offline run beside its collect output (data/) is the offline run it is, not a demo: its rerun resumes
    from uni_o4_ros.learning.run_folder import held_run

    (tmp_path / "offline_run" / "data" / "collect.json").parent.mkdir()
    (tmp_path / "offline_run" / "data" / "collect.json").write_text("{}\n")
    assert held_run(tmp_path / "offline_run") == "offline" and held_run(tmp_path / "half_demo") is None
    (tmp_path / "half_demo" / "data").mkdir()
    (tmp_path / "half_demo" / "data" / "collect.json").write_text("{}\n")
    assert held_run(tmp_path / "half_demo") == "demo"
    # an empty folder (`--out "$OUT"`, OUT unset) was the current one
    for argv in (["pretrain", "--out", ""], ["field", "--sim", "--out", ""], ["offline", "--dataset", str(ds),
                                                                            "--run-dir", " "]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2 and "is empty (an unset shell variable?)" in capsys.readouterr().err, argv


def test_a_config_file_refines_the_budget_and_set_and_seed_refine_the_file(tmp_path):
    """--budget is the starting point: before, it was applied after --config and undid the file's values."""
    from uni_o4_ros.cli import _config, build_parser

    (tmp_path / "c.yaml").write_text("seed: 4\nbc:\n  steps: 7\nvalue:\n  steps: 11\n")

    def config(*extra: str):
        args = build_parser().parse_args(["offline", "--dataset", "D", "--run-dir", "R", "--budget", "tiny",
                                          "--config", str(tmp_path / "c.yaml"), *extra])
        return _config(args, args.env)

    cfg = config()
    assert (cfg.bc.steps, cfg.value.steps, cfg.seed) == (7, 11, 4)
    assert cfg.dynamics.max_steps == 300 == load_config(None, base=budget_overrides("tiny")).dynamics.max_steps
    cfg = config("--set", "bc.steps=9", "--seed", "2")
    assert (cfg.bc.steps, cfg.value.steps, cfg.seed) == (9, 11, 2)
    assert config("--seed", "2", "--set", "seed=3").seed == 3


def test_help_explains_every_command():
    for cmd in ("collect", "offline", "online", "evaluate", "demo", "plot", "pretrain", "field", "bringup", "bag2h5",
                "estop"):
        proc = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", cmd, "--help"], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0 and "usage: uni-o4 " + cmd in proc.stdout
        # a description under the usage line, and no option advertised that the command does not take
        assert proc.stdout.split("\n\n")[1].strip() and not proc.stdout.split("\n\n")[1].startswith("options")
        assert cmd != "collect" or "--budget" not in proc.stdout
    top = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "--help"], capture_output=True, text=True,
                         timeout=120).stdout
    assert "uni-o4 estop" in top and "(no ROS needed)" not in top
    from uni_o4_ros.cli import build_parser

    collect_help = next(a for a in build_parser()._actions if a.dest == "command").choices["collect"].format_help()
    assert "seed of the PPO agent and the environments (default: 0)" in " ".join(collect_help.split())
    # and every option and argument says what it does: a bare `--seed SEED` leaves the user guessing
    import argparse

    from uni_o4_ros.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    unexplained = [f"{name} {act.option_strings or act.dest}" for name, sub in subparsers.choices.items()
                   for act in sub._actions if not (act.help or "").strip()]
    assert not unexplained, unexplained


def test_dataset_round_trip_of_concatenated_kinds(tmp_path, hopper_h5):
    ds = read_hdf5(hopper_h5)
    both = OfflineDataset.concatenate([ds, ds])
    write_hdf5(tmp_path / "x.hdf5", both)
    back = read_hdf5(tmp_path / "x.hdf5")
    assert len(back) == 2 * len(ds)
    np.testing.assert_array_equal(back.observations[len(ds):], ds.observations)


def test_online_to_offline_starts_every_member_from_the_online_policy_and_diversifies(hopper_h5, tmp_path):
    """Appendix A.4.4: no BC; the ensemble starts as n copies of the online policy, and the Eq. 25
    KL term and each member's own sampled actions make the members differ."""
    from uni_o4_ros.learning.offline import load_policy, save_policy

    torch.manual_seed(0)
    actor, _, norm = scratch_agent(11, 3)
    save_policy(tmp_path / "online_policy", "policy", actor, norm)
    run = tmp_path / "o2o"
    assert main(["offline", "--dataset", str(hopper_h5), "--env", "Hopper-v5", "--run-dir", str(run),
                 "--budget", "tiny", "--no-progress", "--init-policy", str(tmp_path / "online_policy")]) == 0
    assert not list((run / "stages").glob("bc-*"))  # no behaviour cloning stage ran
    improve = next((run / "stages").glob("improve-*"))
    tensors, _ = ckpt.load(improve, "stage")
    first = tensors["target.body.net.0.weight"]
    assert first.shape[0] == 4
    assert not torch.allclose(first[0], first[1])  # members moved apart
    chosen, chosen_norm, meta, _ = load_policy(run / "final")
    assert chosen.spec.hidden == actor.spec.hidden  # the online architecture is kept
    torch.testing.assert_close(chosen_norm.mean, norm.mean)  # and its input statistics


def test_clipped_linear_mean_executes_clipped_actions_and_learns_from_what_it_sampled():
    """A clipped linear mean (CleanRL's parameterisation, an option beside our tanh mean): the task only
    ever receives actions within [-1, 1], while PPO keeps the raw sample its log-prob belongs to."""
    from uni_o4_ros.learning.ppo import PPO

    torch.manual_seed(0)
    actor, critic, norm = scratch_agent(11, 3, mean_activation="clip")
    assert actor.bounded
    with torch.no_grad():
        actor.body.net[-1].bias[:3] = 3.0  # mean far outside the action bounds
    ppo = PPO(actor, critic, norm, clip=0.2, actor_lr=3e-4, critic_lr=3e-4, epochs=1, minibatch_size=64,
              gamma=0.99, gae_lambda=0.95)
    env = make_gym_env("Hopper-v5")()
    rollout, _, _ = ppo.collect([env], env.reset(seed=0)[0][None], 20)
    assert rollout.actions.mean() > 2.0  # the samples around the mean of 3, as drawn
    last = rollout.actions[-1, 0].numpy()
    assert last.max() > 1.0  # so the check below means something
    np.testing.assert_allclose(env.unwrapped.data.ctrl, np.clip(last, -1, 1))  # what MuJoCo was given
    mean, log_std = actor(rollout.obs[:, 0])
    stored = actor.gaussian_log_prob(mean, log_std, rollout.actions[:, 0])[0]
    torch.testing.assert_close(rollout.log_probs[:, 0], stored)
    ds = rollout_dataset(actor, norm, "Hopper-v5", 20, seed=0, progress=False)
    assert np.abs(ds.actions).max() <= 1.0 and (ds.actions == 1.0).mean() > 0.9  # the executed actions


def test_collect_writes_three_datasets_from_its_own_ppo_snapshots(tmp_path, capsys):
    """`uni-o4 collect` end to end on a fast task: PPO from scratch with snapshots, then the medium,
    medium-replay and medium-expert datasets in D4RL layout, every action one the task executed."""
    out = tmp_path / "pendulum"
    assert main(["collect", "--env", "InvertedPendulum-v5", "--out", str(out), "--train-steps", "6144",
                 "--dataset-steps", "300", "--eval-every", "2048", "--no-progress"]) == 0
    meta = json.loads((out / "collect.json").read_text())
    assert meta["expert_step"] in (2048, 4096, 6144) and meta["medium_step"] <= meta["expert_step"]
    for kind, n in (("medium", 300), ("medium-replay", meta["medium_step"]), ("medium-expert", 600)):
        ds = read_hdf5(out / f"invertedpendulum-{kind}.hdf5")
        assert len(ds) == n and ds.act_dim == 1 and np.abs(ds.actions).max() <= 1.0
        assert ds.metadata["kind"] == kind
        # collect.json summarises each dataset as written (what BENCHMARKS' dataset table quotes)
        rets = ds.episode_returns()
        s = meta["summary"][kind]
        assert (s["transitions"], s["episodes"]) == (n, len(rets)) and s["mean_return"] == pytest.approx(rets.mean())
    # a rerun resumes the finished training instead of training again
    logged = (out / "scalars.csv").read_text()
    assert main(["collect", "--env", "InvertedPendulum-v5", "--out", str(out), "--train-steps", "6144",
                 "--dataset-steps", "300", "--eval-every", "2048", "--no-progress"]) == 0
    assert json.loads((out / "collect.json").read_text())["expert_step"] == meta["expert_step"]
    assert (out / "scalars.csv").read_text() == logged
    # A replay chunk damaged (written atomically now, so not by a crash; by a disk or a copy): a rerun that needs
    # the whole history says which, instead of zipfile's traceback, and writes nothing.
    (out / "invertedpendulum-medium.hdf5").unlink()
    chunk = sorted((out / "replay").glob("chunk_*.npz"))[0]
    chunk.write_bytes(chunk.read_bytes()[:100])
    before = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    assert main(["collect", "--env", "InvertedPendulum-v5", "--out", str(out), "--train-steps", "6144",
                 "--dataset-steps", "300", "--eval-every", "2048", "--no-progress"]) == 2
    assert f"{chunk.name} is damaged" in capsys.readouterr().err
    assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file()} == before


def test_collect_stopped_between_a_replay_chunk_and_its_checkpoint_resumes_into_a_replay_without_copies(
        tmp_path, monkeypatch):
    """The replay chunk of a rollout is written before the trainer's checkpoint. Stopped in between, the rerun
    trained that rollout's steps again and kept both in medium-replay (a rollout the agent never trained on,
    and medium_step no longer its size); and the episode its restart cut was left unflagged."""
    from uni_o4_ros.learning.online import OnlineTrainer

    save = OnlineTrainer._save

    def stopped_before_the_checkpoint_of_6144(trainer: OnlineTrainer) -> None:
        if trainer.env_steps == 6144:
            raise KeyboardInterrupt
        save(trainer)

    out = tmp_path / "pendulum"
    args = ["collect", "--env", "InvertedPendulum-v5", "--out", str(out), "--train-steps", "8192",
            "--dataset-steps", "300", "--eval-every", "2048", "--medium-fraction", "1.0", "--no-progress"]
    monkeypatch.setattr(OnlineTrainer, "_save", stopped_before_the_checkpoint_of_6144)
    assert main(args) == 130 and (out / "replay" / "chunk_00006144.npz").exists()
    monkeypatch.setattr(OnlineTrainer, "_save", save)
    assert main(args) == 0
    medium_step = json.loads((out / "collect.json").read_text())["medium_step"]
    assert medium_step >= 6144  # the premise (seeded): medium-replay reaches past the stop
    replay = read_hdf5(out / "invertedpendulum-medium-replay.hdf5")
    assert len(replay) == medium_step
    # every episode boundary is flagged in the file, the restart's cut at 4096 too: no other D4RL reader runs a
    # return across that reset (this project's reader would find it, and says so: episode_ends_found)
    ends = np.flatnonzero(np.any(replay.next_observations[:-1] != replay.observations[1:], axis=1))
    assert 4095 in ends and not replay.metadata.get("episode_ends_found")
    with h5py.File(out / "invertedpendulum-medium-replay.hdf5", "r") as f:
        assert (f["terminals"][()][ends] | f["timeouts"][()][ends]).all()


def test_collect_into_a_folder_of_datasets_made_otherwise_is_refused_and_keeps_them(tmp_path, capsys):
    """Seen: --dataset-steps 600 into a folder collected with 500 replaced its datasets without a word.
    Other settings now stop with one line naming them; the same settings reuse the finished datasets
    without writing anything."""
    out = tmp_path / "pendulum"
    args = ["collect", "--env", "InvertedPendulum-v5", "--out", str(out), "--train-steps", "2048",
            "--eval-every", "2048", "--dataset-steps", "300", "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()

    def files() -> dict[Path, bytes]:
        return {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}

    kept = files()
    for extra, named in ((["--dataset-steps", "400"], "(dataset_steps: 300 -> 400)"),
                         (["--seed", "1"], "(seed: 0 -> 1)"),
                         (["--medium-fraction", "0.3"], "(medium_fraction: 0.45 -> 0.3)"),
                         (["--train-steps", "4096"], "(train_steps: 2048 -> 4096)")):
        code = main([*args, *extra])
        err = capsys.readouterr().err
        assert code == 2 and named in err and "another --out" in err and len(err.strip().splitlines()) == 1, err
        assert files() == kept, extra
    assert main(args) == 0 and files() == kept
    assert "medium: " in capsys.readouterr().out  # the finished datasets are still reported
    # a collect.json from before it kept the settings: judged by what it recorded (steps per dataset)
    meta = json.loads((out / "collect.json").read_text())
    del meta["settings"]
    (out / "collect.json").write_text(json.dumps(meta))
    kept = files()
    assert main([*args, "--dataset-steps", "400"]) == 2 and "(dataset_steps: 300 -> 400)" in capsys.readouterr().err
    assert files() == kept


def test_collect_reproduces_a_dataset_from_its_seed_and_thread_count(tmp_path):
    """A shipped dataset is only as good as its recipe: the same command (seed and --threads)
    must write the same transitions, and collect.json must say which thread count made them."""
    threads = torch.get_num_threads()
    args = ["collect", "--env", "InvertedPendulum-v5", "--train-steps", "4096", "--dataset-steps", "300",
            "--eval-every", "2048", "--seed", "3", "--threads", "1", "--no-progress"]
    try:
        for run in ("a", "b"):
            assert main([*args, "--out", str(tmp_path / run)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "a" / "collect.json").read_text())["torch_threads"] == 1
    for kind in ("medium", "medium-replay", "medium-expert"):
        a, b = (read_hdf5(tmp_path / run / f"invertedpendulum-{kind}.hdf5") for run in ("a", "b"))
        assert np.array_equal(a.observations, b.observations) and np.array_equal(a.actions, b.actions)


def test_online_scratch_from_the_command_line_uses_the_from_scratch_settings(tmp_path):
    """... and the user's --set refines them: before, the from-scratch settings came last and undid it."""
    run = tmp_path / "scratch"
    assert main(["online", "--scratch", "--env", "InvertedPendulum-v5", "--run-dir", str(run), "--steps", "2048",
                 "--no-progress", "--set", "online.epochs=3"]) == 0
    _, meta = ckpt.load(run / "stages" / "online", "stage")
    assert meta["env_steps"] == 2048 and meta["spec"]["mean_activation"] == "tanh"
    cfg = meta["config"]  # CleanRL's from-scratch PPO, not Table 5's fine-tuning clip 0.1 / lr 3e-5
    assert (cfg["clip"], cfg["actor_lr"], cfg["normalize_reward"], cfg["fixed_state_norm"]) == (0.2, 3e-4, True, False)
    assert cfg["epochs"] == 3 and json.loads((run / "config.json").read_text())["online"]["epochs"] == 3


def test_fine_tuning_with_running_state_statistics_saves_the_statistics_the_policy_learned_with(tmp_path):
    """online.fixed_state_norm false: PPO trains on statistics that follow the states it meets. final/ held
    the ones it started with, so the saved policy was evaluated (and deployed) on inputs it never learned."""
    from uni_o4_ros.learning.offline import load_policy, save_policy

    actor, critic, _ = scratch_agent(4, 1)
    offline_stats = StateNormalizer(np.zeros(4), np.full(4, 5.0))
    save_policy(tmp_path / "offline", "policy", actor, offline_stats, critic=critic)
    run = tmp_path / "online"
    assert main(["online", "--policy", str(tmp_path / "offline"), "--env", "InvertedPendulum-v5", "--run-dir",
                 str(run), "--steps", "1024", "--no-progress", "--set", "online.fixed_state_norm=false",
                 "--set", "online.rollout_steps=512", "--set", "online.eval_every=1024",
                 "--set", "online.eval_episodes=1"]) == 0
    _, saved, _, _ = load_policy(run / "final")
    # the pendulum's states spread far less than 5: the running statistics (which weigh the starting ones as
    # 10k states) moved from those towards them
    assert float(saved.std.max()) < 4.99 and not torch.equal(saved.mean, offline_stats.mean)


def test_a_refused_online_rerun_leaves_the_run_folder_as_it_was(tmp_path, capsys):
    """Seen: a rerun refused for another seed first rewrote config.json (which then said seed 1), and one
    with fewer --steps than trained stopped at once, exported, and config.json said the fewer steps."""
    run = tmp_path / "scratch"
    base = ["online", "--scratch", "--env", "InvertedPendulum-v5", "--run-dir", str(run), "--no-progress"]
    assert main([*base, "--steps", "2048"]) == 0
    capsys.readouterr()
    kept = {f: f.read_bytes() for f in run.rglob("*") if f.is_file()}
    for extra, named in ((["--steps", "2048", "--seed", "1"], "holds another run: seed 0, not 1"),
                         (["--steps", "1024"], "has trained 2048 environment steps already, more than the 1024 "
                                               "asked: it is kept as it is; ask for 2048 or more steps")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert named in err and len(err.strip().splitlines()) == 1, err
        assert {f: f.read_bytes() for f in run.rglob("*") if f.is_file()} == kept, extra


class _NanRewardAt:
    """The real task, with one NaN reward at a given step (a simulator or sensor glitch)."""

    def __init__(self, env, step: int) -> None:
        self.env, self.step_at, self.steps = env, step, 0
        self.observation_space, self.action_space = env.observation_space, env.action_space

    def reset(self, **kw):
        return self.env.reset(**kw)

    def step(self, a):
        o, r, te, tr, info = self.env.step(a)
        self.steps += 1
        return o, (float("nan") if self.steps == self.step_at else r), te, tr, info

    def close(self) -> None:
        self.env.close()


def test_a_nan_from_the_environment_stops_the_run_naming_it_and_keeps_the_last_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = OnlineConfig(total_steps=1024, rollout_steps=256, minibatch_size=64, epochs=1, eval_every=10**6,
                       eval_episodes=1)

    def make():
        return _NanRewardAt(make_gym_env("InvertedPendulum-v5")(), 300)

    trainer = OnlineTrainer(cfg, make, *scratch_agent(4, 1), tmp_path, progress=False)
    with pytest.raises(ValueError, match="the environment returned a non-finite reward"):
        trainer.run()
    tensors, meta = ckpt.load(tmp_path / "stages" / "online", "stage")
    assert meta["env_steps"] == 256 and ckpt.first_non_finite(tensors) is None


def test_a_diverged_online_run_advises_a_new_run_directory_because_a_lower_rate_is_another_run(tmp_path):
    """Offline stages are cached by their settings, so 'try a lower learning rate' works there; an
    online run resumes only with its own settings, so the same advice would be refused."""
    from uni_o4_ros.learning.normalizer import StateNormalizer
    from uni_o4_ros.learning.policy import make_policy
    from uni_o4_ros.learning.value import ValueNet

    def start():
        torch.manual_seed(0)
        return make_policy(4, 1), ValueNet(4, (64, 64)), StateNormalizer(torch.zeros(4), torch.ones(4))

    # the critic warms up for one iteration (saved), then an absurd actor rate overflows the weights
    cfg = OnlineConfig(total_steps=1024, rollout_steps=256, minibatch_size=64, epochs=1, eval_every=10**6,
                       eval_episodes=1, critic_warmup_steps=256, actor_lr=1e30)
    with pytest.raises(ckpt.CheckpointError, match="for a lower learning rate use a new run directory"):
        OnlineTrainer(cfg, make_gym_env("InvertedPendulum-v5"), *start(), tmp_path / "run", progress=False).run()
    _, meta = ckpt.load(tmp_path / "run" / "stages" / "online", "stage")
    assert meta["env_steps"] == 256  # the good checkpoint stands
    lower = dataclasses.replace(cfg, actor_lr=3e-5)
    with pytest.raises(ValueError, match="actor_lr 1e\\+30 -> 3e-05"):  # the old advice, followed, is refused
        OnlineTrainer(lower, make_gym_env("InvertedPendulum-v5"), *start(), tmp_path / "run", progress=False).run()
    hist = OnlineTrainer(lower, make_gym_env("InvertedPendulum-v5"), *start(), tmp_path / "new", progress=False).run()
    assert hist.eval_steps[-1] == 1024  # the new advice, followed, trains


def test_non_finite_weights_are_never_saved_nor_deployed(tmp_path):
    """A diverged step must not replace a good checkpoint, and a NaN policy file (corrupted, or
    written by another tool) must end with one line instead of NaN returns and exit code 0."""
    from safetensors.torch import save_file

    from uni_o4_ros.learning.normalizer import StateNormalizer
    from uni_o4_ros.learning.offline import save_policy

    actor, _, _ = scratch_agent(11, 3)
    good = tmp_path / "policy"
    save_policy(good, "policy", actor, StateNormalizer(torch.zeros(11), torch.ones(11)))
    before = (good / "policy.safetensors").read_bytes()
    with torch.no_grad():
        actor.body.net[0].weight[0, 0, 0] = float("nan")
    with pytest.raises(ckpt.CheckpointError, match="NaN/inf"):
        save_policy(good, "policy", actor, StateNormalizer(torch.zeros(11), torch.ones(11)))
    assert (good / "policy.safetensors").read_bytes() == before  # the good one is untouched
    assert not list(good.glob(".*.tmp"))

    tensors, _ = ckpt.load(good, "policy")
    key = next(k for k in tensors if k.endswith("weight"))
    tensors[key] = torch.full_like(tensors[key], float("inf"))
    save_file(tensors, str(good / "policy.safetensors"))  # bypasses our writer, like a corrupted copy
    proc = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "evaluate", "--policy", str(good),
                           "--env", "Hopper-v5", "--episodes", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"tensor {key!r} has NaN/inf values" in proc.stderr.strip().splitlines()[-1]


def test_offline_says_when_it_found_episode_ends_the_file_does_not_mark(hopper_h5, tmp_path, capsys):
    """A D4RL file without `timeouts` merged truncated episodes into the next, silently (see test_data)."""
    import h5py

    from uni_o4_ros.cli import _load_dataset

    ref = read_hdf5(hopper_h5)
    cut = int(np.flatnonzero(~(ref.terminals | ref.timeouts))[999])  # mid-episode: two pieces joined there
    rows = np.r_[0:cut + 1, 4000:8000]
    path = tmp_path / "joined-no-timeouts.hdf5"
    with h5py.File(path, "w") as dst:
        for key in ("observations", "actions", "rewards", "terminals", "next_observations"):
            dst[key] = getattr(ref, key)[rows]
    ds = _load_dataset(str(path), "Hopper-v5")
    assert ds.timeouts[cut] and ds.timeouts.sum() == 1 + int(ref.timeouts[rows][:-1].sum())
    assert (f"note: {path}: {1 + int(ref.timeouts[rows][:-1].sum())} episode end(s) the file does not mark were "
            "found, where next_observations is not the next row's state; each is read as a timeout") \
        in capsys.readouterr().err
    # the episode before the join no longer runs into the one after it
    joined = next(sl for sl in ds.episode_slices() if sl.start <= cut < sl.stop)
    assert joined.stop == cut + 1

"""Online learning through the node graph: the learner's updates reach the running policy as
verified hot-swaps; killing the learner leaves the controller and logger running; a restarted
learner resumes from its checkpoint. Plus the on-policy rule of the learner core."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import signal
import time

import numpy as np
import pytest
import torch

from conftest import start_node as start
from conftest import stop_nodes as stop
from conftest import wait_until
from uni_o4_ros.data import read_hdf5
from uni_o4_ros.learning import checkpoint as ckpt
from uni_o4_ros.learning.config import OnlineConfig
from uni_o4_ros.learning.normalizer import StateNormalizer
from uni_o4_ros.learning.online_learner import OnlineLearnerCore
from uni_o4_ros.learning.policy import make_policy
from uni_o4_ros.learning.value import ValueNet


def _t(version: int, step: int, episode: int = 1) -> dict:
    rng = np.random.default_rng(step)
    return {"observation": rng.normal(size=6), "next_observation": rng.normal(size=6), "action": rng.normal(size=2),
            "log_prob": -1.0, "reward": 1.0, "terminal": False, "timeout": False, "policy_version": version,
            "step": step, "episode_id": episode}


def _small_core(run_dir, start_seed: int = 0, cfg: OnlineConfig | None = None) -> OnlineLearnerCore:
    """A small learner core in run_dir (a new one resumes what is there); the seed stands for the initial
    policy's weights."""
    torch.manual_seed(start_seed)
    return OnlineLearnerCore(make_policy(6, 2, hidden=(8,), mean_activation="none"), ValueNet(6, (8,)),
                             StateNormalizer.identity(6),
                             cfg or OnlineConfig(rollout_steps=16, minibatch_size=8, epochs=2), run_dir)


def test_learner_core_uses_only_transitions_of_the_deployed_version_and_resumes(tmp_path):
    torch.manual_seed(0)
    cfg = OnlineConfig(rollout_steps=16, minibatch_size=8, epochs=2)

    def make(start_seed: int = 0, cfg: OnlineConfig = cfg):
        return _small_core(tmp_path, start_seed, cfg)

    core = make()
    before = [p.clone() for p in core.ppo.actor.parameters()]
    results = [core.add(_t(0, i)) for i in range(15)]
    assert all(r is None for r in results)
    assert core.add(_t(5, 99)) is None and core.dropped_stale == 1  # not the deployed version
    res = core.add(_t(0, 15))
    assert res is not None and res.version == 1 and core.buffer == []
    assert any(not torch.equal(a, b) for a, b in zip(before, core.ppo.actor.parameters()))
    assert core.add(_t(0, 16)) is None and core.dropped_stale == 2  # version 0 is stale now
    resumed = make()
    assert resumed.version == 1 and resumed.dropped_stale == 1  # the count saved with version 1, not back to 0
    for a, b in zip(resumed.ppo.actor.parameters(), core.ppo.actor.parameters()):
        torch.testing.assert_close(a, b)
    # restarted with another initial policy or other PPO settings into the same run_dir: refused, so
    # the node never resumes and publishes weights of a run the operator did not ask for
    with pytest.raises(ValueError, match="started from another policy"):
        make(start_seed=1)
    with pytest.raises(ValueError, match=r"other settings \(clip 0.1 -> 0.2\)"):
        make(cfg=dataclasses.replace(cfg, clip=0.2))
    assert make().version == 1  # and the checkpoint is intact
    # a learner.json edited by hand (or another program's): one line naming what it lacks, not a KeyError
    saved = (tmp_path / "learner.json").read_text()
    (tmp_path / "learner.json").write_text(json.dumps({k: v for k, v in json.loads(saved).items()
                                                       if k not in ("spec", "updates")}))
    with pytest.raises(ckpt.CheckpointError, match=r"learner.json lacks spec, updates \(edited, or not written"):
        make()
    (tmp_path / "learner.json").write_text(json.dumps({**json.loads(saved), "actor_opt": {}}))  # a group lost
    with pytest.raises(ckpt.CheckpointError, match=r"learner is damaged \(KeyError: 'param_groups'\)"):
        make()
    (tmp_path / "learner.json").write_text(saved)
    assert make().version == 1


def test_a_learner_checkpoint_written_before_it_kept_several_parents_is_resumed(tmp_path):
    """Checkpoints of the package before this one name one parent ("parent", tensors parent.*), null while there
    was none (warm-up, after a go-back): both resume, and the one parent can still be gone back to. A null one
    was read as a damaged checkpoint, whose advice (delete it) threw the learned versions away."""
    from uni_o4_ros.learning import checkpoint as ckpt

    make = functools.partial(_small_core, tmp_path)

    core = make()
    assert [core.add(_t(0, i)) for i in range(16)][-1].version == 1
    tensors, meta = ckpt.load(tmp_path, "learner")

    def as_before(parent: dict | None) -> None:
        old = {(k.replace("parent0.", "parent.", 1) if k.startswith("parent0.") else k): v for k, v in tensors.items()
               if parent is not None or not k.startswith("parent0.")}
        ckpt.save(tmp_path, "learner", old, {**{k: v for k, v in meta.items() if k != "parents"}, "parent": parent})

    as_before(None)
    resumed = make()
    assert resumed.version == 1 and resumed.parents == [] and not resumed.refused(1, 0)
    as_before(meta["parents"][0])
    resumed = make()
    assert [a.version for a in resumed.parents] == [0] and resumed.refused(1, 0) and resumed.version == 0


def test_learner_core_critic_warmup_publishes_nothing_until_the_actor_trains(tmp_path):
    torch.manual_seed(0)
    cfg = OnlineConfig(rollout_steps=16, minibatch_size=8, epochs=2, critic_warmup_steps=32)
    core = OnlineLearnerCore(make_policy(6, 2, hidden=(8,), mean_activation="none"), ValueNet(6, (8,)),
                             StateNormalizer.identity(6), cfg, tmp_path)
    actor0 = [p.clone() for p in core.ppo.actor.parameters()]
    critic0 = [p.clone() for p in core.ppo.critic.parameters()]
    # two warm-up batches: V learns, the deployed actor and its version stay, its data stays on-policy
    assert all(core.add(_t(0, i)) is None for i in range(16))
    # the recorder marks step 15 as its episode's end (an e-stop) just after it completed the batch: learned from
    # already, it is not the next batch's first row (it was, a copy of a row used, since the version stays)
    assert core.add(dict(_t(0, 15), timeout=True)) is None and core.buffer == []
    assert all(core.add(_t(0, i)) is None for i in range(16, 32))
    assert core.version == 0 and core.dropped_stale == 0 and core.updates == 2
    assert all(torch.equal(a, b) for a, b in zip(actor0, core.ppo.actor.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(critic0, core.ppo.critic.parameters()))
    res = [core.add(_t(0, i)) for i in range(32, 48)]
    assert res[-1] is not None and res[-1].version == 1
    assert any(not torch.equal(a, b) for a, b in zip(actor0, core.ppo.actor.parameters()))


class Watch:
    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticStatus

        from uni_o4_ros.msg import RobotState, Transition
        from uni_o4_ros.nodes.qos import EVENTS, POLICY_SESSION, SENSOR, TRANSITIONS

        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node("watch")
        self.status, self.states, self.transitions, self.sessions = [], [], [], []
        self.node.create_subscription(DiagnosticStatus, "policy_status", self.status.append, EVENTS)
        self.node.create_subscription(DiagnosticStatus, "policy_session", self.sessions.append, POLICY_SESSION)
        self.node.create_subscription(RobotState, "robot_state", self.states.append, SENSOR)
        self.node.create_subscription(Transition, "transitions", self.transitions.append, TRANSITIONS)

    def accepted_versions(self, since: int = 0) -> list[int]:
        """Versions the policy node accepted, in the statuses from index `since` on."""
        out = []
        for s in self.status[since:]:
            kv = {v.key: v.value for v in s.values}
            if kv.get("accepted") == "True":
                out.append(int(kv["version"]))
        return out

    def wait(self, cond, timeout: float = 180.0) -> None:
        wait_until(self.rclpy, self.node, cond, timeout)

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.shutdown()


def test_online_learning_hot_swaps_and_survives_a_learner_crash(ros_env, standing_policy, tmp_path):
    run, out = tmp_path / "learner", tmp_path / "episodes"
    learner_args = (f"policy_dir:={standing_policy}", f"run_dir:={run}", "rollout_steps:=40", "epochs:=2",
                    "minibatch_size:=20")
    w = Watch()
    procs = [
        start("uni_o4_ros.nodes.dataset_logger_node", ros_env, f"directory:={out}"),
        start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "max_steps:=25"),
        start("uni_o4_ros.nodes.pd_controller_node", ros_env),
        start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}", "deterministic:=false"),
    ]
    learner = start("uni_o4_ros.nodes.learner_node", ros_env, *learner_args)
    try:
        w.wait(lambda: 2 in w.accepted_versions())  # two updates reached the policy
        assert any(t.policy_version == 1 for t in w.transitions)  # data of the new version flows
        learner.kill()
        learner.wait(timeout=10)
        n_states, n_files = len(w.states), len(list(out.glob("episode_*.hdf5")))
        # without a learner the controller keeps ticking, the policy keeps answering (no watchdog
        # damping) and the logger keeps writing episodes
        w.wait(lambda: len(list(out.glob("episode_*.hdf5"))) >= n_files + 2 and len(w.states) >= n_states + 100)
        after = w.states[n_states:]
        stamps = [x.header.stamp.sec + 1e-9 * x.header.stamp.nanosec for x in after]
        # on failure say which ticks damped and when, so a rare failure under load can be told
        # apart from a real one (the watchdog damps after 0.1 s without a fresh command)
        damped = [(i, round(stamps[i] - stamps[0], 3)) for i, s in enumerate(after) if i >= 5 and s.mode != 1]
        assert not damped, f"{len(damped)} of {len(after) - 5} ticks not active (index, s after kill): {damped[:20]}"
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        assert max(gaps) < 0.5, f"the 50 Hz loop stalled {max(gaps):.3f} s at tick {gaps.index(max(gaps))}"
        saved = json.loads((run / "learner.json").read_text())
        assert saved["version"] >= 2
        # every transition names the recorder's run, and so does every episode file the logger wrote
        runs = {(t.recorder_session, t.recorder_started_ns) for t in w.transitions}
        assert len(runs) == 1 and len(next(iter(runs))[0]) == 32, runs
        files = sorted(out.glob("episode_*.hdf5"))
        assert {read_hdf5(f).metadata["recorder_session"] for f in files} == {next(iter(runs))[0]}
        learner = start("uni_o4_ros.nodes.learner_node", ros_env, *learner_args)
        w.wait(lambda: saved["version"] + 1 in w.accepted_versions())  # resumed, not restarted at 1
        assert json.loads((run / "learner.json").read_text())["updates"] > saved["updates"]
        # The policy node restarted, from its folder's version 0: a new run, with a new session. The learner
        # signs its newest version again for it, the new run takes it, and learning goes on from there.
        w.wait(lambda: w.sessions)
        yesterday = w.sessions[-1]  # the first run's announcement, as `ros2 bag record -a` keeps it
        stop(procs[3])
        newest, since = json.loads((run / "learner.json").read_text())["version"], len(w.status)
        procs[3] = start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}",
                         "deterministic:=false")
        w.wait(lambda: any(v >= newest for v in w.accepted_versions(since)))
        first = w.accepted_versions(since)[0]
        w.wait(lambda: first + 1 in w.accepted_versions(since))
        # `ros2 bag play` of that bag: the first run's announcement again, signed with the same key. The learner
        # stays with the running run, whose policy node goes on taking its updates.
        from diagnostic_msgs.msg import DiagnosticStatus

        from uni_o4_ros.nodes.qos import POLICY_SESSION

        w.node.create_publisher(DiagnosticStatus, "policy_session", POLICY_SESSION).publish(yesterday)
        w.wait(lambda: first + 3 in w.accepted_versions(since))
        # The recorder restarted: a new run, numbering episodes from 1 again. The logger writes its episodes apart
        # from the first run's (whose unfinished one ends as a truncation), and the learner learns on from it.
        stop(procs[1])
        procs[1] = start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "max_steps:=25",
                         "wait_for_subscribers:=3")  # the logger, the learner and this test hear its episode 1
        w.wait(lambda: len({t.recorder_session for t in w.transitions}) == 2)
        second = w.transitions[-1].recorder_session
        w.wait(lambda: sum(read_hdf5(f).metadata.get("recorder_session") == second
                           for f in out.glob("episode_*.hdf5")) >= 2)
        w.wait(lambda: first + 4 in w.accepted_versions(since))
        ids = sorted(int(read_hdf5(f).metadata["episode_id"]) for f in out.glob("episode_*.hdf5")
                     if read_hdf5(f).metadata.get("recorder_session") == second)
        assert ids[:2] == [1, 2], ids  # the new run's own episodes 1 and 2, each a file of its own
    finally:
        w.close()
        stop(learner, *procs)


def _log_two_mattress_episodes(folder) -> None:
    """Two short episodes of the simulated Go1 on the mattress, logged as the dataset_logger does."""
    from uni_o4_ros.robot.episodes import EpisodeWriter
    from uni_o4_ros.sim.go1_env import Go1Env, Go1EnvConfig

    env, writer, rng = Go1Env(Go1EnvConfig(terrain="mattress", max_steps=60)), EpisodeWriter(folder), \
        np.random.default_rng(0)
    for eid in (1, 2):
        obs, _ = env.reset(seed=eid, options={"vx": 0.5})
        for step in range(60):
            a = rng.normal(0, 0.3, 12).astype(np.float32)
            nxt, r, term, trunc, _ = env.step(a)
            writer.add({"episode_id": eid, "step": step, "observation": obs, "next_observation": nxt, "action": a,
                        "log_prob": -1.0, "reward": r, "terminal": term, "timeout": trunc, "policy_version": 0})
            obs = nxt
            if term or trunc:
                break
        writer.finish(eid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_offline_learner_stopped_mid_training_exits_cleanly_and_keeps_its_progress(sig, ros_env, standing_policy,
                                                                                     tmp_path):
    """Stopped by a service manager (SIGTERM) or Ctrl-C (SIGINT) while a worker thread trains: the node
    checkpoints and exits 0. (rclpy's own handlers once lost a SIGTERM here: about 1 stop in 20-40.)"""
    import rclpy

    from uni_o4_ros.learning import checkpoint as ckpt

    _log_two_mattress_episodes(tmp_path / "ep")
    run = tmp_path / "offline"
    log = run / "scalars.csv"
    proc = start("uni_o4_ros.nodes.learner_node", ros_env, "mode:=offline", f"dataset:={tmp_path / 'ep'}",
                 f"policy_dir:={standing_policy}", f"run_dir:={run}",
                 "offline_overrides:=['env=go1','value.steps=1000000','value.q_hidden=[32,32]','value.v_hidden=[32,32]']")
    rclpy.init()
    node = rclpy.create_node("stop_watcher")
    try:
        # value rows are logged every 100 steps: stop once training is well under way
        wait_until(rclpy, node, lambda: (log.is_file() and "value,200," in log.read_text()) or proc.poll() is not None,
                   timeout=300)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        err = proc.stderr.read()
        assert "terminate called" not in err and "Traceback" not in err, err[-2000:]
        _, meta = ckpt.load(next((run / "stages").glob("value-*")), "stage")
        assert 200 <= meta["step"] < 1_000_000 and not meta["done"]  # saved where it stopped: a rerun resumes
        assert not (run / "failed.txt").exists()
    finally:
        stop(proc)
        node.destroy_node()
        rclpy.shutdown()


def test_offline_mode_learns_from_logged_episodes_and_publishes_a_verifiable_policy(ros_env, standing_policy,
                                                                                    tmp_path):
    """...and holds the policy back until a policy node announces its session, then signs it for that run."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
    from test_bringup import _wait_for_output

    from uni_o4_ros.msg import PolicyUpdate
    from uni_o4_ros.nodes.qos import EVENTS, POLICY_SESSION, POLICY_UPDATE
    from uni_o4_ros.robot.policy_update import load_update_key, verify_update
    from uni_o4_ros.robot.update_session import SESSION_STATUS, new_session, session_status

    _log_two_mattress_episodes(tmp_path / "ep")
    rclpy.init()
    node = rclpy.create_node("update_watcher")
    got: list = []
    node.create_subscription(PolicyUpdate, "policy_update", got.append, POLICY_UPDATE)
    key = load_update_key("auto")[0]  # the learner signs with this computer's key by default
    overrides = "['env=go1','value.steps=50','value.q_hidden=[32,32]','value.v_hidden=[32,32]'," \
                "'dynamics.hidden=[32,32]','dynamics.max_steps=50','dynamics.max_epochs=1','improvement.steps=20'," \
                "'improvement.eval_every=10','ope.horizon=5','ope.n_start_states=8']"
    run, policy = tmp_path / "offline", None
    proc = start("uni_o4_ros.nodes.learner_node", ros_env, "mode:=offline", f"dataset:={tmp_path / 'ep'}",
                 f"policy_dir:={standing_policy}", f"run_dir:={run}", f"offline_overrides:={overrides}")
    try:
        said = _wait_for_output(proc, "version 1 waits for a policy node: none has announced its session", 300,
                                "offline policy made as version 1")
        rclpy.spin_once(node, timeout_sec=0.5)
        assert not got and (run / "summary.json").exists(), said[-2000:]  # held back: no run to sign for yet
        # A policy node starts (its announcement, as policy_node publishes it): the learner signs for its run. Its
        # robot computer's clock runs a day ahead (no RTC, no NTP in the field: it kept the time it was last set to).
        session = new_session()
        values, message = session_status(session, 0, key, started_ns=time.time_ns() + 86_400 * 10**9)
        announce = node.create_publisher(DiagnosticStatus, "policy_session", POLICY_SESSION)
        announce.publish(DiagnosticStatus(name=SESSION_STATUS, message=message,
                                          values=[KeyValue(key=k, value=v) for k, v in values.items()]))
        wait_until(rclpy, node, lambda: got or proc.poll() is not None, timeout=60)
        assert got, proc.stderr.read()[-2000:]
        m = got[0]
        assert m.session == session
        verified = verify_update(m.version, m.sha256, bytes(m.safetensors), m.spec_json, bytes(m.signature),
                                 current_version=0, expected_obs_dim=290, expected_act_dim=12, key=key,
                                 session=m.session, expected_session=session)
        assert verified.version == 1
        summary = json.loads((run / "summary.json").read_text())
        assert summary["transitions"] == 120 and np.isfinite(summary["am_q"]) and (run / "final").is_dir()
        # final/ is the version it went out as: a policy node or online learner started from it knows it
        from uni_o4_ros.learning.offline import load_policy

        assert load_policy(run / "final")[2]["version"] == 1
        assert proc.poll() is None  # the node stays up: a later policy node run gets it, signed for that run
        # The policy node restarts, its clock set back to the true time: it announces a start a day before the
        # run the learner signs for, which reads as that run's announcement played back. It refuses the update
        # kept for it (signed for the run before) and names itself in the refusal, signed: the learner signs
        # version 1 again for it, and it takes it. Before, the learner signed for the dead run until restarted.
        statuses: list = []
        node.create_subscription(DiagnosticStatus, "policy_status", statuses.append, EVENTS)
        policy = start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}",
                       "max_update_shift:=0.0")  # what is tested is whose run it is, not how far v1 moves the legs
        wait_until(rclpy, node, lambda: any(m.session != session for m in got) or policy.poll() is not None,
                   timeout=60)
        resent = [m for m in got if m.session != session]
        assert resent and resent[0].version == 1, \
            policy.stderr.read()[-2000:] if policy.poll() is not None else "no update signed for the new run"
        wait_until(rclpy, node, lambda: any({kv.key: kv.value for kv in st.values}.get("accepted") == "True"
                                            for st in statuses), timeout=30)
        verdicts = [{kv.key: kv.value for kv in st.values} for st in statuses]
        assert [v["version"] for v in verdicts if v["accepted"] == "True"] == ["1"]
        assert any(v.get("stale_session") == "True" and v.get("session") == resent[0].session for v in verdicts)
        _wait_for_output(proc, "restarted with its clock set back?", 30)
    finally:
        stop(proc, *([policy] if policy else []))
        node.destroy_node()
        rclpy.shutdown()


def test_learner_refuses_an_unknown_mode_a_missing_dataset_no_threads_or_a_bad_ppo_setting(ros_env, tmp_path,
                                                                                          standing_policy):
    started = []  # all at once: each process spends its 3 s importing torch before it refuses
    for params, needle in ((["mode:=offlin"], "mode must be"), (["mode:=offline", f"dataset:={tmp_path}/nope"],
                                                                "needs parameter dataset"),
                           (["torch_threads:=0"], "parameter torch_threads: must be >= 1, got 0"),
                           (["target_kl:=-0.01"], "parameter target_kl: must be >= 0, got -0.01"),
                           ([f"policy_dir:={standing_policy}", "clip:=0.0"], "clip: must be in (0, 1), got 0.0"),
                           ([f"policy_dir:={standing_policy}", "actor_lr:=-0.001"], "actor_lr: must be >= 0")):
        started.append((start("uni_o4_ros.nodes.learner_node", ros_env, *params), needle))
    for proc, needle in started:
        assert proc.wait(timeout=120) == 2
        err = proc.stderr.read()
        assert needle in err and "Traceback" not in err, err


def test_learner_core_leaves_out_transitions_with_nan_or_wrong_dimensions_and_keeps_learning(tmp_path):
    """A sensor glitch (NaN reward or state) or a transition of another policy's size must not poison
    the learner: before, one NaN reward ended it with 'training diverged' and stopped all updates."""
    torch.manual_seed(0)
    cfg = OnlineConfig(rollout_steps=16, minibatch_size=8, epochs=2)
    core = OnlineLearnerCore(make_policy(6, 2, hidden=(8,), mean_activation="none"), ValueNet(6, (8,)),
                             StateNormalizer.identity(6), cfg, tmp_path)
    bad = [dict(_t(0, 3), reward=float("nan")), dict(_t(0, 5), log_prob=float("-inf")),
           dict(_t(0, 7), observation=np.full(6, np.inf)), dict(_t(0, 9), action=np.zeros(3))]
    results = [core.add(t) for t in bad] + [core.add(_t(0, i)) for i in range(15)]
    assert all(r is None for r in results) and core.dropped_invalid == 4 and len(core.buffer) == 15
    res = core.add(_t(0, 15))
    assert res is not None and res.version == 1
    assert all(torch.isfinite(p).all() for p in core.ppo.actor.parameters())
    line = json.loads((tmp_path / "timeline.jsonl").read_text().splitlines()[-1])
    assert line["dropped_invalid"] == 4 and line["batch_size"] == 16


def test_learner_core_refuses_to_learn_from_a_policy_that_acted_with_its_mean(tmp_path):
    """The deployed policy ran with deterministic: true (the authors' robot code did): PPO cannot move
    the mean from mean actions, so the batch is not used and no version is published; once the
    policy samples, learning goes on."""
    torch.manual_seed(0)
    cfg = OnlineConfig(rollout_steps=16, minibatch_size=8, epochs=2)
    core = OnlineLearnerCore(make_policy(6, 2, hidden=(8,), mean_activation="none"), ValueNet(6, (8,)),
                             StateNormalizer.identity(6), cfg, tmp_path)
    before = [p.clone() for p in core.ppo.actor.parameters()]

    def acted(step: int, deterministic: bool) -> dict:
        t = _t(0, step)
        obs = torch.as_tensor(t["observation"], dtype=torch.float32)[None]
        a, logp = core.ppo.actor.act(obs, deterministic=deterministic)
        return dict(t, action=a[0, 0].numpy().astype(np.float32), log_prob=float(logp[0, 0]))

    assert all(core.add(acted(i, deterministic=True)) is None for i in range(32))
    assert core.not_exploring == 2 and core.version == 0 and core.updates == 0 and core.buffer == []
    assert all(torch.equal(a, b) for a, b in zip(before, core.ppo.actor.parameters()))
    res = [core.add(acted(i, deterministic=False)) for i in range(32, 48)]
    assert res[-1] is not None and res[-1].version == 1 and core.not_exploring == 2


def test_learner_core_takes_a_resent_last_transition_as_the_episode_end(tmp_path):
    """The recorder ends an episode the robot stopped acting in by sending its last transition again,
    marked as a timeout: it replaces the first, so the batch neither counts it twice nor bootstraps
    through the gap."""
    cfg = OnlineConfig(rollout_steps=16, minibatch_size=8, epochs=2)
    core = OnlineLearnerCore(make_policy(6, 2, hidden=(8,), mean_activation="none"), ValueNet(6, (8,)),
                             StateNormalizer.identity(6), cfg, tmp_path)
    for i in range(5):
        core.add(_t(0, i))
    assert core.add(dict(_t(0, 4), timeout=True)) is None
    assert len(core.buffer) == 5 and core.buffer[-1]["timeout"] and not any(r["timeout"] for r in core.buffer[:-1])


def test_learner_core_learns_from_the_newest_recorder_run_not_an_old_recording_played_back(tmp_path):
    """An old bag played back beside the robot (ros2 bag play) repeats transitions of policy versions that
    may bear today's numbers: before, they filled today's batches. A restarted recorder numbers episodes from
    1 again: its first step is not taken for a resend of the run before's."""
    cfg = OnlineConfig(rollout_steps=8, minibatch_size=4, epochs=1)
    core = OnlineLearnerCore(make_policy(6, 2, hidden=(8,), mean_activation="none"), ValueNet(6, (8,)),
                             StateNormalizer.identity(6), cfg, tmp_path)

    today, monday, restarted = "a" * 32, "b" * 32, "c" * 32
    clock = iter(np.arange(0.0, 10.0, 0.02))  # one transition every 20 ms

    def add(session: str, started: int, t: dict):
        return core.add({**t, "recorder_session": session, "recorder_started_ns": started}, now=next(clock))

    assert add(today, 2000, _t(0, 0)) is None
    # today's episode 1 ends in a single step; the recorder restarts and begins its own episode 1
    assert add(today, 2000, dict(_t(0, 1), timeout=True)) is None
    assert add(restarted, 3000, dict(_t(0, 1), timeout=False)) is None
    assert len(core.buffer) == 3 and core.buffer[1]["timeout"]  # both kept: the restart replaced nothing
    replayed = [add(monday, 1000, _t(0, k, episode=7)) if k % 2 else add(restarted, 3000, _t(0, k + 2))
                for k in range(8)]  # interleaved with the live run, and of version 0 too
    assert replayed == [None] * 8 and core.dropped_earlier_run == 4 and core.earlier_run == monday
    assert len(core.buffer) == 8 - 1 and all(r["recorder_session"] in (today, restarted) for r in core.buffer)
    assert add(restarted, 3000, _t(0, 12)) is not None  # the 8th of the runs learned from: an update
    assert core.dropped_stale == 0 and core.dropped_invalid == 0


def test_uni_o4_plot_draws_a_learners_updates_and_a_recordings_episodes(tmp_path, capsys):
    """What a user fine-tuning on the robot looks at: `uni-o4 plot` of the learner's run folder (its
    timeline.jsonl) and of the logger's episode folder, each a PNG of what the files hold."""
    from uni_o4_ros.cli import main
    from uni_o4_ros.data import read_hdf5
    from uni_o4_ros.learning.scalars import timeline_series
    from uni_o4_ros.robot.episodes import episode_series

    torch.manual_seed(0)
    run = tmp_path / "learner"
    core = OnlineLearnerCore(make_policy(6, 2, hidden=(8,), mean_activation="none"), ValueNet(6, (8,)),
                             StateNormalizer.identity(6), OnlineConfig(rollout_steps=16, minibatch_size=8, epochs=2),
                             run)
    for version in range(3):
        results = [core.add(_t(version, 16 * version + i, episode=version + 1)) for i in range(16)]
        assert results[-1] is not None and results[-1].version == version + 1
    series = timeline_series(run / "timeline.jsonl")
    assert series[("learner", "batch_return")] == [(1, 16.0), (2, 16.0), (3, 16.0)]  # 16 rewards of 1 per batch
    assert [v for v, _ in series[("learner", "clip_frac")]] == [1, 2, 3]
    assert not any("refused" in name for _, name in series)  # no refusal, no panel for it
    assert core.refused(3, 2, "too far")  # the policy node refused the newest: the plot shows which
    assert timeline_series(run / "timeline.jsonl")[("learner", "refused by the policy node (1: yes)")] == [
        (1, 0.0), (2, 0.0), (3, 1.0)]
    assert main(["plot", str(run)]) == 0
    assert (run / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # rows edited by hand or damaged, their version no version number: left out, where they ended the plot in
    # int()'s TypeError or OverflowError
    with (run / "timeline.jsonl").open("a") as f:
        for version in ("null", "1e400", "[1]", "2.5", "-1", "true", "1" + "0" * 400):
            f.write(f'{{"version": {version}, "batch_return": 3.0}}\n')
    with (run / "refused.jsonl").open("a") as f:
        f.write('{"version": null}\n')
    assert timeline_series(run / "timeline.jsonl")[("learner", "batch_return")] == [(1, 16.0), (2, 16.0), (3, 16.0)]
    assert main(["plot", str(run)]) == 0

    rec = tmp_path / "rec"
    _log_two_mattress_episodes(rec)
    files = sorted(rec.glob("episode_*.hdf5"))
    episodes = episode_series(rec)
    assert episodes[("episodes", "return")] == [(k + 1, pytest.approx(float(read_hdf5(f).rewards.sum())))
                                                for k, f in enumerate(files)]
    assert episodes[("episodes", "fell (ended as a terminal)")] == [(k + 1, float(read_hdf5(f).terminals[-1]))
                                                                   for k, f in enumerate(files)]
    assert main(["plot", str(rec)]) == 0
    assert (rec / "episodes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A folder with none of the three: a one-line error naming what was looked for, no traceback.
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) != 0
    assert "holds no scalars.csv" in capsys.readouterr().err


def test_learner_core_says_when_the_robot_does_not_run_its_newest_version(tmp_path):
    torch.manual_seed(0)
    core = OnlineLearnerCore(make_policy(6, 2, hidden=(8,), mean_activation="none"), ValueNet(6, (8,)),
                             StateNormalizer.identity(6), OnlineConfig(rollout_steps=16, minibatch_size=8, epochs=2),
                             tmp_path)
    assert [core.add(_t(0, i)) for i in range(16)][-1].version == 1
    flags = [(core.add(_t(0, 16 + i)), core.stalled)[1] for i in range(40)]  # the robot still runs version 0
    assert [i for i, f in enumerate(flags) if f] == [15, 31]  # at each whole batch in a row, not before
    assert core.stale_streak == 40 and core.stale_version == 0
    core.add(_t(1, 56))  # version 1 arrives: the streak ends
    assert core.stale_streak == 0 and not core.stalled


def test_a_learner_whose_update_is_refused_goes_back_to_the_running_version_and_learns_on(
        ros_env, standing_policy, tmp_path):
    """A policy node refusing the learner's update (here any update: max_update_shift 1e-6) keeps its
    version, so every transition after it was stale to the learner, which learned nothing for ever. It now
    logs the refusal with the policy node's reason, goes back to the version the robot runs, and learns on
    from its transitions: the next update, numbered above the refused one, is offered (and refused) too."""
    from test_bringup import _wait_for_output

    procs, learner = _learning_graph(ros_env, standing_policy, tmp_path / "learner", ["max_update_shift:=0.000001"])
    w = Watch()
    try:
        # Someone else's status on the topic, not a policy node's: read past, not a crash of the learner.
        # Transient-local, so the learner gets it whenever it matches.
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

        from uni_o4_ros.nodes.qos import EVENTS

        odd = w.node.create_publisher(DiagnosticStatus, "policy_status", EVENTS)
        odd.publish(DiagnosticStatus(name="policy_update", values=[KeyValue(key="accepted", value="False"),
                                                                    KeyValue(key="version", value="v1")]))
        said = _wait_for_output(learner, "the policy node refused version 2: it moves the joint targets", 120,
                                "the policy node refused version 1: it moves the joint targets")
        assert "more than max_update_shift 1e-06 rad" in said and "Went back to version 0" in said
        # learning on after going back: no batch of stale transitions since (before it, a policy node that announced
        # itself late on a loaded machine can leave version 1 unswapped for a batch: said, and rightly)
        after = said.split("Went back to version 0", 1)[1]
        assert "the next update is version 2" in after and "transitions came from policy version" not in after
        assert learner.poll() is None and "Traceback" not in said
        # Version 2 was made from version 0 again, from its transitions after the refusal.
        timeline = [json.loads(line) for line in (tmp_path / "learner" / "timeline.jsonl").read_text().splitlines()]
        assert [(r["version"], r["made_from"]) for r in timeline[:2]] == [(1, 0), (2, 0)]
        refusals = [json.loads(line) for line in (tmp_path / "learner" / "refused.jsonl").read_text().splitlines()]
        assert [(r["version"], r["running"], r["rolled_back"]) for r in refusals[:1]] == [(1, 0, True)]
        assert "max_update_shift" in refusals[0]["reason"]
    finally:
        w.close()
        stop(learner, *procs)


def _learning_graph(ros_env, policy, run_dir, policy_args=(), learner_args=()):
    """Controller, sampling policy node, recorder (25-step episodes) and a learner of 40-transition batches."""
    procs = [
        start("uni_o4_ros.nodes.pd_controller_node", ros_env),
        start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={policy}", "deterministic:=false", *policy_args),
        start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "max_steps:=25", "wait_for_subscribers:=1"),
    ]
    learner = start("uni_o4_ros.nodes.learner_node", ros_env, f"policy_dir:={policy}", f"run_dir:={run_dir}",
                    "rollout_steps:=40", "epochs:=2", "minibatch_size:=20", *learner_args)
    return procs, learner


def test_a_learner_with_another_key_than_the_robot_hears_why_and_does_not_go_back(ros_env, standing_policy, tmp_path):
    """A learner on another computer without a copy of the robot's key: the policy node refuses every update
    for its signature, and says so in a status signed with the robot's key, which this learner cannot check.
    It hears the reason (what to do about it) but does not act on a verdict it cannot trust."""
    from test_bringup import _wait_for_output

    laptop_key = b"not the robot's key, but long enough to be one"
    (tmp_path / "laptop.key").write_bytes(laptop_key + b"\n")
    (tmp_path / "laptop.key").chmod(0o600)  # a key open to others is refused at start
    procs, learner = _learning_graph(ros_env, standing_policy, tmp_path / "learner",
                                     learner_args=[f"hmac_key_file:={tmp_path / 'laptop.key'}"])
    try:
        said = _wait_for_output(learner, "transitions came from policy version 0", 120,
                                "a policy node refused version 1: its signature does not match this robot's key")
        assert "give it a copy of this robot's key file" in said and "not signed with this learner's key" in said
        # The robot's session announcement, which it cannot check, is what it signs for: so it hears the refusal.
        assert "is announced in a status not signed with this learner's key (another key than the robot's" in said
        # Its log names the key it signs with by a fingerprint, to compare with the policy node's.
        from uni_o4_ros.robot.policy_update import key_fingerprint

        assert f"fingerprint {key_fingerprint(laptop_key)})" in said
        assert "Went back" not in said and not (tmp_path / "learner" / "refused.jsonl").exists()
        assert learner.poll() is None and "Traceback" not in said
    finally:
        stop(learner, *procs)


def test_learner_core_keeps_its_newest_version_as_a_deployable_policy_folder(tmp_path):
    """After fine-tuning on the robot the user deploys the result, or starts offline learning from it (the
    paper's online -> offline step): the learner's checkpoint is not a policy folder, run_dir/policy is."""
    from uni_o4_ros.learning import checkpoint as ckpt
    from uni_o4_ros.learning.offline import load_policy

    make = functools.partial(_small_core, tmp_path)

    core = make()
    assert not (tmp_path / "policy").exists()  # nothing published yet
    for version in range(2):
        assert [core.add(_t(version, 16 * version + i)) for i in range(16)][-1].version == version + 1
    policy, normalizer, meta, tensors = load_policy(tmp_path / "policy")
    assert meta["version"] == 2
    x = torch.randn(5, 6)
    torch.testing.assert_close(policy(normalizer(x))[0], core.ppo.actor(core.ppo.normalizer(x))[0])
    value = ValueNet(6, tuple(meta["v_hidden"]))  # V too: a new learner started from this folder fine-tunes on
    ckpt.load_prefixed("value", value, tensors)
    torch.testing.assert_close(value(x), core.ppo.critic(x))
    # A crash can leave the folder behind the checkpoint (or without it): a resumed learner writes it again.
    shutil.rmtree(tmp_path / "policy")
    assert make().version == 2 and load_policy(tmp_path / "policy")[2]["version"] == 2


def test_learner_core_goes_back_to_the_version_its_refused_update_was_made_from(tmp_path):
    """A refused version never runs. When the robot runs the version it was made from, the learner goes back
    to that actor (and its optimiser's state, so Adam's moments do not push the refused step again), learns
    on from its transitions, and numbers its next version above the refused one. Any other running version
    is left alone: going back there would throw away what was learned."""
    from uni_o4_ros.learning import checkpoint as ckpt
    from uni_o4_ros.learning.offline import load_policy

    make = functools.partial(_small_core, tmp_path)

    def actor_state(core):
        return {k: v.clone() for k, v in ckpt.prefixed("actor", core.ppo.actor).items()}

    core = make()
    assert [core.add(_t(0, i)) for i in range(16)][-1].version == 1
    v1 = actor_state(core)
    v1_opt = {k: v.clone() for k, v in ckpt.optimizer_tensors("actor_opt", core.ppo.actor_opt)[0].items()}
    assert [core.add(_t(1, 16 + i)) for i in range(16)][-1].version == 2  # the robot ran version 1
    assert any(not torch.equal(v1[k], v) for k, v in actor_state(core).items())
    # Not this learner's newest, or the robot runs a version it does not keep (another learner's): nothing changes.
    assert not core.refused(1, 0) and not core.refused(2, 7, "someone else's") and core.version == 2
    # A learner restarted before the refusal reached it goes back all the same: the parent is in the checkpoint.
    core = make()
    assert core.version == 2 and core.refused(2, 1, "moves the joint targets 3.2 rad")
    assert core.version == 1 and core.published == 2
    for k, v in actor_state(core).items():
        torch.testing.assert_close(v, v1[k])
    for k, v in ckpt.optimizer_tensors("actor_opt", core.ppo.actor_opt)[0].items():
        torch.testing.assert_close(v, v1_opt[k])
    assert load_policy(tmp_path / "policy")[2]["version"] == 1  # the folder holds what runs, not the refused one
    assert not core.refused(2, 1)  # said once: a repeat of the status changes nothing
    # Version 1's transitions are on-policy again; the next version is 3, made from 1.
    assert [core.add(_t(1, 32 + i)) for i in range(16)][-1].version == 3 and core.dropped_stale == 0
    resumed = make()
    assert (resumed.version, resumed.published) == (3, 3)
    lines = (tmp_path / "timeline.jsonl").read_text().splitlines()
    assert [(json.loads(x)["version"], json.loads(x)["made_from"]) for x in lines] == [(1, 0), (2, 1), (3, 1)]
    refusals = [json.loads(x) for x in (tmp_path / "refused.jsonl").read_text().splitlines()]
    assert [(r["version"], r["running"], r["rolled_back"]) for r in refusals] == [(2, 7, False), (2, 1, True)]
    # `uni-o4 bringup --learn` tells the user from these files, the refusals as bad news.
    from uni_o4_ros.cli import _learner_news

    seen: dict[str, int] = {}
    news = _learner_news(tmp_path, seen)
    assert [bad for _, bad in news] == [False] * 3 + [True] * 2 and _learner_news(tmp_path, seen) == []
    assert "published policy version 3" in news[2][0] and "runs version 7: the learner waits" in news[3][0]
    assert "refused version 2: the learner went back to version 1" in news[4][0]
    # The robot withdraws version 3 (v1 answers again), then version 1 too (v0 answers): the policy node withdraws
    # one version at a time, and the learner, restarted in between, goes back twice. It kept one parent, and stood
    # on withdrawn version 1 for good, every transition stale and run_dir/policy a version the robot dropped.
    core = make()
    assert core.refused(3, 1, "withdrawn") and core.version == 1
    core = make()
    assert core.refused(1, 0, "withdrawn") and core.version == 0 and core.published == 3
    assert load_policy(tmp_path / "policy")[2]["version"] == 0
    assert [core.add(_t(0, 48 + i)) for i in range(16)][-1].version == 4  # v0's transitions are on-policy again
    # A verdict on a version its newest was made from (v4 withdrawn for v0 while v5 was learned from v4): left
    # alone, since v5 may still reach the robot, judged against v0. Going back to v0 then, with v5 running, left the
    # two apart for good. A refusal or withdrawal of v5 itself, naming v0 (kept), takes it back there.
    assert [core.add(_t(4, 64 + i)) for i in range(16)][-1].version == 5
    assert not core.refused(4, 0, "withdrawn") and core.version == 5
    assert core.refused(5, 0, "withdrawn") and core.version == 0
    # Gone back and restarted before learning on: the learner stands on version 1, and numbers above 2.
    shutil.rmtree(tmp_path)
    core = make()
    [core.add(_t(0, i)) for i in range(16)]
    assert core.refused(1, 0)
    core = make()
    assert (core.version, core.published) == (0, 1)
    assert [core.add(_t(0, 16 + i)) for i in range(16)][-1].version == 2

"""The policy node in its own process, driven over real DDS: hot-swap between ticks and refusals.

The test steps the loop in lockstep (send state k, wait for the command answering k), so
"the next tick" is well defined and no sleep is used for synchronisation.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load, save

from conftest import ROOT
from uni_o4_ros.learning.normalizer import StateNormalizer
from uni_o4_ros.learning.offline import save_policy
from uni_o4_ros.learning.policy import make_policy
from uni_o4_ros.robot.go1 import DEFAULT_Q, action_to_joint_targets
from uni_o4_ros.robot.policy_update import encode_update, load_update_key, refusal_in, sign_update
from uni_o4_ros.robot.update_session import stale_answer_in


def constant_policy(value: float):
    """A policy whose mean action is `value` on every joint, whatever it observes."""
    pol = make_policy(290, 12, hidden=(16,), mean_activation="none")
    with torch.no_grad():
        for p in pol.parameters():
            p.zero_()
        pol.body.net[-1].bias[0, 0, :12] = value
    return pol, StateNormalizer(np.zeros(290), np.ones(290))


def start_policy_node(folder, ros_env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "uni_o4_ros.nodes.policy_node", "--ros-args", "-p", f"policy_dir:={folder}"],
        env=ros_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def end(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        return proc.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


@pytest.fixture
def node(tmp_path, ros_env):
    pol, norm = constant_policy(-0.4)
    save_policy(tmp_path / "initial", "policy", pol, norm, extra={"version": 1})
    proc = start_policy_node(tmp_path / "initial", ros_env)
    yield proc
    end(proc)


class Driver:
    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticStatus

        from uni_o4_ros.msg import JointCommand, PolicyUpdate, RobotState
        from uni_o4_ros.nodes.qos import COMMAND, EVENTS, POLICY_SESSION, POLICY_UPDATE, SENSOR

        rclpy.init()
        self.rclpy, self.RobotState, self.PolicyUpdate = rclpy, RobotState, PolicyUpdate
        self.n = rclpy.create_node("driver")
        self.state_pub = self.n.create_publisher(RobotState, "robot_state", SENSOR)
        self.update_pub = self.n.create_publisher(PolicyUpdate, "policy_update", POLICY_UPDATE)
        self.cmds, self.status = [], []
        self.n.create_subscription(JointCommand, "joint_command", self.cmds.append, COMMAND)
        self.n.create_subscription(DiagnosticStatus, "policy_status", self.status.append, EVENTS)
        self.sessions: list = []
        self.n.create_subscription(DiagnosticStatus, "policy_session", self.sessions.append, POLICY_SESSION)
        self.seq = 0

    @property
    def session(self) -> str:
        """The policy node run's session, which updates are signed for (as a learner hears it)."""
        self.wait(lambda: self.sessions)
        return next(kv.value for kv in self.sessions[-1].values if kv.key == "session")

    def wait(self, cond, timeout: float = 30.0, poke=None) -> None:
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise TimeoutError("condition not met in time")
            if poke:
                poke()
            self.rclpy.spin_once(self.n, timeout_sec=0.05)

    def tick(self):
        """Send one state and return the command that answers it (retransmitting a lost state)."""
        self.seq += 1
        msg = self.RobotState(mode=self.RobotState.MODE_ACTIVE)
        msg.header.stamp.sec = self.seq
        msg.quaternion = [1.0, 0.0, 0.0, 0.0]
        msg.q = DEFAULT_Q.tolist()
        seq = self.seq
        self.wait(lambda: any(c.header.stamp.sec == seq for c in self.cmds),
                  poke=lambda: self.state_pub.publish(msg))
        return next(c for c in self.cmds if c.header.stamp.sec == seq)

    def update(self, fields: dict) -> tuple[bool, str]:
        n = len(self.status)
        self.update_pub.publish(self.PolicyUpdate(**fields))
        self.wait(lambda: len(self.status) > n)
        st = self.status[n]
        return dict((kv.key, kv.value) for kv in st.values)["accepted"] == "True", st.message

    def close(self) -> None:
        self.n.destroy_node()
        self.rclpy.shutdown()


def test_hot_swap_takes_effect_on_the_next_tick_and_bad_updates_are_refused(node):
    d = Driver()
    try:
        old_q = action_to_joint_targets(np.full(12, -0.4))
        new_q = action_to_joint_targets(np.full(12, 0.3))
        first = d.tick()
        assert first.policy_version == 1
        np.testing.assert_allclose(first.q, old_q, atol=1e-6)
        for _ in range(5):
            assert d.tick().policy_version == 1

        # The node made this computer's key at start (hmac_key_file: auto); the learner signs with it.
        key = load_update_key("auto")[0]
        pol2, norm2 = constant_policy(0.3)
        v2 = encode_update(pol2, norm2, version=2, key=key, session=d.session)
        for fields, why in ((encode_update(pol2, norm2, version=2, session=d.session), "it is not signed"),
                            (encode_update(pol2, norm2, version=2, key=b"another robot's", session=d.session),
                             "its signature does not match this robot's key")):
            ok, reason = d.update(fields)
            assert not ok and why in reason, reason
            assert d.tick().policy_version == 1
        ok, reason = d.update(v2)
        assert ok and "moves the joint targets 0.175 rad from v1's" in reason, reason  # 0.7 x 0.25 at the knees
        after = d.tick()  # the very next tick runs the new weights
        assert after.policy_version == 2
        np.testing.assert_allclose(after.q, new_q, atol=1e-6)

        good = encode_update(constant_policy(0.9)[0], norm2, version=3, key=key, session=d.session)
        tensors = load(good["safetensors"])
        nan = dict(tensors)
        nan["policy.body.net.2.bias"] = nan["policy.body.net.2.bias"] * float("nan")
        import hashlib

        def with_blob(blob: bytes) -> dict:  # signed: malformed all the same (a learner's bug)
            return sign_update(dict(good, safetensors=blob, sha256=hashlib.sha256(blob).hexdigest()), key)

        wrong_shape = dict(tensors)
        wrong_shape["policy.body.net.0.weight"] = torch.zeros(1, 290, 8)
        cases = {
            "corrupt": dict(good, safetensors=good["safetensors"][:-1] + b"x"),
            "truncated": with_blob(good["safetensors"][:100]),
            "wrong-shape": with_blob(save(wrong_shape)),
            "nan": with_blob(save(nan)),
            "older": encode_update(constant_policy(0.9)[0], norm2, version=1, key=key, session=d.session),
            # version 2, signed, captured and offered again as version 3: the signature covers the version
            "replayed": dict(v2, version=3),
            # well-formed, but its actions 40 units off (a learner that diverged): 10 rad at the knees
            "blown-up": encode_update(constant_policy(40.0)[0], norm2, version=3, key=key, session=d.session),
        }
        for name, fields in cases.items():
            ok, reason = d.update(fields)
            assert not ok, name
            assert reason, name
            if name == "replayed":
                assert "signature does not match" in reason, reason
            if name == "blown-up":
                assert "moves the joint targets 9.925 rad" in reason and "max_update_shift 1.0" in reason, reason
            cmd = d.tick()  # the controller keeps running on version 2
            assert cmd.policy_version == 2, name
            np.testing.assert_allclose(cmd.q, new_q, atol=1e-6)
        seqs = [c.header.stamp.sec for c in d.cmds]
        assert sorted(set(seqs)) == list(range(1, d.seq + 1))  # every tick was answered
    finally:
        d.close()


def test_an_update_of_an_earlier_run_of_the_policy_node_is_refused_by_the_next_run(tmp_path, ros_env):
    """`ros2 bag play` of an earlier session's bag beside the robot replays its policy_update: signed with this
    computer's key, numbered above the version a restarted policy node runs, it used to be hot-swapped in.
    Each run now announces its own session, and an update signed for another is refused (in a verdict the
    learner does not act on); the same weights signed for the new run are taken."""
    pol, norm = constant_policy(-0.4)
    save_policy(tmp_path / "initial", "policy", pol, norm, extra={"version": 1})
    proc = start_policy_node(tmp_path / "initial", ros_env)
    d = Driver()
    try:
        assert d.tick().policy_version == 1
        key = load_update_key("auto")[0]
        yesterday = d.session
        captured = encode_update(constant_policy(0.3)[0], norm, version=2, key=key, session=yesterday)
        ok, reason = d.update(captured)
        assert ok, reason
        assert d.tick().policy_version == 2
        end(proc)
        proc = start_policy_node(tmp_path / "initial", ros_env)  # the next run, from its folder: version 1
        d.wait(lambda: d.session != yesterday)
        ok, reason = d.update(captured)  # played back (it also reached the new run as policy_update's newest)
        assert not ok and f"signed for session {yesterday[:8]}..., not this run of the policy node" in reason, reason
        values = {kv.key: kv.value for kv in d.status[-1].values}
        # Nothing for a learner to go back on; it names this run, signed, so a learner signs for it.
        assert refusal_in(values, d.status[-1].message, key) is None
        answer = stale_answer_in(values, d.status[-1].message, key)
        assert answer.run.session == d.session and answer.run.signed and answer.version == 2
        assert answer.refused_session == yesterday
        assert d.tick().policy_version == 1  # the new run keeps its own policy
        ok, reason = d.update(dict(encode_update(constant_policy(0.3)[0], norm, version=2, key=key,
                                                 session=d.session)))
        assert ok, reason
        assert d.tick().policy_version == 2
    finally:
        d.close()
        out = end(proc)
    assert "refused: it is signed for session" in out, out[-2000:]


def test_a_bad_robot_state_is_not_answered_and_the_policy_node_stays_up(node):
    """One state with a NaN in it (a sensor or link fault) raised in the observation and ended the policy node;
    now it is left unanswered (the controller damps on it too) and the next good state is answered."""
    d = Driver()
    try:
        d.tick()
        for quaternion, q in (([np.nan, 0.0, 0.0, 0.0], DEFAULT_Q), ([0.0] * 4, DEFAULT_Q),
                              ([1.0, 0.0, 0.0, 0.0], np.where(np.arange(12) == 4, np.nan, DEFAULT_Q))):
            d.seq += 1
            msg = d.RobotState(mode=d.RobotState.MODE_ACTIVE)
            msg.header.stamp.sec, msg.quaternion, msg.q = d.seq, quaternion, np.asarray(q, np.float32).tolist()
            d.state_pub.publish(msg)
            bad = d.seq
            good = d.tick()  # answered: the node is up, with a fresh history
            assert np.isfinite(good.q).all()
            assert not any(c.header.stamp.sec == bad for c in d.cmds)  # the bad one was not
    finally:
        d.close()
    assert node.poll() is None
    assert "not answering a bad robot state: NaN/inf in its orientation" in end(node)


def test_a_version_whose_action_turns_non_finite_is_withdrawn_the_one_before_answers_and_its_learner_is_told(node):
    """An update finite on every state it was checked on (a normaliser std of 1e-45 on the commanded vx, checked
    while the command was 0) meets a teleop's 0.3 m/s. Its NaN went out as joint targets and into the next
    observation, which ended the policy node. Now the version before answers from that tick on, and a signed
    refusal of the withdrawn version tells its learner to go back to the one the robot runs."""
    from geometry_msgs.msg import Twist

    d = Driver()
    try:
        assert d.tick().policy_version == 1
        key = load_update_key("auto")[0]
        pol, norm = constant_policy(0.3)
        std = np.ones(290, np.float32)
        std[3::58] = 1e-45  # vx in each of the five frames
        v2 = encode_update(pol, StateNormalizer(np.zeros(290), std), version=2, key=key, session=d.session)
        ok, reason = d.update(v2)
        assert ok, reason
        assert d.tick().policy_version == 2
        teleop, forward = d.n.create_publisher(Twist, "cmd_vel", 10), Twist()
        forward.linear.x = 0.3
        n = len(d.status)
        answers = []
        d.wait(lambda: len(d.status) > n, poke=lambda: (teleop.publish(forward), answers.append(d.tick())))
        assert all(np.isfinite(c.q).all() for c in answers)
        values = {kv.key: kv.value for kv in d.status[n].values}
        refusal = refusal_in(values, d.status[n].message, key)
        assert refusal is not None and refusal.signed and (refusal.version, refusal.running) == (2, 1), values
        assert refusal.sha256 == v2["sha256"] and "withdrawn" in d.status[n].message
        after = d.tick()
        assert after.policy_version == 1
        np.testing.assert_allclose(after.q, action_to_joint_targets(np.full(12, -0.4)), atol=1e-6)
        ok, reason = d.update(dict(encode_update(pol, StateNormalizer(np.zeros(290), std), version=3, key=key,
                                                 session=d.session)))
        assert not ok and "withdrawn at a tick: its action on a robot state was not finite" in reason, reason
    finally:
        d.close()
    assert node.poll() is None


def test_a_policy_hearing_two_controllers_answers_neither_until_one_is_left(node):
    """Robot states from two controllers (another suite on this ROS domain): the policy used to answer
    both from one interleaved history, driving two robots. Now it answers neither, so each controller's
    watchdog damps; once one is left it answers again."""
    from uni_o4_ros.nodes.qos import SENSOR

    d = Driver()
    other = d.n.create_publisher(d.RobotState, "robot_state", SENSOR)
    try:
        d.tick()  # answering its one controller
        sent = []
        for _ in range(60):  # 0.6 s of two controllers at 100 Hz each
            for pub in (d.state_pub, other):
                msg = d.RobotState(mode=d.RobotState.MODE_ACTIVE)
                msg.header.stamp.sec = 10_000 + len(sent)
                msg.quaternion = [1.0, 0.0, 0.0, 0.0]
                msg.q = DEFAULT_Q.tolist()
                pub.publish(msg)
                sent.append(msg.header.stamp.sec)
            d.rclpy.spin_once(d.n, timeout_sec=0.01)
        d.tick()  # one controller again (after the 0.5 s window): answered, and every answer before it is in
        answered = {c.header.stamp.sec for c in d.cmds} & set(sent)
        assert answered <= set(sent[:4])  # at most what came before the second controller was heard
    finally:
        d.close()
    node.terminate()
    log = node.communicate(timeout=30)[0]
    assert "robot states from 2 controllers: another suite shares ROS_DOMAIN_ID" in log
    assert "answering, with a fresh history" in log


def test_the_policy_follows_a_teleop_cmd_vel_held_inside_its_command_limits_until_the_teleop_falls_silent(node):
    """teleop_twist_keyboard, teleop_twist_joy and Nav2 publish cmd_vel reliable and volatile: the policy
    subscribed transient-local and matched none of them, so a joystick did nothing. It follows them now,
    and a command past its limits (vx 50 m/s, the defaults allow 0..1) is held to them: the clamped
    command is the one the policy observes, and the log says so. A teleop that dies sends no stop: its last
    command drove the robot on until the e-stop. It lapses now, after command_timeout."""
    from geometry_msgs.msg import Twist

    from uni_o4_ros.msg import Transition
    from uni_o4_ros.nodes.qos import TRANSITIONS
    from uni_o4_ros.robot.observation import newest_command

    d = Driver()
    steps: list = []
    d.n.create_subscription(Transition, "policy_step", steps.append, TRANSITIONS)
    teleop = d.n.create_publisher(Twist, "cmd_vel", 10)  # teleop_twist_keyboard's QoS: depth 10, the defaults
    joystick = Twist()

    def shown() -> tuple[float, float, float]:
        d.tick()
        d.wait(lambda: any(s.header.stamp.sec == d.seq for s in steps))
        step = next(s for s in steps if s.header.stamp.sec == d.seq)
        return tuple(float(x) for x in newest_command(np.asarray(step.observation, np.float32)))

    try:
        d.wait(lambda: teleop.get_subscription_count() >= 1)
        assert shown() == (0.0, 0.0, 0.0)  # the policy's command_velocity default
        joystick.linear.x, joystick.angular.z = 50.0, -0.2
        # The command a step shows is checked on the step that first shows it: one more step after the loop
        # lapsed it on a host stalled for command_timeout in between.
        for _ in range(500):  # a teleop repeats its command (10 Hz for teleop_twist_joy); here every tick
            teleop.publish(joystick)
            if (seen := shown()) != (0.0, 0.0, 0.0):
                break
        assert seen == pytest.approx((1.0, 0.0, -0.2), abs=1e-6)  # vx held to command_max's 1.0
        joystick.linear.x, joystick.linear.y, joystick.angular.z = 0.3, -0.1, 0.2
        for _ in range(500):
            last_sent = time.monotonic()  # the node can receive a command no earlier than it was sent
            teleop.publish(joystick)
            if (seen := shown())[0] != pytest.approx(1.0):
                break
        assert seen == pytest.approx((0.3, -0.1, 0.2), abs=1e-6)  # inside the limits: followed as sent
        assert all(newest_command(np.asarray(s.observation, np.float32))[0] <= 1.0 + 1e-6 for s in steps)
        # The teleop dies: no stop is sent. Its command lapses after command_timeout (0.5 s), not before. The
        # lapse counts from the last command's arrival, which on a loaded host can be well before this line:
        # the bound is from its sending, which is before its arrival.
        d.wait(lambda: shown() == (0.0, 0.0, 0.0))
        assert time.monotonic() - last_sent > 0.5
    finally:
        d.close()
    node.terminate()
    out, _ = node.communicate(timeout=30)
    assert "velocity command (50, 0, -0.2) is outside the command limits (vx 0..1, vy -0.3..0.3, yaw rate " \
           "-0.5..0.5): following (1, 0, -0.2)" in out, out[-2000:]
    assert "s (command_timeout 0.5 s): following the standing command (0, 0, 0; command_velocity)" in out


def test_an_update_far_larger_than_the_policy_is_refused_unread_and_a_verdict_on_a_forgery_is_not_signed(node):
    """Anyone on the domain can publish a PolicyUpdate. A 256 MB one, decoded on the tick thread, stopped the
    answers for 2-3 s (the watchdog damps after 0.1 s): one over 4 times the running policy's size is now
    refused unread. A forged one was refused, but in a verdict signed with the robot's key, which the learner
    believes: it threw its newest version away. A verdict on an update that is not signed with the key is
    not signed now, and names the bytes it judged."""
    import hashlib
    import os

    d = Driver()
    try:
        d.tick()
        n = len(d.status)
        big = os.urandom(2**21)  # 2 MB; the running policy is ~20 KB
        d.update_pub.publish(d.PolicyUpdate(version=9, sha256=hashlib.sha256(big).hexdigest(), safetensors=big,
                                            spec_json="{}", signature=b"x" * 32))
        d.wait(lambda: len(d.status) > n)
        assert d.status[n].message.startswith("an update of 2.0 MB, more than 1.1 MB (4 times this policy's size)")
        junk = b"junk"
        n = len(d.status)
        d.update_pub.publish(d.PolicyUpdate(version=1, sha256=hashlib.sha256(junk).hexdigest(), safetensors=junk,
                                            spec_json="{}", signature=b"x" * 32))  # under the running version's number
        d.wait(lambda: len(d.status) > n)
        st = d.status[n]
        values = {kv.key: kv.value for kv in st.values}
        assert "signature does not match" in st.message and values["accepted"] == "False"
        assert "signature" not in values and values["sha256"] == hashlib.sha256(junk).hexdigest()
        assert d.tick().policy_version == 1  # still answering, with its own policy
        # bytes that are no PolicyUpdate (a damaged sender, another type on the topic): before, no verdict at all
        n = len(d.status)
        d.update_pub.publish(b"\x00\x01\x00\x00" + b"\xff" * 12)
        d.wait(lambda: len(d.status) > n)
        assert d.status[n].message.startswith("an update of 16 bytes that is no PolicyUpdate message (")
        assert [(kv.key, kv.value) for kv in d.status[n].values] == [("accepted", "False")]
        assert d.tick().policy_version == 1
    finally:
        d.close()

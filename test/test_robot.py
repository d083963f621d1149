"""Robot rules without ROS: joint mapping, observation, reward, safety, policy-update verification."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from uni_o4_ros.learning.normalizer import StateNormalizer
from uni_o4_ros.learning.policy import make_policy
from uni_o4_ros.robot import go1
from uni_o4_ros.robot.episodes import StepPairing
from uni_o4_ros.robot.observation import ObservationBuilder, command_vector
from uni_o4_ros.robot.policy_update import UpdateRejected, encode_update, sign_update, verify_update
from uni_o4_ros.robot.reward import reward
from uni_o4_ros.robot.safety import (
    BatteryGuard,
    MotorDropout,
    RemoteCombo,
    SafetyConfig,
    SafetyFilter,
    Watchdog,
    fallen,
)


def test_joint_order_mapping_between_package_and_sdk():
    sdk_names = [f"{leg}_{j}" for leg in go1.SDK_LEGS for j in ("hip", "thigh", "calf")]
    assert [sdk_names[i] for i in go1.POLICY_FROM_SDK] == list(go1.JOINTS)
    x = np.arange(12.0)
    np.testing.assert_array_equal(go1.from_sdk(go1.to_sdk(x)), x)
    assert go1.to_sdk(go1.DEFAULT_Q)[0] == pytest.approx(-0.1)  # SDK slot 0 is FR hip


def test_action_to_joint_targets_scales_hips_by_half():
    q = go1.action_to_joint_targets(np.ones(12))
    np.testing.assert_allclose(q - go1.DEFAULT_Q, np.tile([0.125, 0.25, 0.25], 4), rtol=1e-6)


def test_gravity_and_roll_pitch_from_quaternion():
    np.testing.assert_allclose(go1.projected_gravity([1, 0, 0, 0]), [0, 0, -1], atol=1e-7)
    roll = 0.3
    q = [np.cos(roll / 2), np.sin(roll / 2), 0, 0]
    np.testing.assert_allclose(go1.projected_gravity(q), [0, -np.sin(roll), -np.cos(roll)], atol=1e-6)
    assert go1.roll_pitch(q) == pytest.approx((roll, 0.0), abs=1e-9)


def test_observation_layout_and_history_order():
    b = ObservationBuilder()
    cmd = command_vector(1.0, 0.0, 0.5)
    q = go1.DEFAULT_Q + 0.1
    dq = np.full(12, 2.0)
    f = b.frame([1, 0, 0, 0], cmd, q, dq, np.full(12, 20.0))
    assert f.shape == (58,)
    np.testing.assert_allclose(f[:3], [0, 0, -1])
    np.testing.assert_allclose(f[3:6], [2.0, 0.0, 0.125])  # vx * 2, vy * 2, yaw * 0.25
    np.testing.assert_allclose(f[18:30], 0.1, rtol=1e-5)
    np.testing.assert_allclose(f[30:42], 0.1)  # dq * 0.05
    np.testing.assert_allclose(f[42:54], 10.0)  # last action clipped to +-10
    assert np.all(np.abs(f[54:]) <= 1.0)
    h1 = b.push(f)
    f2 = f.copy()
    f2[0] = 7.0
    h2 = b.push(f2)
    assert h2.shape == (290,)
    np.testing.assert_array_equal(h2[-58:], f2)  # newest last
    np.testing.assert_array_equal(h2[-116:-58], h1[-58:])
    with pytest.raises(ValueError):
        b.push(np.full(58, np.nan, np.float32))


def test_reward_matches_hand_computation():
    r, terms = reward(v_xy=np.array([0.8, 0.0]), v_cmd_xy=np.array([1.0, 0.0]), w_z=0.1, w_cmd=0.0, v_z=0.5,
                      tau=np.full(12, 2.0), dq=np.full(12, 1.0), ddq=np.full(12, 10.0),
                      action=np.zeros(12), last_action=np.full(12, 0.5))
    r_pos = 0.02 * np.exp(-0.04 / 0.25) + 0.01 * np.exp(-0.01 / 0.25)
    r_neg = -(4e-4 * 0.25 + 2e-5 * 48 + 2e-5 * 12 + 5e-9 * 1200 + 2e-3 * 3)
    assert r == pytest.approx(r_pos * np.exp(0.02 * r_neg))
    assert terms["torques"] == pytest.approx(-2e-5 * 48)


def test_safety_filter_limits_rate_range_and_torque():
    cfg = SafetyConfig(max_target_step=0.1, torque_fraction=0.5)
    f = SafetyFilter(cfg)
    q = go1.DEFAULT_Q.copy()
    f.reset(q)
    cmd = f.apply(q + 1.0, q, np.zeros(12))
    assert np.all(cmd.q - q <= 0.1 + 1e-6)  # rate limit
    tau = cmd.kp * (cmd.q - q)
    assert np.all(np.abs(tau) <= 0.5 * go1.TAU_MAX + 1e-4)
    for _ in range(100):
        cmd = f.apply(np.full(12, 10.0), cmd.q, np.zeros(12))
    assert np.all(cmd.q <= go1.Q_MAX + 1e-6)  # joint limits
    assert f.apply(np.full(12, np.nan), q, np.zeros(12)).damping


def test_a_robot_sagged_in_damping_rises_at_activation_step_until_it_reaches_the_policys_targets():
    """A Go1 folded in damping (calves at -2.6, thighs at 1.5), re-armed or with its policy back after the
    watchdog, sprang to the policy's standing targets at max_target_step, 0.2 rad a tick (10 rad/s). With
    activation_step (robot.yaml 0.05, walk-these-ways' ramp) it rises at that step until the policy's targets are
    within max_target_step, then follows at max_target_step (a walking gait's targets move faster than 0.05 a tick:
    waiting to reach them exactly held the robot at 0.05 a tick for good, and it could not walk)."""
    from uni_o4_ros.robot.controller import ControllerCore, Mode

    up, stand = np.array([1.0, 0.0, 0.0, 0.0]), go1.DEFAULT_Q.copy()
    folded = np.where(np.arange(12) % 3 == 2, -2.6, np.where(np.arange(12) % 3 == 1, 1.5, stand)).astype(np.float32)
    core = ControllerCore(SafetyConfig(watchdog_timeout=0.1, activation_step=0.05))

    def rise(q: np.ndarray, t0: float) -> list[np.ndarray]:
        targets = []
        for k in range(40):
            core.on_command(stand, 1, now=t0 + 0.02 * k)
            out = core.tick(up, q, np.zeros(12), t0 + 0.02 * k + 0.001)
            assert out.mode == Mode.ACTIVE
            targets.append(out.command.q)
            q = out.command.q  # a stiff leg follows its target
        return targets

    targets = rise(folded, 1.0)
    steps = np.abs(np.diff([folded, *targets], axis=0)).max(axis=1)
    # 1.1 rad at the calves: 0.05 a tick until 0.2 (max_target_step) remains, then at most 0.2 a tick
    ramp = int(np.argmax(steps > 0.05 + 1e-5))
    assert ramp in (18, 19) and np.allclose(steps[:ramp], 0.05, atol=1e-5) and steps.max() <= 0.2 + 1e-6
    assert np.allclose(targets[ramp], stand) and not core.filter.ramping
    core.on_command(stand + 0.15, 1, now=2.0)
    assert np.abs(core.tick(up, stand, np.zeros(12), 2.001).command.q - stand).max() == pytest.approx(0.15)
    # The policy silent past the watchdog: damped, it sags; when it is back the rise is slow again.
    assert core.tick(up, stand, np.zeros(12), 2.2).mode == Mode.DAMPING
    assert np.abs(np.diff([folded, rise(folded, 3.0)[0]], axis=0)).max() == pytest.approx(0.05)
    # A command late by less than a Go1 takes to sag (SAG_S), mid-stride: the policy's own rate at once
    walking = rise(stand, 4.0)[-1]
    assert core.tick(up, walking, np.zeros(12), 4.9).mode == Mode.DAMPING  # 0.1 s without a command
    core.on_command(walking + 0.15, 1, now=4.95)
    out = core.tick(up, walking, np.zeros(12), 4.951)
    assert out.mode == Mode.ACTIVE and np.abs(out.command.q - walking).max() == pytest.approx(0.15)
    # 0 (the simulator's default): max_target_step from the first tick, as before
    plain = ControllerCore(SafetyConfig(watchdog_timeout=0.1))
    plain.on_command(stand, 1, now=1.0)
    assert np.abs(plain.tick(up, folded, np.zeros(12), 1.001).command.q - folded).max() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="activation_step"):
        SafetyConfig(activation_step=-0.1)


def test_watchdog_and_fall():
    w = Watchdog(timeout=0.1)
    assert w.expired(0.0)
    w.feed(1.0)
    assert not w.expired(1.05) and w.expired(1.11)
    assert fallen(1.2, 0.0, 1.0) and fallen(0.0, -1.1, 1.0) and not fallen(0.5, 0.5, 1.0)


@pytest.fixture
def update():
    torch.manual_seed(0)
    pol = make_policy(290, 12, hidden=(32, 32), mean_activation="none")
    norm = StateNormalizer(np.zeros(290), np.ones(290))
    return pol, norm, encode_update(pol, norm, version=5, key=b"k")


def _verify(msg, current=4, key=b"k"):
    return verify_update(msg["version"], msg["sha256"], msg["safetensors"], msg["spec_json"], msg["signature"],
                         current_version=current, expected_obs_dim=290, expected_act_dim=12, key=key)


def test_a_valid_update_is_accepted_and_reproduces_the_policy(update):
    pol, _, msg = update
    got = _verify(msg)
    obs = torch.randn(3, 290)
    torch.testing.assert_close(got.policy(obs)[0], pol(obs)[0])
    assert got.version == 5


def _resign(msg, blob):
    return sign_update(dict(msg, safetensors=blob, sha256=hashlib.sha256(blob).hexdigest()), b"k")


@pytest.mark.parametrize("corrupt, reason, authentic", [
    (lambda m: sign_update(dict(m, version=4), b"k"), "not newer", True),
    (lambda m: sign_update(dict(m, sha256="0" * 64), b"k"), "sha256 mismatch", True),
    (lambda m: dict(m, signature=b"x" * 32), "signature does not match", False),
    (lambda m: dict(m, signature=b""), "it is not signed", False),
    # a signed version 5 captured and offered again as version 6 (which would pass "newer")
    (lambda m: dict(m, version=6), "signature does not match", False),
    # unsigned junk under a number that is not newer: judged by its signature first, so the verdict on it is
    # not one the learner may act on (a forger could otherwise have it throw its newest version away)
    (lambda m: dict(m, version=4, safetensors=b"junk", signature=b"x" * 32), "signature does not match", False),
    (lambda m: _resign(m, m["safetensors"][: len(m["safetensors"]) // 2]), "not a valid safetensors", True),
    (lambda m: _resign(m, b"\x00" * 64), "not a valid safetensors", True),
])
def test_bad_updates_are_refused_with_a_reason(update, corrupt, reason, authentic):
    _, _, msg = update
    with pytest.raises(UpdateRejected, match=reason) as refused:
        _verify(corrupt(msg))
    assert refused.value.authentic == authentic


def test_an_update_that_changes_the_running_policys_architecture_is_refused(update):
    """Signed, finite, right dims, but a wider log-std range: the shift check compares mean actions, so the
    sampled actions of such an update moved the joint targets 13 rad a tick against 0.3 (the audit's run)."""
    pol, _, msg = update
    spec = dict(json.loads(msg["spec_json"]), log_std_max=4.0)
    wider = _resign(dict(msg, spec_json=json.dumps(spec)), msg["safetensors"])
    assert _verify(wider).version == 5  # nothing else compares specs
    with pytest.raises(UpdateRejected, match="architecture differs from the running policy's: log_std_max 4.0"):
        verify_update(wider["version"], wider["sha256"], wider["safetensors"], wider["spec_json"], wider["signature"],
                      current_version=4, expected_obs_dim=290, expected_act_dim=12, key=b"k", expected_spec=pol.spec)


def _tampered(pol, norm, edit):
    from safetensors.torch import load

    msg = encode_update(pol, norm, version=5, key=b"k")
    tensors = load(msg["safetensors"])
    edit(tensors)
    return _resign(msg, save_safetensors(tensors))


@pytest.mark.parametrize("edit, reason", [
    (lambda t: t.__setitem__("policy.body.net.0.weight", t["policy.body.net.0.weight"] * float("nan")),
     "non-finite"),
    (lambda t: t.__setitem__("policy.body.net.0.weight", torch.zeros(1, 290, 16)), "shape"),
    (lambda t: t.pop("normalizer.std"), "missing"),
    (lambda t: t.__setitem__("extra", torch.zeros(1)), "extra"),
    # finite in float64, inf in the policy's float32 (and a float16 layer ended the forward pass in a dtype error)
    (lambda t: t.__setitem__("normalizer.mean", torch.full((290,), 1e300, dtype=torch.float64)),
     "normalizer.mean is float64, not float32"),
    (lambda t: t.__setitem__("policy.body.net.0.bias", t["policy.body.net.0.bias"].half()), "is float16"),
])
def test_wrong_shape_nan_or_renamed_tensors_are_refused(update, edit, reason):
    pol, norm, _ = update
    with pytest.raises(UpdateRejected, match=reason):
        _verify(_tampered(pol, norm, edit))


def test_each_computer_makes_its_own_update_key_once_and_a_bad_key_file_is_a_clear_error(tmp_path, monkeypatch):
    """hmac_key_file: auto (the default) is this computer's key, made on first use, readable by its user only;
    the policy node and the learner starting together find the same one."""
    import stat
    from concurrent.futures import ThreadPoolExecutor

    from uni_o4_ros.robot.policy_update import UpdateKeyError, default_key_path, load_update_key

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with ThreadPoolExecutor(8) as pool:  # nodes starting at once: one key, never half of one
        keys = list(pool.map(lambda _: load_update_key("auto"), range(8)))
    path = default_key_path()
    assert path == tmp_path / "config" / "uni_o4_ros" / "policy_update.key"
    assert {k for k, _ in keys} == {path.read_bytes().strip()} and len(keys[0][0]) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and [p.name for p in path.parent.iterdir()] == [path.name]
    assert load_update_key(str(path)) == (keys[0][0], path)  # the same key named by its path (a copied one)
    assert load_update_key("") == (None, None)  # unsigned, on purpose
    with pytest.raises(UpdateKeyError, match="missing.key: No such file"):
        load_update_key(str(tmp_path / "missing.key"))  # a path is never made up: a typo must not pass
    for name, text, says in (("empty.key", "\n", "holds 0 bytes, fewer than 32"),
                             ("short.key", "k\n", "holds 1 bytes, fewer than 32: too short")):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o600)
        with pytest.raises(UpdateKeyError, match=says):
            load_update_key(str(tmp_path / name))
    # A copy left open to others (written by hand under umask 022, say): anyone could sign updates with it.
    copy = tmp_path / "copy.key"
    copy.write_bytes(path.read_bytes())
    for mode, says in ((0o644, "can be read by other users (mode 644)"), (0o640, "can be read by other users"),
                       (0o602, "can be written by other users")):
        copy.chmod(mode)
        with pytest.raises(UpdateKeyError, match=re.escape(says) + r".*Run: chmod 600 " + re.escape(str(copy))):
            load_update_key(str(copy))
    copy.chmod(0o400)  # read-only for its user is fine
    assert load_update_key(str(copy)) == (keys[0][0], copy)
    uid = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: uid + 1)  # the node runs as another user than the file's owner,
    with pytest.raises(UpdateKeyError, match="belongs to another user"):  # who could swap in their own key
        load_update_key(str(copy))


def test_a_policy_status_is_believed_only_when_signed_with_the_readers_key():
    """The learner goes back to an older version on a refusal: it must be its own robot's verdict."""
    from uni_o4_ros.robot.policy_update import Refusal, refusal_in, sign_status

    values = {"version": "7", "accepted": "False", "running": "6"}
    signed = {**values, "signature": sign_status(values, "too far", b"k")}
    assert refusal_in(signed, "too far", b"k") == Refusal(7, 6, signed=True)
    named = {**values, "sha256": "ab" * 32}
    assert refusal_in({**named, "signature": sign_status(named, "too far", b"k")}, "too far", b"k").sha256 == "ab" * 32
    assert refusal_in(signed, "too far", None) == Refusal(7, 6, signed=True)  # a learner without a key believes all
    assert not refusal_in(signed, "other reason", b"k").signed  # the message is signed too
    assert not refusal_in({**signed, "running": "5"}, "too far", b"k").signed
    assert not refusal_in(values, "too far", b"k").signed and not refusal_in(signed, "too far", b"other").signed
    assert refusal_in({**signed, "accepted": "True"}, "too far", b"k") is None  # not a refusal
    assert refusal_in({"accepted": "False", "version": "v1"}, "", b"k") is None  # not a policy node's status
    assert not refusal_in({**values, "signature": "é"}, "too far", b"k").signed  # not an error in the learner


def test_an_update_signed_for_another_run_of_the_policy_node_is_refused_and_its_verdict_is_not_acted_on():
    """Each policy node run draws a session; updates are signed for it. An update of an earlier run (a bag of
    yesterday's played beside the robot), signed with the same key and numbered above the running version,
    used to pass. Refused now, with a verdict the learner does not act on (it signs its newest version again
    for the new run by itself)."""
    from uni_o4_ros.msg import PolicyUpdate
    from uni_o4_ros.robot.policy_runner import PolicyRunner
    from uni_o4_ros.robot.policy_update import StaleSession, refusal_in, sign_status
    from uni_o4_ros.robot.update_session import Announcement, session_in, session_status

    torch.manual_seed(0)
    pol = make_policy(290, 12, hidden=(32, 32), mean_activation="none")
    norm = StateNormalizer(np.zeros(290), np.ones(290))
    yesterday, today = PolicyRunner(pol, norm, version=1, key=b"k"), PolicyRunner(pol, norm, version=1, key=b"k")
    assert yesterday.session != today.session and len(today.session) == 32
    old = encode_update(pol, norm, version=9, key=b"k", session=yesterday.session)
    assert yesterday.offer(*(old[k] for k in ("version", "sha256", "safetensors", "spec_json", "signature",
                                              "session"))).accepted
    verdict = today.offer(*(old[k] for k in ("version", "sha256", "safetensors", "spec_json", "signature", "session")))
    assert not verdict.accepted and verdict.stale_session and not verdict.authentic
    assert "signed for session " + yesterday.session[:8] in verdict.reason
    assert today.version == 1 and today.next_version == 1
    # The session is signed: renaming it in a captured update breaks the signature.
    renamed = dict(old, session=today.session)
    verdict = today.offer(*(renamed[k] for k in ("version", "sha256", "safetensors", "spec_json", "signature",
                                                 "session")))
    assert not verdict.accepted and "signature does not match" in verdict.reason and not verdict.stale_session
    with pytest.raises(StaleSession, match="signed for no session"):  # a learner that never heard one
        unnamed = encode_update(pol, norm, version=9, key=b"k")
        verify_update(9, unnamed["sha256"], unnamed["safetensors"], unnamed["spec_json"], unnamed["signature"],
                      current_version=1, expected_obs_dim=290, expected_act_dim=12, key=b"k",
                      session=unnamed["session"], expected_session=today.session)
    fresh = encode_update(pol, norm, version=9, key=b"k", session=today.session)
    assert today.offer(*(fresh[k] for k in ("version", "sha256", "safetensors", "spec_json", "signature",
                                            "session"))).accepted
    assert "session" in PolicyUpdate.get_fields_and_field_types()  # the message carries it

    # The announcement a learner believes: its own robot's, signed; and a stale-session verdict is no refusal.
    values, message = session_status(today.session, 1, b"k", started_ns=7)
    assert session_in(values, message, b"k") == Announcement(today.session, 7, True)
    assert session_in(values, message, None) == Announcement(today.session, 7, True)  # a learner without a key
    assert not session_in(values, message, b"other").signed
    assert not session_in({**values, "session": yesterday.session}, message, b"k").signed
    assert not session_in({**values, "started_ns": "9"}, message, b"k").signed  # the start time is signed too
    assert session_in({"version": "1"}, "", None) is None
    stale = {"version": "9", "accepted": "False", "running": "1", "stale_session": "True"}
    assert refusal_in({**stale, "signature": sign_status(stale, "x", b"k")}, "x", b"k") is None


def test_a_hot_motor_is_a_fault_until_it_has_cooled_and_is_warned_of_before_each_heating():
    from uni_o4_ros.robot.safety import MotorHeatGuard

    names = tuple(f"m{i}" for i in range(12))
    off = MotorHeatGuard(0.0, names)
    assert off.fault(np.full(12, 120)) is None and off.warning(np.full(12, 120)) is None  # 0: not checked
    guard, t = MotorHeatGuard(80.0, names), np.full(12, 30.0)
    said = []
    for hot in (60, 70, 72, 75, 76, 79, 80, 78, 76, 75, 74, 60, 71, 77):
        t[3] = hot
        said.append((hot, guard.warning(t), guard.fault(t)))
    warned = [h for h, w, _ in said if w]
    assert warned == [70, 75, 71, 77]  # 10 and 5 degrees before, once each, and again after a cool-down
    assert "motor m3 at 70 C: the e-stop engages at 80 C" in said[1][1]
    faulted = [h for h, _, f in said if f]
    assert faulted == [80, 78, 76]  # from the limit until 5 degrees below it
    assert "motor m3 at 78 C (max_motor_temperature 80 C, re-arming at 75 C or cooler)" in said[7][2]


def test_a_learner_signs_for_the_newest_run_it_can_check_and_a_replayed_announcement_does_not_move_it():
    """`ros2 bag play` of an old bag replays its policy_session announcement too, signed with the same key: a
    learner that took it signed every later update for a run that is gone, and the robot refused them all."""
    from uni_o4_ros.robot.update_session import Announcement, SessionChoice

    choice = SessionChoice()
    other_key = Announcement("a" * 32, 100, signed=False)  # the robot's, heard by a learner with another key
    assert choice.hear(other_key) == "switch"  # taken until a checkable one comes: the robot tells it why it refuses
    today = Announcement("b" * 32, 200, signed=True)
    assert choice.hear(today) == "switch" and choice.current == today
    assert choice.hear(Announcement("c" * 32, 150, signed=True)) == "earlier"  # yesterday's, played back
    assert choice.hear(Announcement("d" * 32, 300, signed=False)) == "unchecked"  # a forgery, or another suite
    assert choice.hear(today) == "same" and choice.current == today
    restarted = Announcement("e" * 32, 400, signed=True)
    assert choice.hear(restarted) == "switch" and choice.current == restarted
    # The same run heard first unchecked, then checked: from then on a forged one cannot displace it.
    choice = SessionChoice()
    assert choice.hear(Announcement("f" * 32, 500, signed=False)) == "switch"
    assert choice.hear(Announcement("f" * 32, 500, signed=True)) == "same" and choice.current.signed
    assert choice.hear(Announcement("g" * 32, 600, signed=False)) == "unchecked"


def test_a_policy_node_restarted_with_its_clock_set_back_is_signed_for_once_it_refuses_the_learners_update():
    """A robot computer with no RTC and no NTP (in the field) restarts its policy node with the clock set back:
    the run announces a start before the held run's, which reads as that run's announcement played back. The
    learner signed for the dead run until restarted. The new run's refusal of an update signed for the held run
    names both runs (signed): the refusing run is alive, and is signed for from then on."""
    from uni_o4_ros.robot.policy_runner import PolicyRunner
    from uni_o4_ros.robot.policy_update import refusal_in, sign_status
    from uni_o4_ros.robot.update_session import Announcement, SessionChoice, stale_answer_in

    torch.manual_seed(0)
    pol = make_policy(290, 12, hidden=(8,), mean_activation="none")
    norm = StateNormalizer(np.zeros(290), np.ones(290))
    ahead = Announcement("a" * 32, 4 * 10**18, signed=True)  # the run before, whose clock was ahead (year 2096)
    choice = SessionChoice()
    assert choice.hear(ahead) == "switch"
    runner = PolicyRunner(pol, norm, version=1, key=b"k")  # restarted: started now, before `ahead` by its clock
    assert choice.hear(Announcement(runner.session, runner.started_ns, True)) == "earlier"
    sent = encode_update(pol, norm, version=2, key=b"k", session=ahead.session)
    verdict = runner.offer(*(sent[k] for k in ("version", "sha256", "safetensors", "spec_json", "signature",
                                               "session")))
    assert verdict.stale_session and not verdict.accepted
    # policy_status as the policy node sends it: both runs named, signed with the robot's key
    values = {"version": "2", "accepted": "False", "running": "1", "sha256": verdict.sha256, "stale_session": "True",
              "session": runner.session, "started_ns": str(runner.started_ns), "refused_session": ahead.session}
    values["signature"] = sign_status(values, verdict.reason, b"k")
    answer = stale_answer_in(values, verdict.reason, b"k")
    assert answer.run == Announcement(runner.session, runner.started_ns, True)
    assert (answer.refused_session, answer.version, answer.sha256) == (ahead.session, 2, sent["sha256"])
    assert refusal_in(values, verdict.reason, b"k") is None  # a stale answer never has the learner go back
    assert choice.answered(answer.run, answer.refused_session) == "switch" and choice.current == answer.run
    assert choice.answered(answer.run, answer.refused_session) == "same"  # heard again: no second send
    resigned = encode_update(pol, norm, version=2, key=b"k", session=choice.current.session)
    assert runner.offer(*(resigned[k] for k in ("version", "sha256", "safetensors", "spec_json", "signature",
                                                "session"))).accepted
    # Once taken, announcements are still judged against the latest start held: one played back from between
    # the two runs' starts is ignored, not taken (the run held now started before it, by its set-back clock).
    assert choice.hear(Announcement("c" * 32, runner.started_ns + 10**9, True)) == "earlier"
    # A refusal played back, of an update for a run not held, moves nothing; nor one not signed with the
    # learner's key, nor one whose signature does not cover the runs it names, nor one that names no run.
    assert choice.answered(Announcement("d" * 32, 5, True), ahead.session) == "other"
    assert not stale_answer_in(values, verdict.reason, b"other").run.signed
    for field, forged in (("session", "b" * 32), ("started_ns", "5"), ("refused_session", "e" * 32)):
        assert not stale_answer_in({**values, field: forged}, verdict.reason, b"k").run.signed
    assert stale_answer_in({k: v for k, v in values.items() if k != "session"}, verdict.reason, b"k") is None
    assert stale_answer_in({**values, "stale_session": "False"}, verdict.reason, b"k") is None
    assert choice.answered(Announcement("f" * 32, 1, signed=False), runner.session) == "unchecked"
    # Two policy nodes with this key on the domain: the run left answers too. The learner stays, rather than
    # send its weights to and fro for ever.
    assert choice.answered(ahead, runner.session) == "both" and choice.current == answer.run


def test_wrong_dims_in_spec_are_refused(update):
    pol, norm, msg = update
    spec = json.loads(msg["spec_json"])
    spec["obs_dim"] = 58
    bad = _resign(dict(msg, spec_json=json.dumps(spec)), msg["safetensors"])
    with pytest.raises(UpdateRejected, match="do not match the robot"):
        _verify(bad)
    # A negative layer width: torch's own error, which in the policy node's verifier thread vanished with the
    # update (no status, no log line); now a refusal like any other.
    spec = dict(json.loads(msg["spec_json"]), hidden=[-5])
    with pytest.raises(UpdateRejected, match="describes no policy that can be built"):
        _verify(_resign(dict(msg, spec_json=json.dumps(spec)), msg["safetensors"]))
    # JSON that is no object: an AttributeError, answered unsigned, and the learner that sent it waited for ever
    for spec_json in ("null", "[1, 2]"):
        with pytest.raises(UpdateRejected, match="unreadable spec_json: a JSON") as refused:
            _verify(_resign(dict(msg, spec_json=spec_json), msg["safetensors"]))
        assert refused.value.authentic and refused.value.sha256 == msg["sha256"]


def test_an_update_that_would_move_the_joints_far_is_refused_before_it_acts():
    """Well-formed updates (finite, right shapes, signed) from a learner that diverged. The runner compares
    what an update would command on the states it just acted on, and on the robot standing, with what the
    running policy commands, and refuses one that moves the joint targets more than max_update_shift."""
    import copy

    from uni_o4_ros.robot.go1 import DEFAULT_Q
    from uni_o4_ros.robot.policy_runner import PolicyRunner

    torch.manual_seed(0)
    pol = make_policy(290, 12, hidden=(32, 32), mean_activation="none")
    norm = StateNormalizer(np.zeros(290), np.ones(290))

    def offer(runner, policy, version):
        m = encode_update(policy, norm, version=version, session=runner.session)
        verdict = runner.offer(m["version"], m["sha256"], m["safetensors"], m["spec_json"], m["signature"],
                               m["session"])
        return verdict.accepted, verdict.reason

    def edited(edit):
        p = copy.deepcopy(pol)
        with torch.no_grad():
            edit(p)
        return p

    rng = np.random.default_rng(0)
    runner = PolicyRunner(pol, norm, version=1)
    assert runner.max_update_shift == 1.0  # the default, as in robot.yaml
    # Before any state: compared on the robot standing alone (a learner's newest weights reach a starting node).
    ok, reason = offer(runner, edited(lambda p: p.body.net[-1].bias[0, 0, :12].add_(8.0)), 2)
    assert not ok and "on 0 recent states and the robot standing" in reason, reason
    assert "max_update_shift 1.0 rad" in reason
    walk = [(np.array([1.0, 0.0, 0.0, 0.0]), DEFAULT_Q + rng.normal(0, 0.1, 12), rng.normal(0, 1, 12))
            for _ in range(300)]
    for state in walk:
        runner.tick(*state)
    # A PPO-sized step (every weight 1 % off) passes, and reports how far it moves the joints.
    ok, reason = offer(runner, edited(lambda p: [w.mul_(1.01) for w in p.parameters()]), 2)
    assert ok and "moves the joint targets 0.00" in reason and "on 250 recent states" in reason, reason
    # Mean actions 8 units off (2 rad at the knees), or overflowing to inf: refused; version 2 acts next.
    ok, reason = offer(runner, edited(lambda p: p.body.net[-1].bias[0, 0, :12].add_(8.0)), 3)
    assert not ok and "moves the joint targets 2.0" in reason and "a learner that diverged" in reason, reason
    ok, reason = offer(runner, edited(lambda p: p.body.net[0].weight.fill_(1e38)), 3)
    assert not ok and "actions are not finite" in reason, reason
    assert runner.tick(*walk[0]).policy_version == 2
    # 0 switches the check off (the form checks still apply).
    unchecked = PolicyRunner(pol, norm, version=1, max_update_shift=0.0)
    assert offer(unchecked, edited(lambda p: p.body.net[-1].bias[0, 0, :12].add_(8.0)), 2)[0]
    with pytest.raises(ValueError, match="max_update_shift"):
        PolicyRunner(pol, norm, max_update_shift=-1.0)


def test_updates_staged_or_offered_again_non_finite_or_noisier_never_reach_the_motors_unchecked():
    """What the review found past the shift check: max_update_shift 0 switched the non-finite check off too;
    updates staged while no tick ran were each judged against the one staged before (three steps of 0.8 rad, one
    jump of 2.4 at the re-arm); weights refused on the states of a walk passed once the robot stood; and with
    sampled actions a noise 20 times wider passed as "0.000 rad" (now measured at 2 std either side of the mean).
    """
    import copy

    from uni_o4_ros.robot.go1 import DEFAULT_Q
    from uni_o4_ros.robot.policy_runner import PolicyRunner

    torch.manual_seed(0)
    pol = make_policy(290, 12, hidden=(32, 32), mean_activation="none")
    norm = StateNormalizer(np.zeros(290), np.ones(290))

    def offer(runner, policy, version):
        m = encode_update(policy, norm, version=version, session=runner.session)
        return runner.offer(m["version"], m["sha256"], m["safetensors"], m["spec_json"], m["signature"],
                            m["session"])

    def edited(edit):
        p = copy.deepcopy(pol)
        with torch.no_grad():
            edit(p)
        return p

    def knees(by):  # mean actions `by` units off at every joint: by / 4 rad at the thighs and calves
        return edited(lambda p: p.body.net[-1].bias[0, 0, :12].add_(by))

    up = np.array([1.0, 0.0, 0.0, 0.0])
    overflowing = edited(lambda p: p.body.net[0].weight.fill_(1e38))
    unchecked = PolicyRunner(pol, norm, version=1, max_update_shift=0.0)
    verdict = offer(unchecked, overflowing, 2)
    assert not verdict.accepted and "actions are not finite" in verdict.reason and verdict.authentic, verdict
    assert unchecked.tick(up, DEFAULT_Q, np.zeros(12)).policy_version == 1

    runner = PolicyRunner(pol, norm, version=1)  # no tick yet: as in an e-stop, nothing swaps an update in
    first = offer(runner, knees(3.2), 2)
    assert first.accepted and "0.800 rad from v1's" in first.reason, first.reason
    second = offer(runner, knees(6.4), 3)  # 0.8 rad from version 2, 1.6 from what the motors run
    assert not second.accepted and "1.600 rad from v1's" in second.reason, second.reason
    assert runner.tick(up, DEFAULT_Q, np.zeros(12)).policy_version == 2

    # Refused while walking, the same weights are refused again while standing, under any version.
    rng = np.random.default_rng(0)
    walker = PolicyRunner(pol, norm, version=1)
    for _ in range(250):
        walker.tick(up, DEFAULT_Q + rng.normal(0, 0.3, 12), np.full(12, 3.0))  # every joint turning
    moving = np.zeros(290, bool)  # the joint speeds' columns: 0 in every state of a robot standing still
    for k in range(5):
        moving[58 * k + 3 + 15 + 12: 58 * k + 3 + 15 + 24] = True
    far = edited(lambda p: p.body.net[0].weight.add_(50.0 * torch.from_numpy(moving).float()[None, :, None]))
    assert not offer(walker, far, 2).accepted
    for _ in range(250):
        walker.tick(up, DEFAULT_Q, np.zeros(12))
    assert offer(PolicyRunner(pol, norm, version=1), far, 2).accepted  # a fresh node standing: it would pass
    again = offer(walker, far, 3)
    assert not again.accepted and "refused before in this run of the policy node" in again.reason, again.reason
    assert again.authentic  # the learner may act on it

    # Sampling: the noise widened to the spec's widest (log-std bias +5, clamped) moves the mean by nothing.
    noisier = edited(lambda p: p.body.net[-1].bias[0, 0, 12:].add_(5.0))
    verdict = offer(PolicyRunner(pol, norm, version=1), noisier, 2)
    assert verdict.accepted and "0.000 rad from" in verdict.reason, verdict.reason  # acting with the mean
    verdict = offer(PolicyRunner(pol, norm, version=1, deterministic=False, max_update_shift=0.3), noisier, 2)
    assert not verdict.accepted and "at the mean action and 2 std either side" in verdict.reason, verdict.reason
    assert float(re.search(r"moves the joint targets ([\d.]+) rad", verdict.reason)[1]) > 0.4


def test_a_version_whose_action_turns_non_finite_is_withdrawn_and_the_one_before_answers():
    """Finite on every state it was checked on, an update can still overflow on a later one: a normaliser std
    of 1e-45 on the velocity command, checked while the command was 0, meets a command of 0.3 m/s. Its NaN went
    out as joint targets and into the next observation, which ended the policy node. Now the version it replaced
    answers that very tick, the withdrawal is said, and the weights are refused if offered again."""
    from uni_o4_ros.robot.go1 import DEFAULT_Q
    from uni_o4_ros.robot.observation import command_vector
    from uni_o4_ros.robot.policy_runner import NonFiniteAction, PolicyRunner

    torch.manual_seed(0)
    pol = make_policy(290, 12, hidden=(32, 32), mean_activation="none")
    norm = StateNormalizer(np.zeros(290), np.ones(290))
    std = np.ones(290, np.float32)
    std[3::58] = 1e-45  # the commanded vx of each of the five frames
    fragile = StateNormalizer(np.zeros(290), std)
    up, still = np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(12)

    runner = PolicyRunner(pol, norm, version=1)
    for _ in range(10):
        runner.tick(up, DEFAULT_Q, still)
    m = encode_update(pol, fragile, version=2, session=runner.session)
    verdict = runner.offer(m["version"], m["sha256"], m["safetensors"], m["spec_json"], m["signature"], m["session"])
    assert verdict.accepted, verdict.reason
    assert runner.tick(up, DEFAULT_Q, still).policy_version == 2 and not runner.withdrawn
    runner.command = command_vector(0.3)
    out = runner.tick(up, DEFAULT_Q, still)
    assert out.policy_version == 1 and np.isfinite(out.q_des).all() and np.isfinite(runner.last_action).all()
    [w] = runner.withdrawn
    assert (w.version, w.running, w.sha256) == (2, 1, m["sha256"]) and "not finite" in w.reason
    assert runner.tick(up, DEFAULT_Q, still).policy_version == 1  # and on
    m3 = encode_update(pol, fragile, version=3, session=runner.session)
    again = runner.offer(m3["version"], m3["sha256"], m3["safetensors"], m3["spec_json"], m3["signature"],
                         m3["session"])
    assert not again.accepted and "withdrawn at a tick: its action on a robot state was not finite" in again.reason

    # The policy it started with: nothing earlier to answer. The tick says so; the next state is answered.
    alone = PolicyRunner(pol, fragile, version=1)
    alone.command = command_vector(0.3)
    with pytest.raises(NonFiniteAction, match="no earlier version"):
        alone.tick(up, DEFAULT_Q, still)
    alone.reset()
    alone.command = command_vector(0.0)
    assert np.isfinite(alone.tick(up, DEFAULT_Q, still).q_des).all()


def test_a_broken_running_policy_neither_fails_healthy_updates_nor_hides_a_withdrawal_and_a_swap_mid_judgement_is_seen(
        monkeypatch):
    """From the review of the withdrawal: (1) a running version whose action on a recent state is NaN made every
    update's averaged shift NaN: healthy weights were refused as "not finite" and remembered as refused, for the
    rest of the run; (2) with one earlier version kept, a chain v1 -> v2 -> v3 whose v3 and v2 both failed on a
    state answered nothing, and v3's withdrawal was never said; (3) a tick swapping a staged update in while the
    next was judged against the version before let that next one in unjudged against what then ran."""
    import copy

    from uni_o4_ros.robot import policy_runner
    from uni_o4_ros.robot.go1 import DEFAULT_Q
    from uni_o4_ros.robot.observation import command_vector
    from uni_o4_ros.robot.policy_runner import NonFiniteAction, PolicyRunner

    torch.manual_seed(0)
    pol = make_policy(290, 12, hidden=(32, 32), mean_activation="none")
    norm = StateNormalizer(np.zeros(290), np.ones(290))
    std = np.ones(290, np.float32)
    std[3::58] = 1e-45  # the commanded vx of each frame: NaN actions once vx is not 0
    fragile = StateNormalizer(np.zeros(290), std)
    up, still = np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(12)

    def offer(runner, policy, normalizer, version):
        m = encode_update(policy, normalizer, version=version, session=runner.session)
        return runner.offer(m["version"], m["sha256"], m["safetensors"], m["spec_json"], m["signature"],
                            m["session"])

    # (1) the version it started with is broken on the states of a 0.3 m/s command: a healthy update is taken
    broken = PolicyRunner(pol, fragile, version=1)
    broken.command = command_vector(0.3)
    for _ in range(3):
        with pytest.raises(NonFiniteAction):
            broken.tick(up, DEFAULT_Q, still)
    verdict = offer(broken, pol, norm, 2)
    assert verdict.accepted and "v1's actions on the others are not finite" in verdict.reason, verdict.reason
    assert np.isfinite(broken.tick(up, DEFAULT_Q, still).q_des).all() and broken.version == 2

    def knees(by):
        p = copy.deepcopy(pol)
        with torch.no_grad():
            p.body.net[-1].bias[0, 0, :12].add_(by)
        return p

    # (2) v1 healthy, v2 and v3 broken on that command: both withdrawn, v1 answers, both said
    chain = PolicyRunner(pol, norm, version=1)
    for version in (2, 3):
        assert offer(chain, knees(0.01 * version), fragile, version).accepted
        assert chain.tick(up, DEFAULT_Q, still).policy_version == version
    chain.command = command_vector(0.3)
    out = chain.tick(up, DEFAULT_Q, still)
    assert out.policy_version == 1 and np.isfinite(out.q_des).all()
    assert [(w.version, w.running) for w in chain.withdrawn] == [(3, 2), (2, 1)]
    # An update staged while the failing tick ran (the verifier's thread), judged against the version withdrawn
    # now: withdrawn too, before it ever ran, not swapped in unjudged at the next tick.
    staging = PolicyRunner(pol, norm, version=1)
    assert offer(staging, knees(0.02), fragile, 2).accepted
    staging.tick(up, DEFAULT_Q, still)
    staging.command = command_vector(0.3)
    act, staged = staging._act, []

    def act_then_stage(active, history):
        out = act(active, history)
        if not staged:
            staged.append(offer(staging, knees(0.03), norm, 3))
        return out

    monkeypatch.setattr(staging, "_act", act_then_stage)
    assert staging.tick(up, DEFAULT_Q, still).policy_version == 1 and staged[0].accepted
    assert [(w.version, w.running) for w in staging.withdrawn] == [(3, 2), (2, 1)]
    assert staging.tick(up, DEFAULT_Q, still).policy_version == 1  # version 3 never swapped in
    # No version answers the state: the state is the likelier fault. Unanswered, and nothing withdrawn (every version
    # was withdrawn, and the learner pulled back twice, for a state none could answer).
    alone = PolicyRunner(pol, fragile, version=1)
    for version in (2, 3):
        assert offer(alone, knees(0.01 * version), fragile, version).accepted
        alone.tick(up, DEFAULT_Q, still)
    alone.command = command_vector(0.3)
    with pytest.raises(NonFiniteAction, match="no earlier version of this run \\(2 kept\\) answers it either"):
        alone.tick(up, DEFAULT_Q, still)
    assert alone.withdrawn == [] and alone.version == 3 and not alone.refused_weights
    alone.reset()
    alone.command = command_vector(0.0)
    assert alone.tick(up, DEFAULT_Q, still).policy_version == 3

    # (3) v2 staged (0.8 rad from v1). While v3 (0.8 from v2, 1.6 from v1) is judged against v1, the running one,
    # a tick swaps v2 in: v3 is judged again, against v2, which now runs, and taken.
    racing = PolicyRunner(pol, norm, version=1)
    assert offer(racing, knees(3.2), norm, 2).accepted
    real, judged = policy_runner.joint_target_shifts, []

    def tick_meanwhile(running, candidate, *args, **kwargs):
        judged.append(running.version)
        if len(judged) == 1:
            racing.tick(up, DEFAULT_Q, still)  # the 50 Hz thread swaps v2 in
        return real(running, candidate, *args, **kwargs)

    monkeypatch.setattr(policy_runner, "joint_target_shifts", tick_meanwhile)
    verdict = offer(racing, knees(6.4), norm, 3)
    assert judged == [1, 2] and verdict.accepted and "0.800 rad from v2's" in verdict.reason, verdict.reason


def test_controller_core_modes():
    from uni_o4_ros.robot.controller import ControllerCore, Mode

    c = ControllerCore(SafetyConfig(watchdog_timeout=0.1, max_tilt=1.0))
    up, q, dq = np.array([1.0, 0, 0, 0]), go1.DEFAULT_Q.copy(), np.zeros(12)
    assert c.tick(up, q, dq, 0.0).mode == Mode.DAMPING  # nothing commanded yet
    c.on_command(q, 3, now=1.0)
    out = c.tick(up, q, dq, 1.05)
    assert out.mode == Mode.ACTIVE and not out.command.damping and c.policy_version == 3
    assert c.tick(up, q, dq, 1.2).mode == Mode.DAMPING  # stale command: watchdog
    c.on_command(q, 3, now=2.0)
    c.estop(True)
    c.on_command(q, 3, now=2.01)
    assert c.tick(up, q, dq, 2.02).command.damping  # e-stop ignores fresh commands
    assert "re-armed" in c.estop(False)
    assert c.tick(up, q, dq, 2.03).mode == Mode.DAMPING  # the pre-stop command is not replayed
    c.on_command(q, 3, now=2.04)
    assert c.tick(up, q, dq, 2.05).mode == Mode.ACTIVE
    tilted = np.array([np.cos(0.6), np.sin(0.6), 0, 0])  # roll 1.2 rad
    first, second = c.tick(tilted, q, dq, 2.06), c.tick(tilted, q, dq, 2.07)
    assert first.fell and not second.fell and second.command.damping
    c.on_command(q, 3, now=2.08)
    assert c.tick(up, q, dq, 2.09).mode == Mode.DAMPING  # latched until re-armed


def test_a_state_that_is_no_state_engages_the_estop_until_re_armed_and_never_reaches_the_filter():
    """A NaN orientation turned fall detection off (NaN roll compares False), an IMU reporting zeros read as
    upright for ever, and one NaN joint reading put NaN into the rate limit for good, the robot reported
    ACTIVE meanwhile. Each now engages the e-stop (the recorder ends the episode as a truncation), said with
    its reason, until re-armed. A joint speed no leg reaches does so on FAST_TICKS of FAST_WINDOW ticks, in a
    row or not: one odd reading is read as 0, and a re-arm is refused while the state is still no state."""
    from uni_o4_ros.robot.controller import ControllerCore, Mode
    from uni_o4_ros.robot.safety import FAST_TICKS, FAST_WINDOW, speed_problem, state_problem

    up, q, dq = np.array([1.0, 0, 0, 0]), go1.DEFAULT_Q.copy(), np.zeros(12)
    assert state_problem(up, q, dq) is None and speed_problem(np.full(12, 25.0)) is None  # a fast swing leg
    calf_glitch = np.where(np.arange(12) == 2, -1000.0, dq)
    assert "FL_calf at -1e+03 rad/s" in speed_problem(calf_glitch)
    bad = {"NaN orientation": (np.array([np.nan, 0, 0, 0]), q, dq),
           "a zero quaternion (the IMU)": (np.zeros(4), q, dq),
           "a NaN joint position": (up, np.where(np.arange(12) == 2, np.nan, q), dq),
           "an inf joint velocity": (up, q, np.where(np.arange(12) == 5, np.inf, dq)),
           "a short message": (up, q[:11], dq[:11])}
    said = {name: state_problem(*state) for name, state in bad.items()}
    assert all(said.values()), said
    assert "no unit quaternion" in said["a zero quaternion (the IMU)"]
    bad["an impossible joint speed, 3 ticks in a row"] = (up, q, calf_glitch)

    def armed() -> ControllerCore:
        c = ControllerCore(SafetyConfig(watchdog_timeout=0.1))
        c.on_command(q, 1, now=1.0)
        assert c.tick(up, q, dq, 1.01).mode == Mode.ACTIVE
        return c

    for name, state in bad.items():
        c = armed()
        for k in range(FAST_TICKS if "3 ticks" in name else 1):
            c.on_command(q, 1, now=1.02 + 0.01 * k)
            out = c.tick(*state, 1.025 + 0.01 * k)
        assert out.command.damping and out.mode == Mode.ESTOP and out.bad_state, name
        assert "bad robot state" in out.reason, name
        c.tick(*state, 1.09)  # re-armed while the state is still no state: refused, and said why
        answer = c.estop(False)
        assert answer.startswith(f"not re-armed: bad robot state: {said.get(name, 'joint FL_calf at -1e+03')}"), name
        assert c.mode == Mode.ESTOP, name
        c.on_command(q, 1, now=1.1)
        again = c.tick(up, q, dq, 1.105)  # good again, with a fresh command: still stopped, the reason kept
        assert again.command.damping and not again.bad_state and "e-stop (bad robot state" in again.reason, name
        c.estop(True)  # the operator's press on the engaged stop keeps what engaged it
        assert "e-stop (bad robot state" in c.tick(up, q, dq, 1.106).reason, name
        if name not in said:  # odd speeds: re-armed once they are out of the window, sane readings since
            assert c.estop(False).startswith("not re-armed"), name
            for k in range(FAST_WINDOW):
                c.tick(up, q, dq, 1.107 + 0.001 * k)
        assert c.estop(False).startswith("re-armed"), name
        c.on_command(q, 1, now=1.2)
        out = c.tick(up, q, dq, 1.205)
        assert out.mode == Mode.ACTIVE and np.isfinite(out.command.q).all(), name  # the filter kept no NaN
        np.testing.assert_allclose(out.command.q, q, atol=1e-6)
    # One odd speed reading: the robot walks on, its targets unmoved by it.
    c = armed()
    c.on_command(q, 1, now=1.02)
    out = c.tick(up, q, calf_glitch, 1.025)
    assert out.mode == Mode.ACTIVE and not out.bad_state
    np.testing.assert_allclose(out.command.q, q, atol=1e-6)
    # Odd speeds count within FAST_WINDOW ticks, sane ones (a fall's, here) between them or not: an encoder odd on
    # two ticks of three never made three in a row. Spread further apart, they are glitches.
    c = armed()
    for k, state in enumerate(((up, q, calf_glitch), (up, q, calf_glitch), (np.array([np.cos(0.6), np.sin(0.6), 0, 0]),
                                                                           q, dq), (up, q, calf_glitch))):
        out = c.tick(*state, 1.03 + 0.01 * k)
    assert out.bad_state and c.mode == Mode.ESTOP and "3 such readings in 5 ticks" in out.reason
    c = armed()
    for k in range(3 * FAST_WINDOW):
        c.on_command(q, 1, now=1.02 + 0.01 * k)
        out = c.tick(up, q, calf_glitch if k % (FAST_WINDOW // 2 + 1) == 0 else dq, 1.025 + 0.01 * k)
        assert out.mode == Mode.ACTIVE and not out.bad_state, k
    # A simulated robot put back clears a bad state's stop, and its reason with it.
    c = armed()
    c.tick(np.zeros(4), q, dq, 1.05)
    c.robot_put_back()
    assert c.rearm_blocker == ""  # the state seen before the reset is not held against the robot after it
    c.hold("link lost")
    assert c.tick(up, q, dq, 1.06).reason == "e-stop"
    # A fall with a bad joint reading at that moment is told as the fall it is.
    c = armed()
    tilted = np.array([np.cos(0.6), np.sin(0.6), 0, 0])  # roll 1.2 rad
    out = c.tick(tilted, np.where(np.arange(12) == 2, np.nan, q), dq, 1.05)
    assert out.fell and out.command.damping


def test_the_safety_filter_keeps_joint_and_rate_limits_whatever_the_velocity_reading():
    """The torque bound, clamped last, is computed from the measured dq: one odd reading (-1000 rad/s on a
    calf) put its target 22 rad past the joint limit, and the rate limit then walked it back from there over
    7 ticks. The joint limits and the rate limit now hold first."""
    f = SafetyFilter(SafetyConfig())
    q = go1.DEFAULT_Q.copy()
    f.reset(q)
    for dq_calf in (-1000.0, 1000.0, 60.0, -60.0):
        dq = np.where(np.arange(12) % 3 == 2, dq_calf, 0.0)
        cmd = f.apply(q, q, dq)
        assert np.all(cmd.q >= go1.Q_MIN - 1e-6) and np.all(cmd.q <= go1.Q_MAX + 1e-6), dq_calf
        assert np.all(np.abs(cmd.q - q) <= SafetyConfig().max_target_step + 1e-6), dq_calf
        cmd = f.apply(q, q, np.zeros(12))  # the next reading is sane: the target is back at once
        np.testing.assert_allclose(cmd.q, q, atol=1e-6)


def test_a_policy_silent_past_silence_latch_needs_a_re_arm():
    """On the robot (silence_latch 1 s): a short gap in the policy's commands recovers by itself, a dead
    policy does not: the robot has folded up meanwhile and must not spring up when a policy returns."""
    from uni_o4_ros.robot.controller import ControllerCore, Mode

    up, q, dq = np.array([1.0, 0, 0, 0]), go1.DEFAULT_Q.copy(), np.zeros(12)
    c = ControllerCore(SafetyConfig(watchdog_timeout=0.1, silence_latch=1.0))
    c.on_command(q, 1, now=0.0)
    assert c.tick(up, q, dq, 0.02).mode == Mode.ACTIVE
    assert c.tick(up, q, dq, 0.2).reason == "no fresh command (watchdog)"  # a gap: damped ...
    c.on_command(q, 1, now=0.5)
    assert c.tick(up, q, dq, 0.52).mode == Mode.ACTIVE  # ... and back within the latch time
    for t in np.arange(0.7, 1.5, 0.02):
        assert c.tick(up, q, dq, t).mode == Mode.DAMPING
    out = c.tick(up, q, dq, 1.7)  # silent 1.0 s since the watchdog damped it
    assert out.command.damping and "re-arm required" in out.reason
    c.on_command(q, 1, now=2.0)  # the policy is back: not enough
    assert c.tick(up, q, dq, 2.02).reason == "policy was silent: re-arm required"
    assert "re-armed" in c.estop(False) and c.rearms == 1  # a new start: the policy's history begins afresh
    c.on_command(q, 1, now=2.1)
    assert c.tick(up, q, dq, 2.12).mode == Mode.ACTIVE
    # silence_latch 0 (the simulator): however long the silence, the next command re-activates
    s = ControllerCore(SafetyConfig(watchdog_timeout=0.1))
    s.on_command(q, 1, now=0.0)
    assert s.tick(up, q, dq, 0.02).mode == Mode.ACTIVE and s.tick(up, q, dq, 60.0).mode == Mode.DAMPING
    s.on_command(q, 1, now=61.0)
    assert s.tick(up, q, dq, 61.02).mode == Mode.ACTIVE


def test_command_latency_counts_ticks_whose_command_answers_an_older_state():
    from uni_o4_ros.robot.controller import CommandLatency

    lat = CommandLatency()
    lat.on_active_tick()  # active on a command that answers no known state
    for tick in range(1, 9):  # the policy answered the newest state on 6 of 8 ticks
        lat.on_state_published(tick, now=float(tick))
        lat.on_command(tick - 1 if tick in (3, 7) else tick)
        assert not lat.must_wait(float(tick), estop=False)  # never waits unless asked to
        lat.on_active_tick()
    assert (lat.active_ticks, lat.late) == (9, 3)
    assert lat.to_dict() == {"active_ticks": 9, "late_commands": 3, "late_fraction": round(3 / 9, 4)}


def test_command_latency_waits_for_the_answer_to_the_newest_state_until_the_timeout():
    from uni_o4_ros.robot.controller import CommandLatency

    lat = CommandLatency(wait_for_policy=True, wait_timeout=0.1)
    lat.on_state_published(1, now=0.0)
    assert not lat.must_wait(0.01, estop=False)  # no policy yet: the watchdog keeps it damped, no waiting
    lat.on_command(1)
    lat.on_state_published(2, now=1.0)
    assert lat.must_wait(1.05, estop=False)  # state 2 not answered yet: simulated time stands still
    assert not lat.must_wait(1.05, estop=True)  # in e-stop the policy is silent: never wait
    assert not lat.must_wait(1.11, estop=False)  # past the timeout the tick runs (and the watchdog acts)
    lat.on_command(2)
    assert not lat.must_wait(1.02, estop=False)
    lat.on_active_tick()
    assert lat.late == 0


def test_recorder_core_stop_request_ends_the_episode_as_a_timeout_at_the_next_step():
    from uni_o4_ros.robot.episodes import EpisodeRecorderCore, PolicyStep, RobotMotion

    core = EpisodeRecorderCore(max_steps=1000)
    assert not core.request_stop()  # nothing running
    core.start()
    motion = RobotMotion(np.zeros(2), 0.0, 0.0, np.zeros(12), np.zeros(12), np.zeros(12))
    steps = [PolicyStep(i, np.full(3, float(i)), np.zeros(2), -1.0, 0) for i in range(4)]
    outs = [core.on_step(s, motion) for s in steps[:3]]
    assert outs[0] is None and not outs[1]["timeout"] and not outs[2]["timeout"]
    assert core.request_stop()
    last = core.on_step(steps[3], motion)
    assert last["timeout"] and not last["terminal"] and not core.active
    np.testing.assert_array_equal(last["next_observation"], steps[3].observation)  # the true s', not a copy of s
    assert core.on_step(PolicyStep(4, np.zeros(3), np.zeros(2), -1.0, 0), motion) is None


def test_recorder_core_step_budget_cuts_the_running_episode_as_a_timeout():
    from uni_o4_ros.robot.episodes import EpisodeRecorderCore, PolicyStep, RobotMotion

    core = EpisodeRecorderCore(max_steps=4, step_budget=6)
    motion = RobotMotion(np.zeros(2), 0.0, 0.0, np.zeros(12), np.zeros(12), np.zeros(12))
    rows, i = [], 0
    while core.episode_id < 3 and not core.budget_spent:
        if not core.active:
            core.start()
        out = core.on_step(PolicyStep(i, np.full(3, float(i)), np.zeros(2), -1.0, 0), motion)
        rows += [out] if out else []
        i += 1
    # episode 1: 4 steps to its max_steps; episode 2: cut after 2 by the budget, not run to 4
    assert [(r["episode_id"], r["step"], r["timeout"]) for r in rows] == [
        (1, 0, False), (1, 1, False), (1, 2, False), (1, 3, True), (2, 0, False), (2, 1, True)]
    assert core.budget_spent and not core.active and core.recorded == 6
    # a fall on the budget's last step stays a failure (terminal), not a truncation
    core = EpisodeRecorderCore(max_steps=10, step_budget=2)
    core.start()
    for j in range(2):
        core.on_step(PolicyStep(j, np.zeros(3), np.zeros(2), -1.0, 0), motion)
    last = core.abort()
    assert last["terminal"] and not last["timeout"] and core.budget_spent


def test_recorder_core_a_fall_leads_into_the_fallen_state_and_is_rewarded_by_its_motion():
    """The fall's terminal row was (s, a, r(the state before the action), s' = s): a step into a fall that
    changed nothing, which the dynamics model learned. Given the fallen state's observation and motion, it is
    that state's; without them (never answered) s' stays s, which the offline stage leaves out of the model."""
    from uni_o4_ros.robot.episodes import EpisodeRecorderCore, PolicyStep, RobotMotion

    walking = RobotMotion(np.array([0.5, 0.0]), 0.0, 0.0, np.zeros(12), np.zeros(12), np.zeros(12))
    tumbling = RobotMotion(np.array([0.0, 0.4]), -0.8, 2.0, np.full(12, 5.0), np.full(12, 9.0), np.zeros(12))
    rows = []
    for fallen_obs, motion in ((np.full(3, 7.0), tumbling), (None, None)):
        core = EpisodeRecorderCore(max_steps=10, command_velocity=(0.5, 0.0, 0.0))
        core.start()
        for j in range(2):
            core.on_step(PolicyStep(j, np.full(3, float(j)), np.zeros(2), -1.0, 0), walking)
        rows.append(core.abort(fallen_obs, motion))
    into_fall, unknown = rows
    assert into_fall["terminal"] and into_fall["step"] == unknown["step"] == 1
    np.testing.assert_array_equal(into_fall["next_observation"], np.full(3, 7.0))
    np.testing.assert_array_equal(unknown["next_observation"], unknown["observation"])
    assert into_fall["reward"] < unknown["reward"]  # tracking lost, sinking, joints spinning: not walking's


def test_recorder_core_waiting_for_a_reset_starts_at_the_first_fresh_observation():
    from uni_o4_ros.robot.episodes import EpisodeRecorderCore, PolicyStep, RobotMotion
    from uni_o4_ros.robot.go1 import DEFAULT_Q
    from uni_o4_ros.robot.observation import ObservationBuilder, command_vector, is_fresh, shows_command

    b, motion = ObservationBuilder(), RobotMotion(np.zeros(2), 0.0, 0.0, np.zeros(12), np.zeros(12), np.zeros(12))
    fallen, upright = np.array([0.8, 0.6, 0.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0])

    def step(i: int, quat, vx: float) -> PolicyStep:
        obs = b.push(b.frame(quat, command_vector(vx), DEFAULT_Q, np.zeros(12), np.zeros(12)))
        return PolicyStep(i, obs, np.full(12, 0.1 * i, np.float32), -1.0, 0)

    step(-1, upright, 0.5)  # the last episode's final step
    core = EpisodeRecorderCore(wait_for_reset=True)
    core.start()
    # the robot still lies where the last episode left it until the reset reaches the controller
    before = [step(i, fallen, 1.0) for i in range(3)]
    assert [core.on_step(s, motion) for s in before] == [None] * 3 and core.skipped == 3
    assert not any(is_fresh(s.observation) for s in before) and shows_command(before[-1].observation, 1.0, 0, 0)
    b.reset()  # the reset: the policy restarts its history at the first state after it
    first, second = step(3, upright, 1.0), step(4, upright, 1.0)
    assert is_fresh(first.observation) and not is_fresh(second.observation)
    assert core.on_step(first, motion) is None
    t = core.on_step(second, motion)
    np.testing.assert_array_equal(t["observation"], first.observation)
    assert t["step"] == 0 and core.steps == 1 and core.skipped == 3
    # without waiting (a real robot is not reset between episodes) the first step is recorded
    core = EpisodeRecorderCore()
    core.start()
    assert core.on_step(before[0], motion) is None and core.on_step(before[1], motion)["step"] == 0


def test_odometry_watch_ignores_non_finite_samples_and_says_when_odometry_is_too_old():
    from uni_o4_ros.robot.odometry_watch import OdometryWatch, finite_sample

    off = OdometryWatch()  # the simulator's default: never too old
    assert off.lost(now=1e6) == "" and not off.accept([float("nan"), 0.0], now=0.0)
    watch = OdometryWatch(timeout=0.1)
    assert watch.lost(now=0.0) == "no odometry received yet"
    assert watch.accept([0.5, 0.0, 0.0, 0.1], now=1.0) and watch.lost(now=1.05) == ""
    assert not watch.accept([float("inf"), 0.0, 0.0, 0.0], now=1.15)  # a glitch does not refresh it
    assert watch.lost(now=1.15).startswith("odometry lost: no sample for 0.15 s")
    assert finite_sample([0.0] * 24) and not finite_sample([0.0, float("nan")])


def test_an_episode_that_cannot_be_written_is_kept_and_written_with_the_next(tmp_path):
    """A real failed write (the episode folder replaced by a file, as when a USB stick is pulled
    and something else takes its path): the episode stays in memory and the error surfaces; once
    the folder is back the next episode writes both, nothing lost and no half file left."""
    from uni_o4_ros.robot.episodes import EpisodeWriter, read_episodes

    folder = tmp_path / "episodes"
    writer = EpisodeWriter(folder)

    def episode(eid: int, steps: int) -> None:
        for k in range(steps):
            writer.add({"episode_id": eid, "step": k, "observation": np.full(3, k, np.float32),
                        "next_observation": np.full(3, k + 1, np.float32), "action": np.zeros(2, np.float32),
                        "log_prob": -1.0, "reward": 1.0, "terminal": False, "timeout": k == steps - 1,
                        "policy_version": 0})

    episode(1, 3)
    assert writer.finish(1) == (folder / "episode_000001.hdf5", 0)
    folder.rename(tmp_path / "aside")
    folder.write_text("not a folder")
    episode(2, 4)
    with pytest.raises(OSError):
        writer.finish(2)
    assert writer.unwritten == [2]
    folder.unlink()
    (tmp_path / "aside").rename(folder)
    episode(3, 5)
    assert writer.finish(3) == (folder / "episode_000003.hdf5", 0)
    assert writer.unwritten == []
    assert sorted(p.name for p in folder.iterdir()) == [f"episode_00000{i}.hdf5" for i in (1, 2, 3)]
    ds = read_episodes(folder)
    assert ds.infos["step"].tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4] and ds.timeouts.sum() == 3
    # a file manager's copy beside them is no episode of the recording: it was read as one, its data twice
    shutil.copy(folder / "episode_000002.hdf5", folder / "episode_000002 (copy).hdf5")
    assert read_episodes(folder).infos["step"].tolist() == ds.infos["step"].tolist()
    # the folder gone (its disk unmounted): kept, not written into a folder made again where the path now leads
    folder.rename(tmp_path / "aside")
    episode(4, 2)
    with pytest.raises(FileNotFoundError):
        writer.finish(4)
    assert writer.unwritten == [4] and not folder.exists()
    (tmp_path / "aside").rename(folder)
    assert writer.flush() == [folder / "episode_000004.hdf5"] and writer.unwritten == []
    # a logger killed mid-write left its temporary file: the next one removes it at start, and only it (a minute
    # old: another logger sharing the folder may be writing its own now)
    (folder / ".episode_000005.hdf5.0a1b2c3d.tmp").write_bytes(b"\x89HDF" + b"\0" * 1000)
    os.utime(folder / ".episode_000005.hdf5.0a1b2c3d.tmp", (time.time() - 120,) * 2)
    (folder / ".episode_000006.hdf5.4e5f6a7b.tmp").write_bytes(b"\x89HDF")  # being written
    (folder / ".notes.tmp").write_text("someone else's")
    assert EpisodeWriter(folder).removed_temporary == [1004]
    (folder / ".episode_000006.hdf5.4e5f6a7b.tmp").unlink()
    # a link to nothing where the next file would go (episodes on a disk unmounted): passed over, not replaced,
    # where the writer tried that name again and again and every later episode waited in memory
    (folder / "episode_000005.hdf5").symlink_to(tmp_path / "unmounted" / "episode_000005.hdf5")
    episode(5, 2)
    assert writer.finish(5) == (folder / "episode_000006.hdf5", 0) and writer.unwritten == []
    (folder / "episode_000005.hdf5").unlink()
    assert sorted(p.name for p in folder.iterdir()) == sorted([".notes.tmp", "episode_000002 (copy).hdf5",
                                                               *(f"episode_00000{i}.hdf5" for i in (1, 2, 3, 4, 6))])


def test_two_loggers_sharing_a_folder_never_replace_each_others_file(tmp_path, monkeypatch):
    """Both robot configs record into data/robot: two suites started from one folder share it. Each logger found
    the next name free, and the one whose rename came second replaced the other's episode. Here the second logger
    writes episode 3 in the window after the first checked the name and before its file is in place."""
    from uni_o4_ros.data import d4rl, read_hdf5
    from uni_o4_ros.robot.episodes import EpisodeWriter

    def record(writer: EpisodeWriter, eid: int, value: float) -> Path:
        for k in range(3):
            writer.add({"episode_id": eid, "step": k, "observation": np.full(3, value, np.float32),
                        "next_observation": np.full(3, value, np.float32), "action": np.zeros(2, np.float32),
                        "log_prob": -1.0, "reward": value, "terminal": False, "timeout": k == 2, "policy_version": 0})
        return writer.finish(eid)[0]

    first, second = EpisodeWriter(tmp_path), EpisodeWriter(tmp_path)
    assert record(first, 1, 1.0) == tmp_path / "episode_000001.hdf5"
    assert record(second, 2, 2.0) == tmp_path / "episode_000002.hdf5"
    real_atomic_write, raced = d4rl.atomic_write, []

    def racing(path, write, *args, **kwargs):
        def write_then_race(tmp: str) -> None:
            write(tmp)
            if not raced:  # the other logger's episode lands at this name meanwhile
                raced.append(None)
                raced[0] = record(second, 3, 30.0)
        return real_atomic_write(path, write_then_race, *args, **kwargs)

    def check(fs: str) -> None:
        raced.clear()
        taken = record(first, 3 if not fs else 5, 10.0)
        files = sorted(tmp_path.glob("episode_*.hdf5"))
        assert raced[0] != taken and {raced[0], taken} <= set(files), fs
        assert float(read_hdf5(raced[0]).rewards[0]) == 30.0 and float(read_hdf5(taken).rewards[0]) == 10.0, fs
        assert not list(tmp_path.glob(".*.tmp")) and first.unwritten == [] and second.unwritten == [], fs

    monkeypatch.setattr(d4rl, "atomic_write", racing)
    check("")
    # a USB stick's FAT has no hard links (the kernel says EPERM): the name is checked again before the rename
    def no_hard_links(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    check("fat")
    assert [float(read_hdf5(f).rewards[0]) for f in sorted(tmp_path.glob("episode_*.hdf5"))] == [
        1.0, 2.0, 30.0, 10.0, 30.0, 10.0]
    # NFS: a link whose reply was lost is sent again, and the server answers "exists" of the file it just linked.
    # That is this file in place, not another logger's: written once, not again under the next name.
    monkeypatch.undo()
    real_link = os.link

    def reply_lost(src, dst, **kwargs):
        real_link(src, dst, **kwargs)
        raise FileExistsError(17, "File exists")

    monkeypatch.setattr(os, "link", reply_lost)
    before = set(tmp_path.glob("episode_*.hdf5"))
    path = record(first, 7, 70.0)
    assert set(tmp_path.glob("episode_*.hdf5")) - before == {path} and not list(tmp_path.glob(".*.tmp"))
    assert float(read_hdf5(path).rewards[0]) == 70.0


def test_a_file_too_large_to_build_in_memory_is_refused_on_a_disk_without_room(tmp_path, monkeypatch):
    """Past IN_MEMORY_MAX_BYTES HDF5 writes straight to disk, and a disk filling up under it ends the process
    with a segmentation fault (collect's or bag2h5's whole run lost). The room is checked first, as written
    (float32): the disk's free space here is the real one, the limit lowered so a small file takes that path."""
    from uni_o4_ros.data import OfflineDataset, d4rl, read_hdf5, write_hdf5

    n = 4000  # 4000 * (3 + 2 + 1 + 3) values, and two booleans a row
    ds = OfflineDataset(observations=np.zeros((n, 3)), actions=np.zeros((n, 2)), rewards=np.zeros(n),
                        terminals=np.zeros(n, bool), timeouts=np.arange(n) == n - 1,
                        next_observations=np.zeros((n, 3)))
    monkeypatch.setattr(d4rl, "IN_MEMORY_MAX_BYTES", 1000)
    disk_usage = shutil.disk_usage
    # the disk as one nearly full would report it: 40,000 float64 values take 160 kB as written, 320 kB in memory
    for free, fits in ((150_000 + 16 * 2**20, False), (170_000 + 16 * 2**20, True)):
        monkeypatch.setattr(d4rl.shutil, "disk_usage", lambda p, free=free: disk_usage(p)._replace(free=free))
        if fits:
            assert len(read_hdf5(write_hdf5(tmp_path / "big.hdf5", ds)).rewards) == n
            continue
        with pytest.raises(OSError, match=r"needs about 17 MB and 17 MB are free: not written") as err:
            write_hdf5(tmp_path / "big.hdf5", ds)
        assert err.value.errno == 28 and list(tmp_path.iterdir()) == []
    # a folder still to be made is judged by the disk it will be on (its nearest folder), not the working folder's
    asked = []
    monkeypatch.setattr(d4rl.shutil, "disk_usage", lambda p: asked.append(Path(p)) or disk_usage(p))
    write_hdf5(tmp_path / "usb" / "day1" / "big.hdf5", ds)
    assert asked == [tmp_path]


def test_an_episode_with_steps_that_never_arrived_is_written_saying_so(tmp_path):
    """What a logger stopped for longer than DDS keeps it matched receives: all of episode 2 gone, episode 3
    from its step 5 on. Before, episode 3 was written as if whole and episode 2 was never mentioned."""
    from uni_o4_ros.data import read_hdf5
    from uni_o4_ros.robot.episodes import Arrival, EpisodeWriter, lost_in_recording, missing_steps, read_episodes

    writer = EpisodeWriter(tmp_path)

    def row(eid: int, k: int, last: bool = False) -> dict:
        return {"episode_id": eid, "step": k, "observation": np.full(3, k, np.float32),
                "next_observation": np.full(3, k + 1, np.float32), "action": np.zeros(2, np.float32),
                "log_prob": -1.0, "reward": 1.0, "terminal": False, "timeout": last, "policy_version": 0}

    assert [writer.add(row(1, k, k == 2)) for k in range(3)] == [Arrival()] * 3
    path, _ = writer.finish(1)
    assert writer.last_missing == [] and "missing_steps" not in read_hdf5(path).metadata
    # The first row after the silence names the episode lost whole.
    assert writer.add(row(3, 5)) == Arrival(skipped=[2])
    for k in (6, 9, 10, 11):
        assert writer.add(row(3, k, k == 11)) == Arrival()
    path, _ = writer.finish(3)
    assert writer.last_missing == [(0, 4), (7, 8)]
    ds = read_hdf5(path)
    assert ds.metadata["missing_steps"] == 7 and ds.metadata["missing_ranges"] == "0-4, 7-8"
    assert ds.infos["step"].tolist() == [5, 6, 9, 10, 11] and ds.timeouts.tolist() == [0, 0, 0, 0, 1]
    # Episode 4 whose end never came: the next episode's first row says so; its rows are written as a truncation.
    assert writer.add(row(4, 0)) == Arrival() and writer.add(row(4, 1)) == Arrival()
    assert writer.add(row(5, 0)) == Arrival(cut_off=[("", 4)])  # (recorder run: none named, episode)
    path, _ = writer.finish(4, {"end_missing": True})
    cut = read_hdf5(path)
    assert cut.infos["step"].tolist() == [0, 1] and cut.timeouts.tolist() == [0, 1] and cut.metadata["end_missing"]
    writer.finish(5)
    assert writer.add(row(1, 0)) == Arrival()  # a restarted recorder numbers from 1 again: nothing was lost
    assert missing_steps([0, 1, 2]) == [] and missing_steps([2]) == [(0, 1)]
    # The folder as the learner reads it: the losses totalled, and said in one line (uni-o4 offline, learner).
    folder = read_episodes(tmp_path)
    assert folder.metadata == {"source": str(tmp_path), "episodes": 4, "missing_steps": 7, "partial_episodes": 1,
                               "end_missing_episodes": 1}
    said = lost_in_recording(folder)
    assert said.startswith("7 transition(s) of this recording never reached its logger (1 ")
    assert "1 episode(s) lack their last transitions" in said


def test_a_transition_of_other_dimensions_costs_only_itself_not_the_episode(tmp_path):
    """Seen: one Transition whose observation had 3 values in an episode of 290-value ones (another publisher
    on the ROS domain) made the episode's np.stack fail after its rows were taken: the episode was gone and the
    dataset_logger died. Such a row is now left out as it arrives, said, and counted; the episode is written
    without it, and the replay of the episode's last step marked as its end still replaces that step."""
    from uni_o4_ros.data import read_hdf5
    from uni_o4_ros.robot.episodes import Arrival, EpisodeWriter, episode_dataset, read_episodes

    writer = EpisodeWriter(tmp_path)

    def row(k: int, obs: int = 4, nxt: int | None = None, act: int = 2, last: bool = False) -> dict:
        return {"episode_id": 1, "step": k, "observation": np.full(obs, k, np.float32),
                "next_observation": np.full(obs if nxt is None else nxt, k + 1, np.float32),
                "action": np.zeros(act, np.float32), "log_prob": -1.0, "reward": 1.0, "terminal": False,
                "timeout": last, "policy_version": 0}

    assert writer.add(row(0)) == Arrival() and writer.add(row(1)) == Arrival()
    for bad in (row(2, obs=3), row(2, nxt=5), row(2, act=12), row(3, obs=3, last=True)):
        assert writer.add(bad).left_out.startswith("observation/next_observation/action lengths ")
    assert writer.add(row(2)) == Arrival()
    assert writer.add(row(2, obs=3)).left_out == ("observation/next_observation/action lengths 3/3/2, most of the "
                                                  "episode's rows so far 4/4/2")
    assert writer.add(row(3)) == Arrival()
    assert writer.add(row(3, last=True)) == Arrival()  # the recorder's replay of its last step, marked as the end
    path, left_out = writer.finish(1)
    assert left_out == 0 and writer.last_malformed == 5 and writer.last_missing == []
    ds = read_hdf5(path)
    assert ds.infos["step"].tolist() == [0, 1, 2, 3] and ds.timeouts.tolist() == [0, 0, 0, 1] and ds.obs_dim == 4
    assert ds.metadata["left_out_malformed"] == 5 and "missing_steps" not in ds.metadata
    assert read_episodes(tmp_path).metadata["left_out_malformed"] == 5
    # A bag keeps every message as received: its conversion leaves out the same rows.
    ds, left_out = episode_dataset([row(0), row(1), row(2, obs=3), row(3), row(4, last=True)], 1)
    assert ds.infos["step"].tolist() == [0, 1, 3, 4] and left_out == 0
    assert ds.metadata["left_out_malformed"] == 1 and "missing_steps" not in ds.metadata
    # An odd first row costs only itself. Judged by the first row, it cost every good row after it, and the
    # folder could no longer be read as one recording (its file had the odd row's dimensions).
    first = EpisodeWriter(tmp_path / "odd_first")
    assert first.add(row(0, obs=3)) == Arrival()  # nothing to compare it with yet
    assert first.add(row(1)).left_out and first.add(row(2)).left_out  # said while the odd row ties them
    assert first.add(row(3, last=True)) == Arrival()  # and no more once most rows are the episode's
    path, _ = first.finish(1)
    ds = read_hdf5(path)
    assert ds.infos["step"].tolist() == [1, 2, 3] and ds.obs_dim == 4 and ds.metadata["left_out_malformed"] == 1
    assert first.last_malformed == 1


def test_episodes_waiting_for_a_writable_folder_are_bounded_the_newest_dropped(tmp_path):
    """While the folder cannot be written, finished episodes wait in memory up to max_unwritten_bytes;
    past it the newest is dropped (counted), not kept until the logger is killed with all of them.
    The ones kept are written once the folder is back."""
    from uni_o4_ros.robot.episodes import EpisodeWriter, read_episodes

    folder = tmp_path / "episodes"
    writer = EpisodeWriter(folder)

    def episode(eid: int) -> None:
        for k in range(4):
            writer.add({"episode_id": eid, "step": k, "observation": np.full(3, eid, np.float32),
                        "next_observation": np.full(3, eid, np.float32), "action": np.zeros(2, np.float32),
                        "log_prob": -1.0, "reward": float(eid), "terminal": False, "timeout": k == 3,
                        "policy_version": 0})

    folder.rmdir()
    folder.write_text("not a folder")  # every write fails
    episode(1)
    with pytest.raises(OSError):
        writer.finish(1)
    one = writer.unwritten_bytes
    assert one > 0 and writer.unwritten == [1] and writer.dropped == []
    writer.max_unwritten_bytes = 2 * one  # room for two such episodes
    episode(2)
    with pytest.raises(OSError):
        writer.finish(2)
    episode(3)
    with pytest.raises(OSError):
        writer.finish(3)
    assert writer.unwritten == [1, 2] and writer.dropped == [3] and writer.unwritten_bytes == 2 * one
    folder.unlink()
    folder.mkdir()
    episode(4)
    writer.finish(4)
    assert writer.unwritten == [] and writer.dropped == [3]
    assert read_episodes(folder).rewards.tolist() == [1.0] * 4 + [2.0] * 4 + [4.0] * 4


def test_a_second_session_or_a_restarted_recorder_adds_files_and_replaces_none(tmp_path):
    """Recording into a folder that already holds episodes (yesterday's session, or today's before the
    recorder restarted, whose ids begin at 1 again) continues the numbering; no file is overwritten."""
    from uni_o4_ros.data import read_hdf5
    from uni_o4_ros.robot.episodes import EpisodeWriter

    folder = tmp_path / "robot"

    def record(writer: EpisodeWriter, eid: int, value: float):
        for k in range(3):
            writer.add({"episode_id": eid, "step": k, "observation": np.full(3, value, np.float32),
                        "next_observation": np.full(3, value, np.float32), "action": np.zeros(2, np.float32),
                        "log_prob": -1.0, "reward": value, "terminal": False, "timeout": k == 2,
                        "policy_version": 0})
        return writer.finish(eid)[0]

    monday = EpisodeWriter(folder)
    assert [record(monday, e, e) for e in (1, 2)] == [folder / "episode_000001.hdf5", folder / "episode_000002.hdf5"]
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    tuesday = EpisodeWriter(folder)  # a new logger, and a recorder counting from 1 again
    assert [record(tuesday, e, 10 + e) for e in (1, 2)] == [folder / "episode_000003.hdf5",
                                                            folder / "episode_000004.hdf5"]
    assert record(tuesday, 1, 20.0) == folder / "episode_000005.hdf5"  # the recorder restarted mid-session
    assert all((folder / name).read_bytes() == data for name, data in before.items())  # untouched
    files = sorted(folder.glob("episode_*.hdf5"))
    assert [float(read_hdf5(f).rewards[0]) for f in files] == [1.0, 2.0, 11.0, 12.0, 20.0]
    assert [int(read_hdf5(f).metadata["episode_id"]) for f in files] == [1, 2, 1, 2, 1]  # the recorder's own ids


def test_a_restarted_recorder_and_an_old_recording_played_back_never_mix_into_an_episode(tmp_path):
    """Rows name their recorder run. Before, a recorder restarted during its episode 1 numbered its new episode 1
    too, and the logger merged both into one file step by step (the new run's steps over the old's); an old bag
    played back beside the robot (ros2 bag play) cut the live episodes into pieces and was written with them."""
    from uni_o4_ros.data import read_hdf5
    from uni_o4_ros.robot.episodes import Arrival, EpisodeWriter

    writer = EpisodeWriter(tmp_path)
    today, monday, restarted = ("a" * 32, 2000), ("b" * 32, 1000), ("c" * 32, 3000)  # (session, started_ns)
    value = {today[0]: 200.0, monday[0]: 100.0, restarted[0]: 300.0}
    clock = iter(np.arange(0.0, 100.0, 0.02))  # the logger's clock (s): one row every 20 ms

    def add(run: tuple[str, int], eid: int, k: int, last: bool = False) -> Arrival:
        v = value.get(run[0], 0.0) + k
        return writer.add({"episode_id": eid, "step": k, "observation": np.full(3, v, np.float32),
                           "next_observation": np.full(3, v + 1, np.float32), "action": np.zeros(2, np.float32),
                           "log_prob": -1.0, "reward": 1.0, "terminal": False, "timeout": last, "policy_version": 0,
                           "recorder_session": run[0], "recorder_started_ns": run[1]}, now=next(clock))

    assert add(today, 1, 0) == Arrival() and add(today, 1, 1) == Arrival()
    # Monday's bag played back: its episode 1 arrives between today's rows and is left out, said per row.
    assert [add(monday, 1, k, k == 2).earlier_run for k in range(3)] == [monday[0]] * 3
    assert add(today, 1, 2, True) == Arrival()  # today's episode 1 goes on, not cut off
    first, _ = writer.finish(1, None, today[0])
    assert writer.earlier_rows == {monday[0]: 3}
    assert add(today, 2, 0) == Arrival() and add(today, 2, 1) == Arrival()
    # The recorder restarts during episode 2: its episode 1 cuts off today's episode 2, and merges with nothing.
    assert add(restarted, 1, 0) == Arrival(cut_off=[(today[0], 2)], new_run=True)
    cut, _ = writer.finish(2, {"end_missing": True}, today[0])
    for k in (1, 2):
        assert add(restarted, 1, k, k == 2) == Arrival()
    new, _ = writer.finish(1, None, restarted[0])
    assert add(today, 3, 0).earlier_run == today[0]  # the run before a restart is over too
    assert sorted(tmp_path.glob("episode_*.hdf5")) == [first, cut, new]
    files = {name: read_hdf5(path) for name, path in (("first", first), ("cut", cut), ("new", new))}
    assert files["first"].observations[:, 0].tolist() == [200, 201, 202]  # today's episode 1, whole
    assert files["cut"].observations[:, 0].tolist() == [200, 201] and files["cut"].metadata["end_missing"]
    assert files["new"].observations[:, 0].tolist() == [300, 301, 302]
    assert [f.metadata["recorder_session"] for f in files.values()] == [today[0], today[0], restarted[0]]
    assert [int(f.metadata["episode_id"]) for f in files.values()] == [1, 2, 1]  # the recorders' own ids
    # Restarted again, and heard first at its episode 3: its episodes 1 and 2 never reached the logger, and are named.
    assert add(("f" * 32, 4000), 3, 0) == Arrival(skipped=[1, 2], new_run=True)
    # A row naming no recorder's run (it would go into the file's metadata) is left out; nothing else changes.
    assert add(("é" * 32, 9000), 1, 0) == Arrival(bad_session="é" * 32) and writer.runs.current.session == "f" * 32


def test_a_recorder_restarted_with_its_clock_set_back_is_recorded_once_the_run_before_is_silent(tmp_path):
    """Runs are told apart by their start on the recorder's clock. A recorder restarted after that clock was set
    back (or a stray message dated in the future) looks like an old recording: its rows are left out only while
    the run recorded so far is heard, then recorded (runs.QUIET_S of silence), with the episodes the new run
    lost meanwhile named."""
    from uni_o4_ros.robot.episodes import Arrival, EpisodeWriter
    from uni_o4_ros.robot.runs import QUIET_S

    writer = EpisodeWriter(tmp_path)
    before, after = ("d" * 32, 5000), ("e" * 32, 4000)  # `after` restarted later, on a clock set back

    def add(run: tuple[str, int], eid: int, k: int, now: float) -> Arrival:
        return writer.add({"episode_id": eid, "step": k, "observation": np.zeros(3, np.float32),
                           "next_observation": np.zeros(3, np.float32), "action": np.zeros(2, np.float32),
                           "log_prob": -1.0, "reward": 1.0, "terminal": False, "timeout": False, "policy_version": 0,
                           "recorder_session": run[0], "recorder_started_ns": run[1]}, now=now)

    assert add(before, 1, 0, now=10.0) == Arrival()
    assert add(after, 1, 0, now=11.0).earlier_run == after[0]  # 1 s of silence: could be a playback
    assert add(after, 1, 1, now=10.0 + QUIET_S - 0.01).earlier_run == after[0]
    assert add(after, 1, 2, now=10.0 + QUIET_S) == Arrival(cut_off=[(before[0], 1)], gave_up=before[0])
    writer.finish(1, {"end_missing": True}, before[0])  # as the logger does with what is cut off
    assert add(after, 1, 3, now=10.0 + QUIET_S + 0.02) == Arrival()
    path, _ = writer.finish(1, None, after[0])
    assert writer.last_missing == [(0, 1)]  # the two rows left out while it looked like a playback: said
    # `before` heard again (it started later, so it is taken back at once): a run heard before is not new, and
    # its episodes 1 .. 4 are not said to be lost
    assert add(before, 5, 0, now=30.0) == Arrival()


def test_a_playback_heard_between_the_live_runs_transitions_is_never_taken_one_begun_in_a_pause_is():
    """runs.StreamRuns, on the reader's clock (s). A playback interleaves with the live run: it stays out even when
    the robot's recorder then pauses for long (a fall waiting to be re-armed), where the learner would have taken
    Monday's transitions as today's. One begun during such a pause is taken, and given up when the live run sends
    again."""
    from uni_o4_ros.robot.runs import QUIET_S, StreamRuns

    runs, live, monday, tuesday = StreamRuns(), ("a" * 32, 2000), ("b" * 32, 1000), ("c" * 32, 1500)
    assert runs.hear(*live, now=0.0) == "switch"
    assert runs.hear(*monday, now=0.01) == "earlier"
    assert runs.hear(*live, now=0.02) == "same"  # Monday's was heard between two of the live run's rows
    assert [runs.hear(*monday, now=t) for t in (5.0, QUIET_S + 1, 100.0)] == ["earlier"] * 3  # the pause: still out
    assert runs.hear(*tuesday, now=100.01) == "switch_earlier"  # begun in the pause: taken, and said
    assert runs.hear(*live, now=130.0) == "switch"  # the robot's recorder sends again: its run is the newer
    assert runs.hear(*tuesday, now=130.01) == "earlier" and runs.current.session == live[0]


def test_the_damping_limit_of_an_episode_holds_when_the_wall_clock_is_set_back():
    """The recorder times how long the robot was damped by the stamps of its states, which the controller takes
    from the wall clock: NTP setting it back 60 s mid-stretch delayed the episode's end (max_damped 0.1 s) by a
    minute, a transition across it joining states the policy did not act between."""
    from uni_o4_ros.robot.episodes import DampingWatch

    s = 10**9
    watch = DampingWatch(limit=0.1)
    assert watch.exceeded(True, 1000 * s) == 0.0
    assert watch.exceeded(True, 1000 * s + 50_000_000) == 0.0
    back = 940 * s  # the clock went a minute back
    assert watch.exceeded(True, back) == 0.0 and watch.exceeded(True, back + 60_000_000) == 0.0
    assert watch.exceeded(True, back + 120_000_000) == pytest.approx(0.12)  # 0.1 s after the step, not 60 s
    assert watch.exceeded(False, back + 140_000_000) == 0.0 and DampingWatch(limit=0.0).exceeded(True, 5 * s) == 0.0


def test_remote_estop_fires_once_per_press_of_the_whole_combination():
    rule = RemoteCombo(frozenset({"L2", "B"}))
    held = [set(), {"L2"}, {"L2", "B"}, {"L2", "B", "A"}, {"B"}, {"L2", "B"}, set()]
    assert [rule.pressed(frozenset(b)) for b in held] == [False, False, True, False, False, True, False]
    assert not RemoteCombo(frozenset()).pressed(frozenset({"L2", "B"}))  # no combination: never


def test_battery_guard_faults_below_the_limit_until_charged_past_it_and_warns_once_per_step():
    guard = BatteryGuard(min_soc=15)
    draining = [40, 24, 23, 19, 16, 15, 14, 16, 19, 20, 30]
    faults = [guard.fault(soc) is not None for soc in draining]
    assert faults == [False] * 6 + [True] * 3 + [False] * 2  # 14 trips it; it holds until 20
    warned = BatteryGuard(min_soc=15)
    said = [warned.warning(soc) for soc in draining]
    assert [soc for soc, w in zip(draining, said) if w] == [24, 19]  # within 10, then within 5: once each
    assert "e-stop engages below 15%" in said[1]
    # A Go1 that reports no charge (0 while it answers) is not stopped for it, and the log says it is unchecked.
    assert guard.fault(0) is None and "not checked" in BatteryGuard(min_soc=15).warning(0)
    # ...but a reading of 0 does not clear a low battery already held: re-armed on it, the robot walked until the
    # next real reading stopped it again.
    low = BatteryGuard(min_soc=15)
    assert low.fault(10) is not None and low.fault(0) is not None and low.fault(12) is not None
    assert low.fault(21) is None and low.fault(0) is None
    assert BatteryGuard(min_soc=0).fault(3) is None  # 0: off


def test_motor_dropout_needs_a_motor_out_of_servo_mode_for_its_ticks_once_all_reported_servo():
    names = tuple(f"m{i}" for i in range(12))
    servo, out = np.full(12, 0x0A), np.full(12, 0x0A)
    out[5] = 0x08
    rule = MotorDropout(0x0A, names, ticks=3)
    assert [rule.fault(m) for m in (out, out, out, out)] == [None] * 4  # not armed: modes may be unreported
    reads = [servo, out, servo, out, out, out, out, servo]
    faults = [rule.fault(m) for m in reads]
    assert [f is not None for f in faults] == [False, False, False, False, False, True, True, False]
    assert "m5 (mode 0x08)" in faults[5]  # one odd reading (the second) did not stop the walk
    never = MotorDropout(0x0A, names, ticks=3)
    assert all(never.fault(np.zeros(12)) is None for _ in range(10))  # a robot that reports no modes
    off = MotorDropout(0x0A, names, ticks=0)
    assert all(off.fault(m) is None for m in (servo, out, out, out, out))


def test_step_pairing_uses_the_answered_state_whatever_the_arrival_order():
    pair = StepPairing(max_wait=0.1)
    pair.add_state(1, "s1")
    pair.add_odom(1, "o1")
    pair.add_step(2, "step2", now=0.0)  # the policy's answer to state 2 overtook state 2 itself
    assert pair.ready(now=0.01) == []  # so it waits ...
    pair.add_state(2, "s2")
    assert pair.ready(now=0.01) == []  # ... for the odometry of that moment too
    pair.add_odom(2, "o2")
    assert pair.ready(now=0.01) == [("step2", "s2", "o2")] and pair.unpaired == 0

    # The robot: the T265 stamps its own clock. A step takes the newest odometry once a newer sample
    # exists, and never waits longer than max_wait for a sample that will not come.
    pair.add_state(10, "s10")
    pair.add_odom(7, "o7")
    pair.add_step(10, "step10", now=1.0)
    assert pair.ready(now=1.01) == []
    pair.add_odom(13, "o13")
    assert pair.ready(now=1.01) == [("step10", "s10", "o13")] and pair.unpaired == 1
    pair.add_step(20, "step20", now=2.0)  # its state was lost
    assert pair.ready(now=2.05) == []
    assert pair.ready(now=2.2) == [("step20", "s10", "o13")] and pair.unpaired == 2
    assert pair.lost_states == 1  # step20's; step10 only took another odometry, as on the robot at every step


def test_a_robot_put_back_is_rate_limited_from_its_new_pose_not_the_old_target():
    from uni_o4_ros.robot.controller import ControllerCore, Mode

    core, up = ControllerCore(), np.array([1.0, 0.0, 0.0, 0.0])
    far = go1.DEFAULT_Q + 0.5
    for t in range(20):  # walk the targets far from the default pose, then the simulator resets
        core.on_command(far, 1, now=t * 0.02)
        core.tick(up, far, np.zeros(12), now=t * 0.02)
    core.robot_put_back()
    assert core.mode == Mode.DAMPING
    out = core.tick(up, go1.DEFAULT_Q, np.zeros(12), now=0.41)
    assert out.mode == Mode.DAMPING  # the command from before the reset is not replayed
    core.on_command(go1.DEFAULT_Q + 0.5, 1, now=0.42)
    out = core.tick(up, go1.DEFAULT_Q, np.zeros(12), now=0.42)
    assert out.mode == Mode.ACTIVE
    assert np.allclose(out.command.q, go1.DEFAULT_Q + core.cfg.max_target_step, atol=1e-6)  # one step from the pose


def test_recording_tally_ends_a_recording_with_an_episode_the_logger_never_got_instead_of_waiting():
    """`uni-o4 bringup --episodes 3` used to count files only: a lost episode kept it waiting for ever."""
    from uni_o4_ros.robot.recording_tally import RecordingTally

    tally = RecordingTally(wanted=3, grace=30.0)
    for eid, t in ((1, 10.0), (2, 30.0), (3, 50.0)):
        tally.on_end(eid, 1000, now=t)
    tally.on_file(1)
    tally.on_file(3)  # the logger missed episode 2 entirely
    assert tally.newly_lost(now=59.9) == [] and not tally.finished()  # its file may still come (DDS resends)
    assert tally.newly_lost(now=60.0) == [2] and tally.finished()
    assert tally.newly_lost(now=99.0) == [] and tally.lost == [2]  # named once


def test_recording_tally_waits_for_a_late_file_and_not_for_an_episode_with_nothing_to_record():
    from uni_o4_ros.robot.recording_tally import RecordingTally

    tally = RecordingTally(wanted=2, grace=30.0)
    tally.on_end(1, 400, now=0.0)
    tally.on_file(1)
    tally.on_end(2, 0, now=1.0)  # an e-stop before its first transition: no file will ever come
    assert tally.empty == [2] and tally.waiting_for() == [] and not tally.finished()  # the recorder runs 2 again
    tally.on_end(2, 400, now=5.0)
    assert tally.waiting_for() == [2] and not tally.finished()
    tally.on_end(2, 400, now=25.0)  # the same end heard again does not restart its clock
    tally.on_file(2)  # late, within the grace: written, not lost
    assert tally.newly_lost(now=40.0) == [] and tally.finished() and tally.lost == []
    once = RecordingTally(wanted=1)  # `--episodes 1`, e-stopped as it began: it stopped with nothing recorded
    once.on_end(1, 0, now=0.0)
    assert not once.finished()
    # The recorder gives an empty episode's number to the next one: that one's end is waited for.
    reused = RecordingTally(wanted=1)
    reused.on_end(1, 0, now=0.0)
    reused.on_end(1, 250, now=9.0)
    assert reused.empty == [] and reused.waiting_for() == [1] and not reused.finished()
    # A file of each: done at once, whether or not the end events came yet (they travel on another topic).
    early = RecordingTally(wanted=2)
    early.on_file(1)
    early.on_file(2)
    assert early.finished()
    assert not RecordingTally(wanted=0).finished()  # no limit: the recording ends on Ctrl-C


@pytest.mark.parametrize("field, value", [("max_target_step", 0.0), ("torque_fraction", 1.5), ("torque_fraction", 0.0),
                                          ("watchdog_timeout", -0.1), ("max_tilt", 0.0), ("max_tilt", 4.0),
                                          ("damping_kd", 0.0), ("silence_latch", -1.0), ("watchdog_timeout", math.nan)])
def test_safety_config_refuses_limits_that_mean_nothing(field, value):
    """A robot that never damps, falls at every tick, pushes past its motors' torque or freezes: refused
    before a controller is built, naming the limit."""
    with pytest.raises(ValueError, match=f"^{field}: must be"):
        SafetyConfig(**{field: value})
    SafetyConfig()  # the defaults are sound


def test_command_limits_hold_a_velocity_command_inside_them_and_refuse_what_has_no_nearest_value():
    from uni_o4_ros.robot.command import PRETRAIN_COMMAND_VX, CommandLimits, CommandLimitsError
    from uni_o4_ros.sim.go1_env import Go1EnvConfig

    limits = CommandLimits()
    assert (limits.low[0], limits.high[0]) == PRETRAIN_COMMAND_VX == Go1EnvConfig().command_vx  # what pretrain trains
    assert limits.clamp((50.0, -2.0, 0.1)) == ((1.0, -0.3, 0.1), True)
    assert limits.clamp((-0.2, 0.0, 0.0)) == ((0.0, 0.0, 0.0), True)  # no walking backwards on a forward-only gait
    assert limits.clamp((0.5, 0.1, -0.4)) == ((0.5, 0.1, -0.4), False)
    with pytest.raises(CommandLimitsError, match="3 finite numbers"):
        limits.clamp((float("nan"), 0.0, 0.0))
    with pytest.raises(CommandLimitsError, match="low .* is above high"):
        CommandLimits(low=(0.0, 0.5, 0.0), high=(1.0, 0.3, 0.5))
    field_run = limits.widened_to([0.5, 1.5])  # `uni-o4 field --high-speed 1.5` asks for 1.5 m/s itself
    assert field_run.clamp((1.5, 0.0, 0.0)) == ((1.5, 0.0, 0.0), False) and field_run.low == limits.low
    wider = CommandLimits(low=(-1.0, -1.0, -1.0), high=(2.0, 1.0, 1.0))
    assert wider.clamp((1.5, 0.0, 0.0)) == ((1.5, 0.0, 0.0), False)


def test_a_velocity_command_lapses_to_the_standing_one_after_its_sender_falls_silent():
    """A teleop that dies mid-command sends no stop: its last command drove the robot until the e-stop. Now a
    command holds `timeout` s after it came; a sender repeating it (a joystick at 10 Hz) keeps it in force."""
    from uni_o4_ros.robot.command import CommandHold, CommandLimits, CommandLimitsError

    hold = CommandHold(CommandLimits(), standing=(0.0, 0.0, 0.0), timeout=0.5)
    assert hold.current(0.0) == ((0.0, 0.0, 0.0), None)
    assert hold.offer((50.0, 0.0, 0.2), now=1.0) == ((1.0, 0.0, 0.2), True)  # clamped, as before
    for k in range(1, 30):  # 10 Hz for 3 s: never lapses
        assert hold.current(1.0 + 0.1 * k - 0.05) == ((1.0, 0.0, 0.2), None)
        hold.offer((50.0, 0.0, 0.2), now=1.0 + 0.1 * k)
    last = 1.0 + 2.9
    assert hold.current(last + 0.5) == ((1.0, 0.0, 0.2), None)  # exactly the timeout: still in force
    command, silence = hold.current(last + 0.6)
    assert command == (0.0, 0.0, 0.0) and silence == pytest.approx(0.6)  # lapsed: said once
    assert hold.current(last + 5.0) == ((0.0, 0.0, 0.0), None)
    with pytest.raises(CommandLimitsError):
        hold.offer((float("inf"), 0.0, 0.0), now=10.0)
    assert hold.current(10.0) == ((0.0, 0.0, 0.0), None)  # a non-finite command changes nothing
    forever = CommandHold(CommandLimits(), standing=(0.5, 0.0, 0.0), timeout=0.0)  # 0: holds until the next
    forever.offer((0.2, 0.0, 0.0), now=0.0)
    assert forever.current(1e6) == ((0.2, 0.0, 0.0), None)
    with pytest.raises(CommandLimitsError, match="timeout must be >= 0"):
        CommandHold(CommandLimits(), (0.0, 0.0, 0.0), timeout=float("nan"))
    with pytest.raises(CommandLimitsError, match="standing command .* is outside"):
        CommandHold(CommandLimits(), (2.0, 0.0, 0.0), timeout=0.5)


def test_recorder_core_rewards_each_step_for_the_command_it_followed():
    """A joystick changes the command mid-episode: the transitions after it are rewarded for the new one."""
    from uni_o4_ros.robot.episodes import EpisodeRecorderCore, PolicyStep, RobotMotion
    from uni_o4_ros.robot.reward import reward

    core = EpisodeRecorderCore(command_velocity=(0.5, 0.0, 0.0))
    core.start()
    motion = RobotMotion(np.array([0.5, 0.0]), 0.0, 0.0, np.zeros(12), np.zeros(12), np.zeros(12))
    commands = [None, None, (1.0, 0.0, 0.2), (1.0, 0.0, 0.2)]
    outs = [core.on_step(PolicyStep(i, np.zeros(3), np.zeros(12), -1.0, 0, command=c), motion)
            for i, c in enumerate(commands)]

    def expected(vx: float, wz: float) -> float:
        return reward(np.array([0.5, 0.0]), np.array([vx, 0.0]), 0.0, wz, 0.0, *[np.zeros(12)] * 5)[0]

    rewards = [o["reward"] for o in outs[1:]]
    assert rewards == pytest.approx([expected(0.5, 0.0), expected(0.5, 0.0), expected(1.0, 0.2)])
    assert expected(1.0, 0.2) < 0.6 * expected(0.5, 0.0)  # the difference is not a rounding one


def test_episode_files_with_odd_loss_counts_or_versions_are_named_or_left_out_not_a_traceback(tmp_path):
    """An episode file another program wrote (or edited): metadata/missing_steps as an array ended `offline` on
    the folder in int()'s TypeError, and policy versions stored as text ended `uni-o4 plot` in numpy's ufunc
    error."""
    from uni_o4_ros.data import DatasetError, OfflineDataset, write_hdf5
    from uni_o4_ros.robot.episodes import episode_series, read_episodes

    def episode(path, **extra) -> None:
        n = 4
        write_hdf5(path, OfflineDataset(
            observations=np.zeros((n, 3), np.float32), actions=np.zeros((n, 2), np.float32),
            rewards=np.ones(n, np.float32), terminals=np.zeros(n, bool), timeouts=np.eye(n, dtype=bool)[-1],
            next_observations=np.zeros((n, 3), np.float32), **extra))

    episode(tmp_path / "a" / "episode_000001.hdf5", metadata={"missing_steps": np.array([1, 2])})
    with pytest.raises(DatasetError, match=r"episode_000001.hdf5: metadata/missing_steps is .*not a count"):
        read_episodes(tmp_path / "a")
    episode(tmp_path / "b" / "episode_000001.hdf5", infos={"policy_version": np.array([b"v1"] * 4)})
    series = episode_series(tmp_path / "b")
    assert series[("episodes", "return")] == [(1, 4.0)] and ("episodes", "policy version") not in series

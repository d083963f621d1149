"""The Go1 path through the real Unitree SDK binary (`unitree_legged_sdk.robot_interface`) over UDP,
against the stand-in Go1 (MuJoCo behind the robot's low-level protocol): the wire format both ways,
corrupt datagrams, commands the wire cannot carry, a missing robot, and the pd_controller process
driving the stand-in, damping when the link drops and staying damped until re-armed."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager

import numpy as np
import pytest
from test_control_loop import Observer

from conftest import start_node as start
from conftest import stop_nodes as stop
from uni_o4_ros.hardware import go1_lowlevel as wire
from uni_o4_ros.hardware.unitree_sdk import UnitreeSdkBackend, load_robot_interface
from uni_o4_ros.robot.go1 import DEFAULT_Q, SDK_FROM_POLICY
from uni_o4_ros.robot.safety import MotorCommand, SafetyConfig, damping_command
from uni_o4_ros.sim.go1_udp_robot import Go1UdpRobot

sdk = load_robot_interface()


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5.0)
    return s


class ServedRobot:
    """The stand-in answering in a thread until paused or closed (the test's own process: its commands
    can be inspected directly)."""

    def __init__(self) -> None:
        self.robot = Go1UdpRobot(port=0)
        self.serving = threading.Event()
        self.serving.set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            if self.serving.is_set():
                self.robot.serve_once(0.05)
            else:  # the link is down: datagrams are lost, as on a cut cable
                self.robot.sock.settimeout(0.05)
                try:
                    self.robot.sock.recv(2048)
                except TimeoutError:
                    pass

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)
        self.robot.close()


@contextmanager
def stand_in_under_control(ros_env, policy_dir, *params: str):
    """The stand-in Go1 served from this process, a pd_controller driving it through the SDK binary with
    `params`, a policy, and an observer: (served, observer, controller process)."""
    served = ServedRobot()
    # state_timeout generous for a loaded CI machine: the stand-in shares this process with the test.
    ctrl = start("uni_o4_ros.nodes.pd_controller_node", ros_env, "backend:=unitree_sdk", "robot_ip:=127.0.0.1",
                 f"robot_port:={served.robot.port}", "local_port:=0", "state_timeout:=0.5", *params)
    pol = start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={policy_dir}")
    obs = Observer()
    try:
        yield served, obs, ctrl
    finally:
        obs.close()
        stop(pol, ctrl)
        served.close()


def test_crc_is_unitrees_bitwise_definition():
    def bitwise(data: bytes) -> int:  # CRC-32/MPEG-2 over little-endian words, MSB first
        crc = 0xFFFFFFFF
        for word in np.frombuffer(data[: len(data) // 4 * 4], "<u4"):
            for bit in range(31, -1, -1):
                top = crc >> 31
                crc = (crc << 1) & 0xFFFFFFFF
                if top ^ ((int(word) >> bit) & 1):
                    crc ^= 0x04C11DB7
        return crc

    rng = np.random.default_rng(1)
    for n in (0, 4, 7, 608, 803):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert wire.crc32_words(data) == bitwise(data), n


def test_wire_format_matches_the_sdk_binary_both_ways():
    rng = np.random.default_rng(0)
    rx = udp_socket()
    udp = sdk.UDP(wire.LOWLEVEL, 0, "127.0.0.1", rx.getsockname()[1])
    cmd = sdk.LowCmd()
    udp.InitCmdData(cmd)
    values = {"q": rng.uniform(-2, 2, 12), "dq": rng.uniform(-5, 5, 12), "tau": rng.uniform(-30, 30, 12),
              "kp": rng.uniform(0, 60, 12), "kd": rng.uniform(0, 5, 12)}
    for i in range(12):
        m = cmd.motorCmd[i]
        m.q, m.dq, m.tau, m.Kp, m.Kd = (float(values[k][i]) for k in ("q", "dq", "tau", "kp", "kd"))
    udp.SetSend(cmd)
    udp.Send()
    sent, peer = rx.recvfrom(2048)
    # The stand-in's encoder reproduces the SDK's datagram to the byte, crc included ...
    names = ("q", "dq", "tau", "kp", "kd")
    assert sent == wire.encode_low_cmd(np.full(12, wire.MODE_SERVO), *(values[k] for k in names))
    # ... and decodes it to the values set, within the wire's fixed-point steps.
    got = wire.decode_low_cmd(sent)
    for k, step in (("q", 1e-6), ("dq", 1e-5), ("tau", 1 / 256), ("kp", 1 / 32), ("kd", 1 / 16)):
        assert np.all(np.abs(got[k] - values[k]) <= step), k

    # A state from the stand-in's encoder, as the SDK reads it.
    q, dq, tau = rng.uniform(-2, 2, 12), rng.uniform(-5, 5, 12), rng.uniform(-30, 30, 12)
    quat = np.array([0.9, 0.1, -0.2, 0.3]) / np.linalg.norm([0.9, 0.1, -0.2, 0.3])
    rx.sendto(wire.encode_low_state(q, dq, tau, quat, [0.1, 0.2, 0.3], [0.0, 0.0, 9.81], [0.0, 0.0, 0.0],
                                    [10, 20, 30, 40], tick_us=123456, remote=wire.encode_remote({"L2", "B"})), peer)
    state = sdk.LowState()
    _recv(udp)
    udp.GetRecv(state)
    assert np.allclose([state.motorState[i].q for i in range(12)], q, atol=1e-6)
    assert np.allclose([state.motorState[i].dq for i in range(12)], dq, atol=1e-5)
    assert np.allclose([state.motorState[i].tauEst for i in range(12)], tau, atol=1 / 256)
    assert np.allclose(state.imu.quaternion, quat, atol=1e-6)
    assert list(state.footForce) == [10, 20, 30, 40] and state.tick == 123456
    assert wire.pressed_buttons(state.wirelessRemote) == {"L2", "B"}
    assert state.wirelessRemote[2] == 0b0010_0000 and state.wirelessRemote[3] == 0b0000_0010  # joystick.h bits
    rx.close()


def poll_until(cond, timeout: float = 10.0) -> None:
    """Check `cond` every millisecond until it holds; fail after `timeout` s (a deadline, not a sleep
    standing in for synchronisation)."""
    import time

    tick = threading.Event()
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        tick.wait(0.001)


def _recv(udp) -> None:
    poll_until(lambda: udp.Recv() >= 0)  # the SDK's Recv is non-blocking: 0 once it accepted a datagram


def test_corrupt_or_foreign_datagrams_are_refused_by_robot_and_sdk():
    robot = Go1UdpRobot(port=0)
    tx = udp_socket()
    good = wire.encode_low_cmd(np.full(12, wire.MODE_SERVO), DEFAULT_Q[SDK_FROM_POLICY], np.zeros(12), np.zeros(12),
                               np.full(12, 20.0), np.full(12, 0.5))
    flipped = bytearray(good)
    flipped[40] ^= 0x04  # one bit of a motor target
    try:
        for bad, reason in ((bytes(flipped), "crc"), (good[:-1], "bytes"), (b"\x00" * len(good), "not a low-level")):
            tx.sendto(bad, ("127.0.0.1", robot.port))
            assert not robot.serve_once(5.0)
            assert reason in robot.rejected[-1]
        assert robot.steps == 0  # nothing moved the simulated motors
        tx.sendto(good, ("127.0.0.1", robot.port))
        assert robot.serve_once(5.0) and robot.steps == 1
        state, _ = tx.recvfrom(2048)
        assert len(state) == wire.LOW_STATE_LENGTH and np.allclose(wire.decode_low_state(state)["q"],
                                                                   robot.state.q[SDK_FROM_POLICY], atol=1e-6)

        # The SDK drops a state whose crc does not match: its last good state stands.
        udp = sdk.UDP(wire.LOWLEVEL, 0, "127.0.0.1", tx.getsockname()[1])
        cmd = sdk.LowCmd()
        udp.InitCmdData(cmd)
        udp.SetSend(cmd)
        udp.Send()
        _, peer = tx.recvfrom(2048)
        tx.sendto(state, peer)
        _recv(udp)
        corrupt = bytearray(state)
        corrupt[80] ^= 0x40  # motor 0's q
        tx.sendto(bytes(corrupt), peer)
        tx.sendto(state, peer)  # a good one after it, so the test knows the corrupt one was seen
        _recv(udp)
        assert udp.Recv() < 0  # the corrupt datagram was not accepted
        st = sdk.LowState()
        udp.GetRecv(st)
        assert st.motorState[0].q == pytest.approx(float(robot.state.q[SDK_FROM_POLICY][0]), abs=1e-6)
    finally:
        tx.close()
        robot.close()


def test_backend_never_sends_what_the_wire_would_wrap_and_damps_instead():
    served = ServedRobot()
    # a state timeout no loaded machine reaches between a read and the fault() after it
    backend = UnitreeSdkBackend("127.0.0.1", served.robot.port, 0, sdk=sdk, state_timeout=5.0)
    try:
        ok = MotorCommand(q=DEFAULT_Q.copy(), dq=np.zeros(12, np.float32), kp=np.full(12, 20.0, np.float32),
                          kd=np.full(12, 0.5, np.float32), tau=np.zeros(12, np.float32))
        backend.write(ok)
        poll_until(lambda: served.robot.steps >= 1)
        first = served.robot.commands[-1]
        assert np.allclose(first["q"], DEFAULT_Q[SDK_FROM_POLICY], atol=1e-6)  # SDK order: FR hip first
        assert first["q"][0] == pytest.approx(-0.1, abs=1e-6) and first["q"][3] == pytest.approx(0.1, abs=1e-6)
        assert np.allclose(first["kp"], 20.0) and np.allclose(first["kd"], 0.5)

        # Kp 5000 would arrive as 904 (uint16 overflow of 5000 x 32); a NaN target is no target.
        for bad, needle in ((MotorCommand(ok.q, ok.dq, np.full(12, 5000.0, np.float32), ok.kd, ok.tau), "kp"),
                            (MotorCommand(np.full(12, np.nan, np.float32), ok.dq, ok.kp, ok.kd, ok.tau), "not finite")):
            n = served.robot.steps
            backend.write(bad)
            poll_until(lambda n=n: served.robot.steps > n)
            sent = served.robot.commands[-1]
            assert np.all(sent["kp"] == 0) and np.allclose(sent["kd"], SafetyConfig().damping_kd)
            assert np.all(sent["q"] >= wire.POS_STOP_F / 2)  # position loop off: pure damping
            assert needle in backend.last_error
            # a fault, told once: the controller latches the e-stop instead of reporting ACTIVE over damping (and
            # its e-stop, which sends only damping, can be re-armed)
            poll_until(lambda: backend.read() is not None)  # a robot heard from (no state yet: no fault to judge)
            assert needle in (backend.fault() or "")
            assert backend.fault() is None
        assert backend.refused == 2
    finally:
        served.close()


def test_a_missing_robot_is_reported_as_a_fault_and_only_damping_is_sent():
    silent = udp_socket()  # where the robot should be: it receives, never answers
    now = [0.0]
    backend = UnitreeSdkBackend("127.0.0.1", silent.getsockname()[1], 0, connect_timeout=2.0, sdk=sdk,
                                clock=lambda: now[0])
    try:
        assert backend.read() is None and backend.fault() is None  # still within the connect timeout
        asked = wire.decode_low_cmd(silent.recvfrom(2048)[0])  # waiting, it asks with the damping command
        assert np.all(asked["kp"] == 0) and np.all(asked["kd"] > 0)
        now[0] = 2.5
        assert backend.read() is None
        fault = backend.fault()
        assert fault is not None and "no LowState" in fault and "low-level mode" in fault
    finally:
        silent.close()


def test_a_bad_address_or_a_local_port_in_use_is_refused():
    """The SDK would send nowhere, or only print and carry on unbound (two controllers, one robot)."""
    from uni_o4_ros.hardware.t265 import DeviceError

    with pytest.raises(DeviceError, match="not an IPv4 address"):
        UnitreeSdkBackend("go1.local", 8007, 0, sdk=sdk)
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("", 0))
    try:
        with pytest.raises(DeviceError, match=f"port {taken.getsockname()[1]} is in use"):
            UnitreeSdkBackend("127.0.0.1", 8007, taken.getsockname()[1], sdk=sdk)
    finally:
        taken.close()


def test_controller_drives_the_stand_in_through_the_sdk_and_latches_damping_when_the_link_drops(
        ros_env, standing_policy):
    served = ServedRobot()
    # state_timeout generous for a loaded CI machine: the stand-in shares this process with the test.
    ctrl = start("uni_o4_ros.nodes.pd_controller_node", ros_env, "backend:=unitree_sdk", "robot_ip:=127.0.0.1",
                 f"robot_port:={served.robot.port}", "local_port:=0", "state_timeout:=0.5", "remote_rearm:=L2+A",
                 "activation_step:=0.05")
    pol = start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}")
    obs = Observer()
    try:
        obs.wait(lambda: obs.modes_since(0).count(1) >= 100)  # 2 s of closed-loop control through the SDK
        last = served.robot.commands[-1]
        assert np.allclose(last["kp"], 20.0) and np.allclose(last["kd"], 0.5)
        assert np.all(np.abs(last["q"] - DEFAULT_Q[SDK_FROM_POLICY]) < 0.3)  # the standing pose, SDK order
        active = [s for s in obs.states if s.mode == 1]
        assert np.all(np.abs(np.asarray(active[-1].q) - DEFAULT_Q) < 0.3)  # read back in package order
        assert served.robot.state.position[2] > 0.2  # it stands

        served.serving.clear()  # the link drops
        n = len(obs.states)
        obs.wait(lambda: 2 in obs.modes_since(n))
        served.robot.commands.clear()
        served.serving.set()  # the link comes back; the policy still sends commands
        obs.wait(lambda: len(served.robot.commands) >= 25)
        assert all(np.all(c["kp"] == 0) for c in served.robot.commands)  # damping only: latched
        n = len(obs.states)
        obs.wait(lambda: len(obs.states) >= n + 10)
        assert set(obs.modes_since(n)) == {2}

        sagged = served.robot.state.position[2]
        assert "re-armed" in obs.estop(False)
        obs.wait(lambda: served.robot.commands and np.allclose(served.robot.commands[-1]["kp"], 20.0))
        # It rises from where damping left it at activation_step (0.05 rad a tick), not at max_target_step (0.2)
        first = next(k for k, c in enumerate(served.robot.commands) if np.allclose(c["kp"], 20.0))
        obs.wait(lambda: len(served.robot.commands) >= first + 30)
        rise = np.array([c["q"] for c in list(served.robot.commands)[first:first + 30]])
        steps = np.abs(np.diff(rise, axis=0)).max(axis=1)
        assert steps[:5].min() > 0.049 and steps[:5].max() <= 0.05 + 1e-5, (sagged, steps)
        assert steps.max() <= 0.2 + 1e-5, steps  # then max_target_step

        # The operator holds L2+B on the robot's remote: e-stop, without a laptop.
        n = len(obs.states)
        served.robot.buttons = frozenset({"L2", "B"})
        obs.wait(lambda: 2 in obs.modes_since(n))
        served.robot.buttons = frozenset()
        served.robot.commands.clear()
        obs.wait(lambda: len(served.robot.commands) >= 10)
        assert all(np.all(c["kp"] == 0) for c in served.robot.commands)  # released: still damped

        # The operator re-arms from the remote with L2+A (remote_rearm), but never while L2+B is held.
        served.robot.buttons = frozenset({"L2", "B", "A"})
        served.robot.commands.clear()
        obs.wait(lambda: len(served.robot.commands) >= 25)
        assert all(np.all(c["kp"] == 0) for c in served.robot.commands)
        served.robot.buttons = frozenset()
        n = len(obs.states)
        obs.wait(lambda: len(obs.states) >= n + 10)
        assert set(obs.modes_since(n)) == {2}
        served.robot.buttons = frozenset({"L2", "A"})
        obs.wait(lambda: np.allclose(served.robot.commands[-1]["kp"], 20.0))  # active again
        served.robot.buttons = frozenset()
    finally:
        obs.close()
        stop(pol, ctrl)
    # A stopped controller leaves the motors damped, not stiff at the last target.
    poll_until(lambda: len(served.robot.commands) > 0 and np.all(served.robot.commands[-1]["kp"] == 0))
    served.close()
    err = ctrl.stderr.read()
    assert ctrl.returncode == 0, err
    # started without robot.yaml's safety settings: said, since the node's defaults are the simulator's
    assert "the Go1 with the simulator's start_latched False, silence_latch 0.0 (config/robot.yaml sets" in err, err


def _damped_and_held(served, obs, reading, held: tuple, says, cleared) -> None:
    """A robot reading a guard watches (the battery, a motor's heat), from a walking robot: `reading(held[0])`
    engages the e-stop (damped, though the policy answers); at each of `held` a re-arm from the service (whose
    answer names `says(value)`) and from the remote (L2+A) is refused; at `cleared` a re-arm goes through."""
    n = len(obs.states)
    reading(held[0])
    obs.wait(lambda: 2 in obs.modes_since(n))
    served.robot.commands.clear()
    obs.wait(lambda: len(served.robot.commands) >= 25)
    assert all(np.all(c["kp"] == 0) for c in served.robot.commands)
    for value in held:
        reading(value)
        n = len(obs.states)
        obs.wait(lambda n=n: len(obs.states) >= n + 5)
        answer = obs.estop(False)
        assert answer.startswith("not re-armed") and says(value) in answer, answer
        served.robot.buttons = frozenset({"L2", "A"})
        n = len(obs.states)
        obs.wait(lambda n=n: len(obs.states) >= n + 25)
        served.robot.buttons = frozenset()
        assert set(obs.modes_since(n)) == {2}
    reading(cleared)
    n = len(obs.states)
    obs.wait(lambda: len(obs.states) >= n + 5)
    assert "re-armed" in obs.estop(False)
    obs.wait(lambda: np.allclose(served.robot.commands[-1]["kp"], 20.0))  # active again


def test_a_low_battery_damps_the_robot_and_no_rearm_is_accepted_until_it_is_charged(ros_env, standing_policy):
    """A draining Go1 sags and falls, and that fall would be recorded as the policy's. Below
    min_battery_soc (bms.SOC, read through the SDK binary) the e-stop engages; re-arming from the service
    or the remote is refused until the charge is 5 points above the limit (a wobbling reading must not
    let the robot walk a few more steps)."""
    with stand_in_under_control(ros_env, standing_policy, "remote_rearm:=L2+A", "min_battery_soc:=15") as (
            served, obs, ctrl):
        served.robot.battery_soc = 24
        obs.wait(lambda: obs.modes_since(0).count(1) >= 50)  # 24%: walking, with a warning
        def charge(soc: int) -> None:
            served.robot.battery_soc = soc

        # below the limit, then back above it but within the hysteresis; then a fresh battery
        _damped_and_held(served, obs, charge, (14, 17), lambda soc: f"battery at {soc}%", 60)
    err = ctrl.stderr.read()
    assert ctrl.returncode == 0, err
    assert "battery at 24%: the e-stop engages below 15%" in err
    assert "battery at 14% (min_battery_soc 15%, re-arming from 20%)" in err


def test_a_motor_whose_driver_cuts_out_damps_the_robot_until_it_is_back(ros_env, standing_policy):
    """A Go1 motor whose protection trips reports a mode other than servo and goes limp (unitree_legged_sdk
    issue #54: mode 0x08, a crippled calf). Walking on the other eleven ends in a fall; the controller
    engages the e-stop within motor_dropout_ticks reads, names the motor, and accepts no re-arm while it
    is out. The stand-in's RL calf (SDK slot 11) cuts out, read back through the SDK binary."""
    with stand_in_under_control(ros_env, standing_policy) as (served, obs, ctrl):
        obs.wait(lambda: obs.modes_since(0).count(1) >= 50)
        n = len(obs.states)
        served.robot.cut_out = {11: 0x08}
        obs.wait(lambda: 2 in obs.modes_since(n))
        assert obs.modes_since(n).count(2) == len(obs.modes_since(n)) - obs.modes_since(n).index(2)  # latched
        served.robot.commands.clear()
        obs.wait(lambda: len(served.robot.commands) >= 25)
        assert all(np.all(c["kp"] == 0) for c in served.robot.commands)  # damped, though the policy answers
        answer = obs.estop(False)
        assert answer.startswith("not re-armed") and "RL_calf (mode 0x08)" in answer, answer
        served.robot.cut_out = {}  # back in servo mode (cooled down, reconnected)
        n = len(obs.states)
        obs.wait(lambda: len(obs.states) >= n + 5)
        assert set(obs.modes_since(n)) == {2}  # still latched: someone must look at the leg first
        assert "re-armed" in obs.estop(False)
        obs.wait(lambda: np.allclose(served.robot.commands[-1]["kp"], 20.0))
    err = ctrl.stderr.read()
    assert ctrl.returncode == 0, err
    assert "motor(s) RL_calf (mode 0x08) left servo mode 0x0A" in err


def test_an_odd_joint_speed_reading_reaches_no_reader_and_the_robot_walks_on(ros_env, standing_policy):
    """An encoder's odd reading (-1000 rad/s on a calf, read through the SDK binary) for two states went out on
    robot_state as read: the policy answered it (a wild action) and the recorder wrote it into the dataset. The
    safety filter reads it as 0, and so does every reader now; the robot walks on (three in a row are a fault)."""
    from uni_o4_ros.robot.safety import DQ_MAX

    with stand_in_under_control(ros_env, standing_policy) as (served, obs, ctrl):
        obs.wait(lambda: obs.modes_since(0).count(1) >= 50)
        n = len(obs.states)
        served.robot.dq_glitch, served.robot.dq_glitch_reads = {2: -1000.0}, 2  # SDK slot 2: FR_calf
        obs.wait(lambda: served.robot.dq_glitch_reads == 0 and obs.modes_since(n).count(1) >= 50)
        assert 2 not in obs.modes_since(n)  # walked on: no e-stop (a late command on a loaded host may damp a tick)
        fastest = max(float(np.max(np.abs(np.asarray(st.dq)) / DQ_MAX)) for st in obs.states[n:])
        assert fastest < 1.0, fastest
    err = ctrl.stderr.read()
    assert ctrl.returncode == 0, err
    assert "joint FR_calf at -1e+03 rad/s, over 3 times its 20.06 rad/s limit: a reading no leg makes, " \
           "published as 0 rad/s" in err


def test_a_hot_motor_damps_the_robot_and_no_rearm_is_accepted_until_it_has_cooled(ros_env, standing_policy):
    """Before, a motor's temperature was only reported (diagnostics): a Go1 walked on until a driver's own
    over-temperature protection cut one leg out mid-stride. With max_motor_temperature set, a motor that hot
    (LowState temperature, read through the SDK binary) engages the e-stop on all four legs, with a warning
    10 and 5 degrees before, and no re-arm is accepted until every motor is 5 degrees below the limit."""
    temperature = np.full(12, 40)
    with stand_in_under_control(ros_env, standing_policy, "remote_rearm:=L2+A", "max_motor_temperature:=80.0") as (
            served, obs, ctrl):
        temperature[11] = 72  # the RL calf (SDK slot 11), 8 degrees below the limit: walking, warned
        served.robot.motor_temperature = temperature.copy()
        obs.wait(lambda: obs.modes_since(0).count(1) >= 50)
        def heat(hot: int) -> None:
            temperature[11] = hot
            served.robot.motor_temperature = temperature.copy()

        # at the limit, then cooler but within the 5 degrees; then cooled to 5 degrees below
        _damped_and_held(served, obs, heat, (80, 77), lambda hot: f"motor RL_calf at {hot} C", 75)
    err = ctrl.stderr.read()
    assert ctrl.returncode == 0, err
    assert "motor RL_calf at 72 C: the e-stop engages at 80 C (max_motor_temperature)" in err
    assert "motor RL_calf at 80 C (max_motor_temperature 80 C, re-arming at 75 C or cooler)" in err


def test_a_hangup_stops_the_controller_with_the_motors_damped(ros_env, standing_policy):
    """SIGHUP (the SSH session the nodes ran in dropped) to a controller holding the robot up. Before, its
    default action ended the process on the spot: the last command, stiff at the standing pose, was the
    robot's last word, and the controller exited with -1 instead of going through its shutdown."""
    import signal

    served = ServedRobot()
    ctrl = start("uni_o4_ros.nodes.pd_controller_node", ros_env, "backend:=unitree_sdk", "robot_ip:=127.0.0.1",
                 f"robot_port:={served.robot.port}", "local_port:=0", "state_timeout:=0.5")
    pol = start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}")
    obs = Observer()
    try:
        obs.wait(lambda: obs.modes_since(0).count(1) >= 25)  # active: the policy holds the robot up
        assert np.allclose(served.robot.commands[-1]["kp"], 20.0)
        ctrl.send_signal(signal.SIGHUP)
        assert ctrl.wait(timeout=30) == 0, ctrl.stderr.read()
    finally:
        obs.close()
        stop(pol, ctrl)
    poll_until(lambda: np.all(served.robot.commands[-1]["kp"] == 0))  # its parting command: damping
    served.close()


@pytest.mark.parametrize("given, said", [
    # One hand pressing L2+B would also press L2.
    ("remote_rearm:=L2", "neither combination may contain the other"),
    # The SDK examples' 500 Hz is the motor boards' loop: at it the policy acted ten times too often, and
    # max_target_step (per tick) allowed 100 rad/s.
    ("rate_hz:=500.0", "rate_hz 500 with the Go1: its control loop runs at the policy's 50 Hz"),
])
def test_a_controller_for_the_go1_refuses_settings_that_mean_harm_at_start(ros_env, given, said):
    import subprocess

    ctrl = start("uni_o4_ros.nodes.pd_controller_node", ros_env, "backend:=unitree_sdk", given)
    try:
        assert ctrl.wait(timeout=60) == 2
        err = ctrl.stderr.read()
        assert said in err and "Traceback" not in err, err
    except subprocess.TimeoutExpired:
        stop(ctrl)
        raise


def test_damping_command_is_what_the_backend_sends_on_damping():
    """The controller's damping command goes out as servo mode with the position loop off."""
    served = ServedRobot()
    backend = UnitreeSdkBackend("127.0.0.1", served.robot.port, 0, sdk=sdk)
    try:
        backend.write(damping_command(SafetyConfig()))
        poll_until(lambda: served.robot.steps >= 1)
        sent = served.robot.commands[-1]
        assert np.all(sent["mode"] == wire.MODE_SERVO) and np.all(sent["kp"] == 0)
        assert np.allclose(sent["kd"], SafetyConfig().damping_kd) and np.all(sent["q"] >= wire.POS_STOP_F / 2)
        assert np.allclose(sent["tau"], 0.0)
    finally:
        served.close()

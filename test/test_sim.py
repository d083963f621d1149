"""The MuJoCo Go1: joint mapping, standing under the PD law, damping, and the mattress's sinkage."""

from __future__ import annotations

import numpy as np
import pytest

from uni_o4_ros.robot.go1 import DEFAULT_Q, JOINTS, roll_pitch
from uni_o4_ros.robot.safety import MotorCommand, SafetyConfig, damping_command
from uni_o4_ros.sim.go1_sim import ASSETS, Go1Sim

STAND = MotorCommand(q=DEFAULT_Q.copy(), dq=np.zeros(12), kp=np.full(12, 20.0), kd=np.full(12, 0.5), tau=np.zeros(12))


def settle(sim: Go1Sim, cmd: MotorCommand, ticks: int = 150):
    for _ in range(ticks):
        st = sim.step(cmd)
    return st


def test_joints_follow_the_package_order():
    sim = Go1Sim()
    names = [sim.model.joint(int(j)).name for j in sim.model.dof_jntid[sim.qvel_idx]]
    assert names == [f"{j}_joint" for j in JOINTS]
    np.testing.assert_allclose(sim.state().q, DEFAULT_Q, atol=1e-6)


def test_pd_law_holds_the_default_pose_and_damping_lets_it_sit_down():
    sim = Go1Sim()
    st = settle(sim, STAND)
    assert 0.22 < st.position[2] < 0.32 and all(st.foot_contact)
    roll, pitch = roll_pitch(st.quaternion)
    assert abs(roll) < 0.05 and abs(pitch) < 0.05
    np.testing.assert_allclose(st.q, DEFAULT_Q, atol=0.3)  # Kp 20 sags under 12.7 kg (calves ~0.25 rad)
    st = settle(sim, damping_command(SafetyConfig()))
    assert st.position[2] < 0.12  # no stiffness: the legs fold


def test_mattress_sinks_where_flat_ground_does_not():
    feet = {}
    for scene in ("scene_flat.xml", "scene_mattress.xml"):
        sim = Go1Sim(ASSETS / scene)
        settle(sim, STAND)
        radius = sim.model.geom_size[sim.foot_geoms[0]][0]
        feet[scene] = radius - np.array([sim.data.geom_xpos[g][2] for g in sim.foot_geoms])  # penetration
    # The Menagerie feet are softened rubber (~2 cm on flat ground); the mattress adds centimetres more.
    assert np.all(feet["scene_mattress.xml"] - feet["scene_flat.xml"] > 0.02)


@pytest.mark.parametrize("roll", [0.0, 0.5])
def test_spawn_roll_is_reported_by_the_imu_quaternion(roll):
    st = Go1Sim().reset(roll=roll)
    assert roll_pitch(st.quaternion)[0] == pytest.approx(roll, abs=1e-9)


def test_the_stand_in_operator_arms_a_robot_that_starts_latched_once_at_the_start():
    """robot.yaml's start_latched waits for a person: with arm_at_start the stand-in operator stands the robot up
    and presses the re-arm buttons once, start_ticks in, and never again while it stands."""
    from uni_o4_ros.sim.go1_udp_robot import Go1UdpRobot
    from uni_o4_ros.sim.standin_operator import StandInOperator

    op = StandInOperator(delay=0.1, rearm=frozenset({"L2", "A"}), hold_ticks=3, arm_at_start=True, start_ticks=5)
    robot = Go1UdpRobot(port=0, operator=op)
    try:
        damp = damping_command(SafetyConfig())
        buttons = []
        for _ in range(40):
            robot.state = robot.sim.step(damp)  # latched: the controller damps, the robot sags
            op.after_tick(robot)
            buttons.append(robot.buttons)
        assert buttons == [frozenset()] * 4 + [frozenset({"L2", "A"})] * 3 + [frozenset()] * 33
        assert op.falls == 0
    finally:
        robot.close()


def test_the_stand_in_operator_stands_a_fallen_robot_up_and_presses_the_rearm_buttons():
    """After a fall the stand-in operator waits `delay`, stands the Go1 up, then holds the re-arm buttons
    for hold_ticks ticks and lets go; a robot on its feet, or damped for any other reason, is left alone."""
    from uni_o4_ros.sim.go1_udp_robot import Go1UdpRobot
    from uni_o4_ros.sim.standin_operator import StandInOperator

    op = StandInOperator(delay=0.1, rearm=frozenset({"L2", "A"}), max_tilt=1.0, hold_ticks=3)
    robot = Go1UdpRobot(port=0, operator=op)
    try:
        damp = damping_command(SafetyConfig())

        def tick() -> tuple[float, frozenset[str]]:
            robot.state = robot.sim.step(damp)
            op.after_tick(robot)
            return abs(roll_pitch(robot.state.quaternion)[0]), robot.buttons

        assert [tick()[1] for _ in range(20)] == [frozenset()] * 20  # upright and damped: nobody comes
        robot.state = robot.sim.reset(roll=1.4)  # knocked over
        seen = [tick() for _ in range(12)]
        rolls, buttons = [r for r, _ in seen], [b for _, b in seen]
        # 0.1 s = 5 ticks lying (the fall seen on the first), then up and the buttons held for 3 ticks
        assert all(r > 1.0 for r in rolls[:5]) and all(r < 0.1 for r in rolls[6:])
        assert buttons == [frozenset()] * 5 + [frozenset({"L2", "A"})] * 3 + [frozenset()] * 4
        assert op.falls == 1
    finally:
        robot.close()

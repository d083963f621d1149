"""The node suite as the standard ROS tools see it: each test subscribes as such a tool does (rviz's displays,
robot_state_publisher, diagnostic_aggregator, `ros2 topic echo`), in this process, to nodes running as their
own processes over DDS."""

from __future__ import annotations

import pytest

from conftest import ROOT, start_node, stop_nodes, wait_until


class Tool:
    """A subscriber in this process, asking for the QoS a standard tool asks for."""

    def __init__(self) -> None:
        import rclpy

        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node("standard_tool")

    def listen(self, msg_type, topic: str, qos) -> list:
        got: list = []
        self.node.create_subscription(msg_type, topic, got.append, qos)
        return got

    def wait(self, cond, timeout: float = 60.0) -> None:
        wait_until(self.rclpy, self.node, cond, timeout)

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.shutdown()


def tool_qos():
    """What rviz's displays, robot_state_publisher and rclpy's default ask for: reliable, volatile, keep-last."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def _stamp(m) -> int:
    return m.header.stamp.sec * 10**9 + m.header.stamp.nanosec


def _odometry_bag(path) -> None:
    """1 s of recorded odometry for the odometry node's bag source."""
    from nav_msgs.msg import Odometry
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    w = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    conn = w.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=get_typestore(Stores.ROS2_KILTED))
    for i in range(50):
        m = Odometry()
        m.pose.pose.position.x, m.pose.pose.orientation.w = 0.01 * i, 1.0
        w.write(conn, 10**9 + i * 20_000_000, serialize_message(m))
    w.close()


@pytest.mark.parametrize("publisher", ["pd_controller", "go1_sim", "odometry"])
def test_odometry_reaches_a_reliable_subscriber_such_as_rviz(ros_env, tmp_path, publisher):
    """Seen: rviz's Odometry display, which subscribes reliable by default, showed nothing: every node that
    publishes `odom` (the T265's odometry node, the go1_sim node, the controller's sim backend) offered it
    best-effort only, which a reliable reader does not match. Each of them, here, to a reliable reader."""
    from nav_msgs.msg import Odometry

    if publisher == "odometry":
        _odometry_bag(tmp_path / "bag")
        proc = start_node("uni_o4_ros.nodes.odometry_node", ros_env, "source:=bag", f"bag_path:={tmp_path / 'bag'}",
                          "bag_loop:=true")
    else:  # the controller's default backend is the in-process simulator; go1_sim announces its first state
        proc = start_node(f"uni_o4_ros.nodes.{publisher}_node", ros_env)
    tool = Tool()
    odom = tool.listen(Odometry, "odom", tool_qos())
    try:
        tool.wait(lambda: len(odom) >= 3 or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read()
        assert (odom[-1].header.frame_id, odom[-1].child_frame_id) == ("odom", "base_link")
        if publisher != "odometry":  # the simulator's, over DDS: not the all-zero "perfect knowledge" covariance
            assert min(odom[-1].pose.covariance[::7]) > 0 and min(odom[-1].twist.covariance[::7]) > 0
    finally:
        tool.close()
        stop_nodes(proc)


def test_simulated_odometry_claims_the_t265s_uncertainty_not_perfect_knowledge():
    """Seen: the simulator's odometry (the go1_sim node's and the controller's sim backend's) had all-zero
    covariances, which robot_localization and other fusing tools read as a perfect measurement. It stands in
    for the T265, so it claims what the odometry node publishes for a T265 tracking at high confidence."""
    from types import SimpleNamespace

    import numpy as np
    from builtin_interfaces.msg import Time

    from uni_o4_ros.nodes.go1_sim_node import odometry

    moving = SimpleNamespace(position=np.array([1.0, 2.0, 0.3]), quaternion=np.array([1.0, 0.0, 0.0, 0.0]),
                             linear_velocity=np.array([0.5, 0.0, 0.0]), angular_velocity=np.zeros(3))
    od = odometry(moving, Time())
    pose, twist = (np.asarray(c).reshape(6, 6) for c in (od.pose.covariance, od.twist.covariance))
    np.testing.assert_array_equal(pose, np.eye(6) * 0.01)  # 0.1 m, 0.1 rad standard deviation
    np.testing.assert_array_equal(twist, np.eye(6) * 1e-4)  # 0.01 m/s, 0.01 rad/s


def test_the_controller_publishes_joint_states_as_robot_state_publisher_reads_them(ros_env):
    """Seen: nothing published sensor_msgs/JointState, so robot_state_publisher, rviz's RobotModel and plotjuggler
    could not show the legs. The controller publishes one per tick: the Go1 URDF's joint names, the positions,
    velocities and torques of its RobotState, with that state's stamp."""
    import numpy as np
    from sensor_msgs.msg import JointState

    from uni_o4_ros.msg import RobotState
    from uni_o4_ros.nodes.qos import SENSOR

    ctrl = start_node("uni_o4_ros.nodes.pd_controller_node", ros_env)
    tool = Tool()
    joints = tool.listen(JointState, "joint_states", tool_qos())
    states = tool.listen(RobotState, "robot_state", SENSOR)
    try:
        def matched() -> tuple | None:  # a JointState and the RobotState of the same tick
            by_stamp = {_stamp(s): s for s in states}
            return next(((j, by_stamp[_stamp(j)]) for j in reversed(joints) if _stamp(j) in by_stamp), None)

        tool.wait(lambda: matched() is not None or ctrl.poll() is not None)
        assert ctrl.poll() is None, ctrl.stderr.read()
        j, s = matched()
        assert list(j.name) == [f"{leg}_{part}_joint" for leg in ("FL", "FR", "RL", "RR")
                                for part in ("hip", "thigh", "calf")]
        np.testing.assert_allclose(j.position, s.q, rtol=1e-6)  # RobotState carries float32
        np.testing.assert_allclose(j.velocity, s.dq, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(j.effort, s.tau_est, rtol=1e-6, atol=1e-6)
        assert 0.5 < j.position[2] * -1 < 2.8  # a calf angle of the Go1 (rad, negative), not degrees or zeros
        tool.wait(lambda: len(joints) >= 50)  # one per tick: the controller's 50 Hz
        assert np.median(np.diff([_stamp(m) for m in joints])) == pytest.approx(20e6, rel=0.1)
    finally:
        tool.close()
        stop_nodes(ctrl)


def test_diagnostics_reach_a_monitor_named_as_diagnostic_aggregator_groups_them_and_never_stale(ros_env):
    """Seen: the controller's statuses were named plain "pd_controller" (diagnostic_aggregator's analyzers group by
    the "<node>: " prefix diagnostic_updater gives), with an empty hardware_id, on a transient-local topic keeping
    50: a monitor joining late that takes the publisher's durability (`ros2 topic echo`'s best available) was
    handed up to 50 old statuses first, an error long cleared among them. Now volatile, as diagnostic_updater's."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_best_available

    ctrl = start_node("uni_o4_ros.nodes.pd_controller_node", ros_env)  # no policy: it damps and says so at 5 Hz
    tool = Tool()
    aggregator = tool.listen(DiagnosticArray, "diagnostics", tool_qos())
    try:
        tool.wait(lambda: len(aggregator) >= 3 or ctrl.poll() is not None)
        assert ctrl.poll() is None, ctrl.stderr.read()
        statuses = [st for arr in aggregator for st in arr.status]
        assert {st.name for st in statuses} == {"pd_controller: control loop"}
        assert {st.hardware_id for st in statuses} == {"sim: MuJoCo Go1 in pd_controller (flat)"}
        newest = max(_stamp(arr) for arr in aggregator)
        echo = tool.listen(DiagnosticArray, "diagnostics", qos_profile_best_available)  # a monitor started now
        tool.wait(lambda: len(echo) >= 1)
        assert _stamp(echo[0]) > newest, "a late monitor was first handed statuses published before it started"
    finally:
        tool.close()
        stop_nodes(ctrl)


def test_a_controller_in_a_namespace_reports_on_the_one_diagnostics_topic(ros_env):
    """`ros2 launch uni_o4_ros robot.launch.py namespace:=robot1`: its controller published on
    /robot1/diagnostics, where no diagnostic_aggregator or rqt_robot_monitor listens (they read /diagnostics,
    which diagnostic_updater publishes on whatever the namespace). Its other topics stay in the namespace."""
    import subprocess

    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState

    from uni_o4_ros.nodes.processes import node_command

    ctrl = subprocess.Popen([*node_command("pd_controller_node"), "-r", "__ns:=/robot1"], env=ros_env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tool = Tool()
    aggregator = tool.listen(DiagnosticArray, "/diagnostics", tool_qos())
    joints = tool.listen(JointState, "/robot1/joint_states", tool_qos())
    try:
        tool.wait(lambda: (aggregator and joints) or ctrl.poll() is not None)
        assert ctrl.poll() is None, ctrl.stderr.read()
        assert {st.name for arr in aggregator for st in arr.status} == {"pd_controller: control loop"}
        assert "/robot1/diagnostics" not in dict(tool.node.get_topic_names_and_types())
    finally:
        tool.close()
        stop_nodes(ctrl)


def test_the_robot_controllers_diagnostics_say_which_robot(ros_env):
    """On the robot the hardware_id names the Go1 the controller talks to: here one that does not answer, whose
    error (no LowState) the monitor shows against that address."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from uni_o4_ros.sim.go1_udp_robot import free_udp_ports

    [port] = free_udp_ports()  # nobody answers there
    ctrl = start_node("uni_o4_ros.nodes.pd_controller_node", ros_env, "backend:=unitree_sdk", "robot_ip:=127.0.0.1",
                      f"robot_port:={port}", "local_port:=0", "connect_timeout:=0.2")
    tool = Tool()
    aggregator = tool.listen(DiagnosticArray, "diagnostics", tool_qos())
    try:
        tool.wait(lambda: aggregator or ctrl.poll() is not None)
        assert ctrl.poll() is None, ctrl.stderr.read()
        [st] = aggregator[0].status
        assert (st.name, st.level) == ("pd_controller: control loop", DiagnosticStatus.ERROR)
        assert st.hardware_id == f"unitree_sdk: Go1 at 127.0.0.1:{port}"
        assert st.message.startswith(f"no LowState from the Go1 at 127.0.0.1:{port}")
    finally:
        tool.close()
        stop_nodes(ctrl)

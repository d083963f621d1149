"""sensor_msgs/JointState on `joint_states`, from the robot state the controller reads each tick, so
robot_state_publisher (and through it rviz's RobotModel) and plotjuggler show the legs.

Names are the Go1 URDF's (unitree_ros go1_description) and the MuJoCo model's, `FL_hip_joint` ...
(robot/go1.py JOINT_NAMES), in the package's joint order: FL, FR, RL, RR legs, each hip, thigh, calf.
Readers match joints by name, so the order only matters to someone reading the arrays by index.
position rad, velocity rad/s, effort N m (the motors' estimated torque; in simulation the applied one).
Stamped with the stamp of the RobotState published for the same tick."""

from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import JointState

from uni_o4_ros.robot.go1 import JOINT_NAMES

from .qos import RELIABLE_STREAM


class JointStatePublisher:
    def __init__(self, node: Node) -> None:
        self.pub = node.create_publisher(JointState, "joint_states", RELIABLE_STREAM)
        # One message, its names set once: each tick only fills the three arrays (publish serializes it at once).
        self.msg = JointState(name=list(JOINT_NAMES))

    def publish(self, s, stamp, velocity: list[float] | None = None) -> None:
        """`s`: a robot state with q, dq, tau (numpy arrays of 12, package order); `velocity`: the speeds the
        RobotState of the tick carries, where they are not s.dq's."""
        m = self.msg
        m.header.stamp = stamp
        m.position, m.effort = s.q.tolist(), s.tau.tolist()  # ~2 us the three
        m.velocity = s.dq.tolist() if velocity is None else velocity
        self.pub.publish(m)

"""TF without tf2_ros (it has no wheel): tf2_msgs/TFMessage on /tf and /tf_static with the QoS
tf2_ros uses, so rviz and tf2 listeners on a robot computer see our frames (REP-105:
odom -> base_link from odometry; static base_link -> camera mount)."""

from __future__ import annotations

from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

TF = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
TF_STATIC = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _tf_message():
    from tf2_msgs.msg import TFMessage  # from ROS, or built by scripts/setup_env.sh (third_party/tf2_msgs)

    return TFMessage


class OdomTfBroadcaster:
    """Republishes every Odometry's pose as the odom -> base_link transform."""

    def __init__(self, node: Node) -> None:
        self.msg_type = _tf_message()
        self.pub = node.create_publisher(self.msg_type, "/tf", TF)

    def send(self, od: Odometry) -> None:
        t = TransformStamped()
        t.header = od.header
        t.child_frame_id = od.child_frame_id
        p = od.pose.pose.position
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = p.x, p.y, p.z
        t.transform.rotation = od.pose.pose.orientation
        self.pub.publish(self.msg_type(transforms=[t]))


def publish_static(node: Node, stamp, parent: str, child: str, xyz, quat_wxyz) -> object:
    """Latched (transient-local) static transform; keep the returned publisher alive."""
    msg_type = _tf_message()
    pub = node.create_publisher(msg_type, "/tf_static", TF_STATIC)
    t = TransformStamped()
    t.header.stamp, t.header.frame_id, t.child_frame_id = stamp, parent, child
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (float(v) for v in xyz)
    r = t.transform.rotation
    r.w, r.x, r.y, r.z = (float(v) for v in quat_wxyz)
    pub.publish(msg_type(transforms=[t]))
    return pub

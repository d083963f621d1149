"""odometry node: T265 pose stream -> nav_msgs/Odometry (odom -> base_link, REP-105), covariance from
tracker confidence. With the simulated Go1, pd_controller's sim backend publishes `odom` itself.
Parameters: source (t265), mount_xyz, mount_rpy (base_link -> camera), frame ids.
A missing device, a missing pyrealsense2 or a librealsense without T265 support ends the node with
one clear line."""

from __future__ import annotations

import sys

from nav_msgs.msg import Odometry
from rclpy.node import Node

from uni_o4_ros.hardware.t265 import DeviceError, MountExtrinsic, T265Source, convert

from .qos import SENSOR
from .run import run_node


class OdometryNode(Node):
    def __init__(self) -> None:
        super().__init__("odometry")
        p = {k: self.declare_parameter(k, v).value for k, v in {
            "source": "t265", "mount_xyz": [0.25, 0.0, 0.05], "mount_rpy": [0.0, 0.0, 0.0],
            "odom_frame": "odom", "base_frame": "base_link"}.items()}
        if p["source"] != "t265":
            raise DeviceError(f"unknown source {p['source']!r} (t265; the simulator publishes odom itself)")
        self.mount = MountExtrinsic.from_config(p["mount_xyz"], p["mount_rpy"])
        self.frames = (p["odom_frame"], p["base_frame"])
        self.source = T265Source()
        self.pub = self.create_publisher(Odometry, "odom", SENSOR)
        self.create_timer(0.005, self.poll)

    def close(self) -> None:
        self.source.close()

    def poll(self) -> None:
        s = convert(self.source.read(), self.mount)
        m = Odometry()
        m.header.stamp = self.get_clock().now().to_msg()
        m.header.frame_id, m.child_frame_id = self.frames
        pp, o = m.pose.pose.position, m.pose.pose.orientation
        pp.x, pp.y, pp.z = (float(v) for v in s.position)
        o.w, o.x, o.y, o.z = (float(v) for v in s.quaternion)
        t = m.twist.twist
        t.linear.x, t.linear.y, t.linear.z = (float(v) for v in s.linear_velocity)
        t.angular.x, t.angular.y, t.angular.z = (float(v) for v in s.angular_velocity)
        m.pose.covariance = s.pose_covariance.reshape(-1).tolist()
        m.twist.covariance = s.twist_covariance.reshape(-1).tolist()
        self.pub.publish(m)


def main(args: list[str] | None = None) -> int:
    return run_node(OdometryNode, "odometry", args, errors=(DeviceError,))


if __name__ == "__main__":
    sys.exit(main())

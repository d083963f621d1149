"""go1_sim node: the MuJoCo Go1 as its own process, standing in for the robot and the T265.

It speaks to the pd_controller (backend `go1_sim`) the way the Go1's motor boards do: motor
commands in (`low_cmd`, JointCommand: q, dq, kp, kd, tau per joint), proprioception out
(`low_state`, RobotState), and the base pose/velocity as the T265 would report it (`odom`,
nav_msgs/Odometry, odom -> base_link). Lockstep: every motor command advances the simulation by
exactly one 20 ms control tick (the PD law runs at the 200 Hz physics rate inside it), so the
simulator never runs ahead of or behind the controller, whether the controller ticks in real time
or faster. Before the first command it publishes its initial state twice a second so a starting
controller has something to read.
Parameters: terrain (flat | mattress), spawn_roll, reset_on_episode_end.
"""

from __future__ import annotations

import sys

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node

from uni_o4_ros.hardware.t265 import T265_HIGH_CONFIDENCE, confidence_covariance
from uni_o4_ros.msg import EpisodeEvent, JointCommand, RobotState
from uni_o4_ros.robot.go1 import rotation_matrix
from uni_o4_ros.robot.safety import MotorCommand

from .episode_events import SIM_RESET_EVENTS
from .params import Doc, declare_read_only
from .qos import COMMAND, EVENTS, RELIABLE_STREAM
from .run import NodeConfigError, run_node
from .tf import OdomTfBroadcaster
from .timers import steady_timer

PARAMETERS = {
    "terrain": Doc("flat | mattress; the ground simulated"),
    "spawn_roll": Doc("rad; the robot's roll when the node starts (later resets stand it upright), to test fall "
                      "handling", "[-pi,pi]"),
    "reset_on_episode_end": Doc("stand the robot up again each time the recorder starts an episode "
                                "(recorder_events)"),
}


class Go1SimNode(Node):
    def __init__(self) -> None:
        super().__init__("go1_sim")
        from uni_o4_ros.sim.go1_env import TERRAINS
        from uni_o4_ros.sim.go1_sim import Go1Sim

        p = declare_read_only(self, PARAMETERS, {
            "terrain": "flat", "spawn_roll": 0.0, "reset_on_episode_end": False})
        if p["terrain"] not in TERRAINS:
            raise NodeConfigError(f"unknown terrain {p['terrain']!r}; choose from {sorted(TERRAINS)}")
        self.sim = Go1Sim(TERRAINS[p["terrain"]])
        self.state = self.sim.reset(roll=float(p["spawn_roll"]))
        self.steps = 0
        self.state_pub = self.create_publisher(RobotState, "low_state", COMMAND)
        self.odom_pub = self.create_publisher(Odometry, "odom", RELIABLE_STREAM)
        self.tf = OdomTfBroadcaster(self)
        self.create_subscription(JointCommand, "low_cmd", self.on_command, COMMAND)
        if p["reset_on_episode_end"]:
            self.create_subscription(EpisodeEvent, "recorder_events", self.on_recorder_event, EVENTS)
        self.announce = steady_timer(self, 0.5, self.publish)

    def on_command(self, m: JointCommand) -> None:
        cmd = MotorCommand(q=np.asarray(m.q, np.float32), dq=np.asarray(m.dq, np.float32),
                           kp=np.asarray(m.kp, np.float32), kd=np.asarray(m.kd, np.float32),
                           tau=np.asarray(m.tau, np.float32))
        if not all(np.all(np.isfinite(v)) for v in (cmd.q, cmd.dq, cmd.kp, cmd.kd, cmd.tau)):
            self.get_logger().warning("ignored a non-finite motor command")
            return
        if self.announce is not None:
            self.announce.cancel()
            self.announce = None
        self.state = self.sim.step(cmd)
        self.steps += 1
        self.publish(header_stamp=m.header.stamp)

    def on_recorder_event(self, msg: EpisodeEvent) -> None:
        if msg.event in SIM_RESET_EVENTS:
            self.state = self.sim.reset()

    def publish(self, header_stamp=None) -> None:
        s = self.state
        self.state_pub.publish(robot_state(s, header_stamp or self.get_clock().now().to_msg()))
        od = odometry(s, self.get_clock().now().to_msg())
        self.odom_pub.publish(od)
        self.tf.send(od)


def robot_state(s, stamp, mode: int = RobotState.MODE_DAMPING, resets: int = 0) -> RobotState:
    """A simulator state as the robot reports it (joints in package order, IMU, feet)."""
    msg = RobotState(mode=mode, resets=resets)
    msg.header.stamp, msg.header.frame_id = stamp, "base_link"
    msg.q, msg.dq, msg.tau_est = s.q.tolist(), s.dq.tolist(), s.tau.tolist()
    msg.quaternion, msg.gyroscope = s.quaternion.tolist(), s.gyroscope.tolist()
    msg.accelerometer, msg.foot_force = s.accelerometer.tolist(), s.foot_force.tolist()
    msg.foot_contact = [bool(c) for c in s.foot_contact]
    return msg


# The simulator knows the pose exactly, but it stands in for the T265: it claims the covariance the odometry
# node publishes for a T265 tracking at high confidence (0.1 m / 0.1 rad and 0.01 m/s / 0.01 rad/s standard
# deviations), so robot_localization and other fusing tools weigh it as they would the robot's. All zeros claimed
# perfect knowledge, which such tools take as a measurement to trust absolutely (or reject as degenerate).
# float64 arrays: the message takes them without checking 36 numbers each tick.
SIM_POSE_COVARIANCE, SIM_TWIST_COVARIANCE = (c.reshape(-1) for c in confidence_covariance(T265_HIGH_CONFIDENCE))


def odometry(s, stamp) -> Odometry:
    """The base pose and twist as the T265 reports them (REP-105: twist in child_frame_id), with the T265's
    high-confidence covariance."""
    od = Odometry()
    od.header.stamp, od.header.frame_id, od.child_frame_id = stamp, "odom", "base_link"
    p = od.pose.pose.position
    p.x, p.y, p.z = (float(v) for v in s.position)
    o = od.pose.pose.orientation
    o.w, o.x, o.y, o.z = (float(v) for v in s.quaternion)
    v_body = rotation_matrix(s.quaternion).T @ s.linear_velocity
    t = od.twist.twist
    t.linear.x, t.linear.y, t.linear.z = (float(v) for v in v_body)
    t.angular.x, t.angular.y, t.angular.z = (float(v) for v in s.angular_velocity)
    od.pose.covariance, od.twist.covariance = SIM_POSE_COVARIANCE, SIM_TWIST_COVARIANCE
    return od


def main(args: list[str] | None = None) -> int:
    return run_node(Go1SimNode, "go1_sim", args)


if __name__ == "__main__":
    sys.exit(main())

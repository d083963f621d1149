"""The generated ROS 2 interfaces, used through real rclpy over Fast DDS between two processes."""

from __future__ import annotations

import hashlib
import json

from conftest import spawn_python

SUBSCRIBER = r"""
import hashlib, json, sys
import rclpy
from rclpy.qos import QoSProfile, DurabilityPolicy, ReliabilityPolicy, HistoryPolicy
from uni_o4_ros.msg import PolicyUpdate
rclpy.init()
node = rclpy.create_node("sub")
qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
got = []
node.create_subscription(PolicyUpdate, "policy_update", got.append, qos)
print("READY", flush=True)
while not got:
    rclpy.spin_once(node, timeout_sec=0.1)
m = got[0]
data = bytes(m.safetensors)
print(json.dumps({"version": m.version, "sha256": m.sha256, "actual": hashlib.sha256(data).hexdigest(),
                  "n": len(data), "spec": m.spec_json}), flush=True)
rclpy.shutdown()
"""


def test_generated_messages_have_the_documented_fields():
    from uni_o4_ros.msg import EpisodeEvent, JointCommand, PolicyUpdate, RobotState, Transition
    from uni_o4_ros.srv import StartEpisode, StopEpisode

    cmd = JointCommand()
    assert len(cmd.q) == len(cmd.kp) == len(cmd.tau) == 12
    fields = JointCommand.get_fields_and_field_types()
    assert all(fields[k] == "float[12]" for k in ("q", "dq", "kp", "kd", "tau"))
    assert fields["policy_version"] == "uint64" and fields["header"] == "std_msgs/Header"
    state = RobotState()
    assert len(state.quaternion) == 4 and len(state.foot_contact) == 4
    assert (RobotState.MODE_DAMPING, RobotState.MODE_ACTIVE, RobotState.MODE_ESTOP) == (0, 1, 2)
    tr = Transition(observation=[1.0] * 290, action=[0.5] * 12, terminal=True, policy_version=7)
    assert len(tr.observation) == 290 and tr.policy_version == 7
    assert EpisodeEvent.ABORTED_FALL == 2
    assert PolicyUpdate(safetensors=b"\x00\x01").safetensors.tobytes() == b"\x00\x01"
    assert len(StartEpisode.Request().command_velocity) == 3
    assert hasattr(StopEpisode.Request(), "reason")


def test_policy_update_bytes_cross_processes_intact_over_dds(ros_env):
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    from uni_o4_ros.msg import PolicyUpdate

    payload = bytes(range(256)) * 4000  # ~1 MB, the size of a small policy
    digest = hashlib.sha256(payload).hexdigest()
    sub = spawn_python(SUBSCRIBER, ros_env)
    try:
        assert sub.stdout.readline().strip() == "READY"
        rclpy.init()
        node = rclpy.create_node("pub")
        # Transient-local: the subscriber gets the newest weights whenever it joins.
        qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pub = node.create_publisher(PolicyUpdate, "policy_update", qos)
        pub.publish(PolicyUpdate(version=42, sha256=digest, safetensors=payload, spec_json='{"obs_dim": 290}'))
        out, err = sub.communicate(timeout=60)
        result = json.loads(out.strip().splitlines()[-1])
        assert result == {"version": 42, "sha256": digest, "actual": digest, "n": len(payload),
                          "spec": '{"obs_dim": 290}'}, err
    finally:
        if sub.poll() is None:
            sub.kill()
        if rclpy.ok():
            rclpy.shutdown()

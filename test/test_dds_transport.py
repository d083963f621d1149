"""The suite's nodes keep Fast DDS shared memory out of their processes: a peer SIGKILLed while it
held its shared-memory port lock blocked the controller's publish (and so its 50 Hz tick) for 1-3 s.
The choice of transport is unit-tested on environments; a real controller process, started with the
LOCALHOST discovery range a user's shell often sets, is checked for shared-memory mappings while it
talks to this test over loopback UDP, beside a plain rclpy process that does map them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, start_node, stop_nodes, wait_until
from uni_o4_ros.nodes.dds_transport import LOOPBACK_PROFILE, own_local_graph, without_shared_memory


def test_this_host_only_becomes_the_loopback_udp_profile():
    for env in ({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}, {"ROS_LOCALHOST_ONLY": "1"}):
        t = without_shared_memory(env)
        assert t.settings == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT",
                              "FASTDDS_DEFAULT_PROFILES_FILE": str(LOOPBACK_PROFILE)}
        assert not t.shared_memory and "loopback" in t.note
    assert LOOPBACK_PROFILE.is_file() and "<useBuiltinTransports>false" in LOOPBACK_PROFILE.read_text()
    # applied twice (the field pipeline, then the node itself) it changes nothing more
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env |= without_shared_memory(env).settings
    assert without_shared_memory(env).settings == {}
    # a graph of its own (tests, benchmarks) replaces whatever transport settings it inherited
    own = own_local_graph({"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my.xml", "ROS_LOCALHOST_ONLY": "1", "HOME": "/h"}, 7)
    assert own == {"HOME": "/h", "ROS_DOMAIN_ID": "7", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT",
                   "FASTDDS_DEFAULT_PROFILES_FILE": str(LOOPBACK_PROFILE)}


def test_network_visible_ranges_keep_udp_and_lose_shared_memory():
    for env in ({}, {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}, {"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT"},
                {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}, {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}):
        assert without_shared_memory(env).settings == {"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}, env
    assert without_shared_memory({"FASTDDS_BUILTIN_TRANSPORTS": "UDPv6"}).settings == {}


def test_a_users_own_middleware_settings_are_left_alone_and_a_risk_is_named():
    assert without_shared_memory({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp",
                                  "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}).settings == {}
    own = without_shared_memory({"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my.xml"})
    assert own.settings == {} and not own.shared_memory
    risky = without_shared_memory({"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my.xml",
                                   "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})
    assert risky.settings == {} and risky.shared_memory and "shared memory" in risky.note


def _shared_memory_maps(pid: int) -> list[str]:
    return [ln.split()[-1] for ln in Path(f"/proc/{pid}/maps").read_text().splitlines() if "/dev/shm/fastdds" in ln]


def test_a_controller_started_with_localhost_discovery_maps_no_shared_memory(ros_env):
    import rclpy

    from uni_o4_ros.msg import RobotState
    from uni_o4_ros.nodes.qos import SENSOR

    # The environment a user's shell gives `ros2 launch`: LOCALHOST, no Fast DDS settings.
    user_env = {k: v for k, v in ros_env.items() if not k.startswith("FASTDDS_")}
    user_env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    ctrl = start_node("uni_o4_ros.nodes.pd_controller_node", user_env)
    # A plain rclpy process in the same environment: rmw_fastrtps gives it shared memory.
    plain = subprocess.Popen([sys.executable, "-c", "import rclpy, sys; rclpy.init(); n = rclpy.create_node('plain'); "
                              "print('up', flush=True); sys.stdin.read()"], env=user_env, cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    rclpy.init()
    node = rclpy.create_node("transport_observer")
    states: list = []
    node.create_subscription(RobotState, "robot_state", states.append, SENSOR)
    try:
        wait_until(rclpy, node, lambda: len(states) >= 10, 60)  # loopback UDP reaches this test's participant
        assert plain.stdout.readline().strip() == "up"
        assert _shared_memory_maps(plain.pid), "rmw_fastrtps did not map shared memory: this check would be blind"
        assert _shared_memory_maps(ctrl.pid) == []
        assert ctrl.poll() is None
    finally:
        node.destroy_node()
        rclpy.shutdown()
        plain.stdin.close()  # a clean exit removes its /dev/shm segments; SIGTERM would leave them
        try:
            plain.wait(timeout=30)
        finally:
            stop_nodes(plain, ctrl)

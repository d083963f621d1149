"""Keep Fast DDS shared memory out of the suite's processes (no ROS import: environment only).

Fast DDS's shared-memory transport gives every subscriber a port in /dev/shm guarded by an
interprocess lock. A subscriber killed while it holds that lock (SIGKILL, a segfault, the OOM
killer) leaves it locked, and each publisher writing to the port waits out Fast DDS's 1 s lock
timeout, more than once, before giving the port up. For the controller that is its robot_state
publish, inside the 50 Hz tick: with the policy node SIGKILLed beside it on a loaded machine, the
controller stalled for 1-3 s in 3 of 30 kills (gdb: blocked in SharedMemManager::Port::try_push),
so damping came a second late; over UDP, where a dead peer cannot block a sender, in 0 of 30
(BENCHMARKS §4a, benchmarks/peer_crash.py).

rmw_fastrtps adds shared memory whenever ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (whatever
FASTDDS_BUILTIN_TRANSPORTS or a profile says), so "this host only" is expressed instead as a
loopback-only UDP profile with the discovery range left to that profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK_PROFILE = Path(__file__).with_name("fastdds_udp_loopback.xml")
_SHM_TRANSPORTS = {"", "DEFAULT", "DEFAULTV6", "SHM", "LARGE_DATA", "LARGE_DATAV6"}
_FASTDDS_RMW = {"", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"}
TRANSPORT_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS", "ROS_LOCALHOST_ONLY")


@dataclass(frozen=True)
class Transport:
    settings: dict[str, str] = field(default_factory=dict)  # to add to the environment
    note: str = ""  # one line for the node's log
    shared_memory: bool = False  # still on: the user's own settings keep it


def without_shared_memory(env: Mapping[str, str]) -> Transport:
    """The environment settings that make Fast DDS use UDP only, and what they do.

    - Another middleware (RMW_IMPLEMENTATION): nothing to change.
    - A Fast DDS profile of the user's own (FASTDDS_DEFAULT_PROFILES_FILE): theirs decides.
    - This host only (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, or the older ROS_LOCALHOST_ONLY=1):
      the loopback UDP profile above.
    - Otherwise: Fast DDS's builtin UDPv4 transport, as visible on the network as before.
    """
    if env.get("RMW_IMPLEMENTATION", "") not in _FASTDDS_RMW:
        return Transport(note=f"{env['RMW_IMPLEMENTATION']}: transport left to the middleware")
    discovery = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper()
    local = discovery == "LOCALHOST" or (not discovery and env.get("ROS_LOCALHOST_ONLY") == "1")
    if env.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        profile = env["FASTDDS_DEFAULT_PROFILES_FILE"]
        if local:
            return Transport(note=f"Fast DDS profile {profile} with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: "
                                  "rmw_fastrtps adds shared memory, and a peer killed at the wrong moment can "
                                  "block this node's publishers for a second or more", shared_memory=True)
        return Transport(note=f"Fast DDS: transports from the profile {profile}")
    if local:
        return Transport({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT",
                          "FASTDDS_DEFAULT_PROFILES_FILE": str(LOOPBACK_PROFILE)},
                         "Fast DDS: UDP on loopback only, no shared memory")
    if env.get("FASTDDS_BUILTIN_TRANSPORTS", "").upper() in _SHM_TRANSPORTS:
        return Transport({"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}, "Fast DDS: UDPv4, no shared memory")
    return Transport(note=f"Fast DDS: builtin transports {env['FASTDDS_BUILTIN_TRANSPORTS']}")


def own_local_graph(env: Mapping[str, str], domain_id: int) -> dict[str, str]:
    """`env` for a node graph of its own on this machine (tests, benchmarks): its own domain,
    loopback UDP, whatever transport settings `env` carried before."""
    out = {k: v for k, v in env.items() if k not in TRANSPORT_VARIABLES}
    out.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    return out | without_shared_memory(out).settings

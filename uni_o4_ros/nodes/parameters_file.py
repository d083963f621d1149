"""Sections of a ROS 2 parameters file (no ROS import: the launch files and `uni-o4 bringup` read them too).

The shipped files key each node as `/**/name`, ROS's wildcard for "this node in any namespace": a
bare `name:` applies only to a node in the root namespace, so under `ros2 launch ... namespace:=robot1`
(or `-r __ns:=/robot1`) every value in it, the robot's safety settings included, was silently not
applied and the defaults ran.
"""

from __future__ import annotations

from typing import Any


def node_key(node: str) -> str:
    return f"/**/{node}"


def node_parameters(sections: Any, node: str) -> dict[str, Any]:
    """The ros__parameters a parameters file gives `node` (under `/**/node`, `node` or `/node`), {} if none."""
    if not isinstance(sections, dict):
        return {}
    for key in (node_key(node), node, f"/{node}"):
        if isinstance(sections.get(key), dict):
            return dict(sections[key].get("ros__parameters") or {})
    return {}

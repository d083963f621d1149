"""Sections of a ROS 2 parameters file (no ROS import: the launch files and `uni-o4 bringup` read them too).

The shipped files key each node as `/**/name`, ROS's wildcard for "this node in any namespace": a
bare `name:` applies only to a node in the root namespace, so under `ros2 launch ... namespace:=robot1`
(or `-r __ns:=/robot1`) every value in it, the robot's safety settings included, was silently not
applied and the defaults ran.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def _sections(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """(node path, flat parameters) of every section of a parameters file, in either of ROS's layouts
    (`/**/name:` or nested `ns: name:`); nested parameter names are joined with dots, as ROS reads them."""
    if not isinstance(tree, dict):
        return []
    if isinstance(tree.get("ros__parameters"), dict):
        return [(path, _flat(tree["ros__parameters"]))]
    return [s for key, sub in tree.items() for s in _sections(sub, (*path, *str(key).strip("/").split("/")))]


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        out.update(_flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def shared_only(files: Iterable[Any], node: str) -> set[str]:
    """Parameters the parameters files give only in sections meant for many nodes (a key ending in `*`
    or `**`, such as `/**:`), in none naming `node`: a node without them leaves them to the nodes that
    have them, as ROS does, instead of refusing them as misspelt."""
    shared: set[str] = set()
    own: set[str] = set()
    for path, params in (s for sections in files for s in _sections(sections)):
        last = path[-1] if path else ""
        if last in ("*", "**"):
            shared |= set(params)
        elif last == node:
            own |= set(params)
    return shared - own

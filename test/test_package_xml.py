"""package.xml against what the package imports. `rosdep install` and a binary package's dependencies come
from package.xml alone: a ROS package the nodes or launch files import without package.xml naming it is
missing on a robot computer until a node fails at start (tf2_msgs, launch, launch_ros, ament_index_python
and yaml were), and one it names but nothing uses (std_srvs was) is installed for nothing."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import xml.etree.ElementTree as ET

from conftest import ROOT

# Python modules rosdep installs under another key; both are also pinned for pip in requirements.lock.
ROSDEP_KEYS = {"yaml": "python3-yaml", "numpy": "python3-numpy"}
# Imported only on the robot computer, installed by hand there (README): the T265's librealsense wheel.
ROBOT_ONLY = {"pyrealsense2"}
# Needed by every package that generates interfaces, imported by none of its Python.
RUNTIME = {"rosidl_default_runtime"}
# The standard library of a newer Python, tried first (compression.zstd: 3.14; else backports.zstd, pinned).
NEWER_STDLIB = {"compression"}


def imported_modules() -> dict[str, set[str]]:
    """Top-level modules imported (absolute imports) by the package and the launch files -> the files."""
    files = [p for p in (ROOT / "uni_o4_ros").rglob("*.py") if "standin_modules" not in p.parts]
    found: dict[str, set[str]] = {}
    for path in [*files, *(ROOT / "launch").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def pip_pinned() -> set[str]:
    """Modules installed from requirements.lock / requirements-sdk.txt (not the ROS wheels: ros-kilted-*)."""
    pins = {re.split(r"[=<>\[ ]", ln.strip())[0].lower().replace("_", "-")
            for f in ("requirements.lock", "requirements-sdk.txt")
            for ln in (ROOT / f).read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    pins = {p for p in pins if not p.startswith("ros-")}
    return {module for module, dists in importlib.metadata.packages_distributions().items()
            if any(d.lower().replace("_", "-").replace(".", "-") in {p.replace(".", "-") for p in pins}
                   for d in dists)}


def test_package_xml_declares_every_ros_package_the_code_imports_and_no_other():
    xml = ET.parse(ROOT / "package.xml").getroot()
    declared = {e.text.strip() for tag in ("depend", "exec_depend") for e in xml.iter(tag)}
    interfaces = set(re.findall(r"^\s*(\w+)/\w+", "\n".join(
        p.read_text() for p in [*(ROOT / "msg").glob("*.msg"), *(ROOT / "srv").glob("*.srv")]), re.M))
    interfaces |= set(re.search(r"DEPENDENCIES ([\w ]+)", (ROOT / "CMakeLists.txt").read_text()).group(1).split())

    pip = pip_pinned()
    needed: dict[str, set[str]] = {}  # package.xml key -> the files importing it
    for module, files in imported_modules().items():
        if module in sys.stdlib_module_names | NEWER_STDLIB | ROBOT_ONLY | {"uni_o4_ros"}:
            continue
        if module in ROSDEP_KEYS:
            needed.setdefault(ROSDEP_KEYS[module], set()).update(files)
        elif module not in pip:  # a ROS package: its Python package has its name
            needed.setdefault(module, set()).update(files)
    missing = {key: sorted(needed[key])[:3] for key in needed.keys() - declared}  # where it is imported
    assert not missing, f"imported but not in package.xml: {missing}"
    unused = declared - needed.keys() - interfaces - RUNTIME
    assert not unused, f"in package.xml but imported by nothing (nor used by msg/, srv/): {sorted(unused)}"
    assert {"tf2_msgs", "launch", "launch_ros", "sensor_msgs"} <= needed.keys()  # the check sees what it should

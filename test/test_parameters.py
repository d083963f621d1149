"""Every node parameter explains itself to the standard ROS tools: `ros2 param describe` and rqt_reconfigure show a
line with its unit and what it does, and, where it has a rule, its range. Over DDS this is checked on the launched
nodes in test_launch_files (test_every_configured_parameter_is_declared_by_the_node_it_configures); here, without
starting them, that each node's table (`PARAMETERS`) covers exactly what it declares."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys

import pytest

from conftest import ROOT
from uni_o4_ros.nodes.params import READ_AT_START, Doc, describe
from uni_o4_ros.nodes.processes import node_command
from uni_o4_ros.ranges import RANGES, check_ranges

NODE_MODULES = sorted(f"uni_o4_ros.nodes.{p.stem}" for p in (ROOT / "uni_o4_ros" / "nodes").glob("*_node.py"))


class _Declared(Exception):
    """Stops a node's construction right after it declared its parameters: nothing else is needed of it."""


def declared_and_described(monkeypatch, module_name: str) -> tuple[dict, dict]:
    """(defaults, docs) the node of `module_name` passes to declare_read_only as it starts."""
    from rclpy.node import Node

    module = importlib.import_module(module_name)
    [node_class] = [c for c in vars(module).values()
                    if isinstance(c, type) and issubclass(c, Node) and c.__module__ == module_name]
    seen: dict = {}

    def record(node, docs, defaults):
        seen.update(docs=docs, defaults=defaults)
        node.destroy_node()
        raise _Declared

    monkeypatch.setattr(module, "declare_read_only", record)
    with pytest.raises(_Declared):
        node_class()
    return seen["defaults"], seen["docs"]


def test_every_node_describes_each_parameter_it_declares_and_its_defaults_keep_its_rules(ros_env, monkeypatch):
    """A parameter added without a line in its node's PARAMETERS would show `ros2 param describe` only the
    read-at-start note; a line left behind for a parameter removed would describe nothing."""
    import rclpy

    assert len(NODE_MODULES) == 7, NODE_MODULES  # a new node is checked here too
    rclpy.init()
    try:
        for module_name in NODE_MODULES:
            defaults, docs = declared_and_described(monkeypatch, module_name)
            node = module_name.rsplit(".", 1)[1]
            assert not set(defaults) - set(docs), f"{node}: no description for {sorted(set(defaults) - set(docs))}"
            assert not set(docs) - set(defaults), f"{node}: describes undeclared {sorted(set(docs) - set(defaults))}"
            for name, doc in docs.items():
                assert isinstance(doc, Doc) and len(doc.text) > 10 and READ_AT_START not in doc.text, (node, name)
                if doc.rule:
                    check_ranges(type("Defaults", (), defaults), {name: doc.rule})  # the default keeps its rule
                    d = describe(defaults[name], doc)  # ... and lies in its range, which rclpy requires
                    [rng] = d.floating_point_range or d.integer_range
                    assert rng.from_value <= defaults[name] <= rng.to_value, (node, name)
    finally:
        rclpy.shutdown()


def test_a_descriptor_states_its_rule_as_a_closed_range_exact_for_whole_numbers():
    """ROS ranges include their ends: a rule's open end is the rule's words for a double, and the next whole
    number for an integer; a half-open rule ends at the type's largest value."""
    tilt = describe(1.0, Doc("rad; tilt", "(0,pi]"))
    assert tilt.read_only and tilt.description == f"rad; tilt ({READ_AT_START})"
    assert (tilt.floating_point_range[0].from_value, tilt.floating_point_range[0].to_value) == (0.0, math.pi)
    assert tilt.floating_point_range[0].step == 0.0 and tilt.additional_constraints == "must be in (0, pi]"
    rate = describe(50.0, Doc("Hz; rate", ">0")).floating_point_range[0]
    assert (rate.from_value, rate.to_value) == (0.0, sys.float_info.max)
    soc = describe(0, Doc("%; charge", "[0,100)")).integer_range[0]
    assert (soc.from_value, soc.to_value, soc.step) == (0, 99, 1)
    steps = describe(1000, Doc("transitions", ">=1")).integer_range[0]
    assert (steps.from_value, steps.to_value) == (1, 2**63 - 1)
    assert describe(5, Doc("positive", ">0")).integer_range[0].from_value == 1
    plain = describe("sim", None)
    assert plain.description == READ_AT_START and not plain.floating_point_range and not plain.integer_range
    assert set(RANGES) >= {">0", ">=0", ">=1", "(0,1)", "(0,1]", "[0,1]", "(0,pi]", "[0,3]", "[0,100)"}


@pytest.mark.parametrize("how, said", [
    ("file", "parameter max_tilt: must be in (0, pi], got 5.0"),  # a double: rclpy's range check, at declare
    ("-p", "parameter motor_dropout_ticks: must be >= 0, got -1"),  # an integer
])
def test_a_value_outside_its_range_stops_the_node_with_the_projects_one_line(ros_env, tmp_path, how, said):
    """rclpy checks a descriptor's range as the parameter is declared and refused 5.0 for max_tilt in a
    traceback (InvalidParameterValueException, no ValueError): now in one line naming the rule, exit code 2."""
    if how == "file":
        params = tmp_path / "params.yaml"
        params.write_text("/**/pd_controller:\n  ros__parameters:\n    max_tilt: 5.0\n")
        cmd = node_command("pd_controller_node", params_file=params)
    else:
        cmd = node_command("pd_controller_node", ["motor_dropout_ticks:=-1"])
    run = subprocess.run(cmd, env=ros_env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [f"pd_controller: error: {said}"], run.stderr


def test_an_empty_list_on_the_command_line_or_in_a_file_is_an_empty_list(ros_env, tmp_path):
    """rcl reads `-p command_vx_schedule:=[]`, and `[]` in a parameters file, as a parameter with no value: the
    recorder and the learner ended in a TypeError (len of None) when told "none". It is the empty list written,
    and a vector parameter given none says how many numbers it needs."""
    import rclpy
    from rclpy.node import Node

    from uni_o4_ros.nodes.params import declare_read_only

    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    offline_overrides: []\n")
    rclpy.init(args=["--ros-args", "-p", "command_vx_schedule:=[]", "--params-file", str(params)])
    try:
        node = Node("lists")
        values = declare_read_only(node, {}, {"command_vx_schedule": [0.0], "offline_overrides": ["env=go1"],
                                              "command_velocity": [0.5, 0.0, 0.0], "source": "t265"})
        node.destroy_node()
    finally:
        rclpy.shutdown()
    assert values == {"command_vx_schedule": [], "offline_overrides": [], "command_velocity": [0.5, 0.0, 0.0],
                      "source": "t265"}
    run = subprocess.run(node_command("odometry_node", ["mount_rpy:=[]"]), env=ros_env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "parameter mount_rpy: must be 3 finite numbers, got []" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr

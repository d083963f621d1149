"""The launch files, without ROS 2's `launch` (it has no wheel): a stand-in of the part of its API the
files use records what `ros2 launch` would start. Then the launched names, executables and parameter
files are checked against what exists: every executable is installed and importable, every node's
parameter section carries its name, and every parameter in config/*.yaml is one the running node
declares (ROS ignores the others without a word, so a misspelt key would go unnoticed)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, stop_nodes
from uni_o4_ros.field.pipeline import PRETRAINED
from uni_o4_ros.nodes.parameters_file import node_key, node_parameters
from uni_o4_ros.nodes.processes import node_command
from uni_o4_ros.sim.go1_udp_robot import free_udp_ports
from uni_o4_ros.sim.t265_standin import FEED_ENV, STANDIN_MODULES


@dataclass
class Launched:
    executable: str
    name: str
    params_file: Path
    overrides: dict = field(default_factory=dict)
    namespace: str = ""
    ros_args: list = field(default_factory=list)  # after --ros-args on the node's command line


class LaunchStandIn:
    """launch / launch_ros as far as our files use them, with substitutions resolved from `args`."""

    def __init__(self, args: dict[str, str]) -> None:
        self.args = args
        self.declared: dict[str, str | None] = {}
        self.context = object()  # launch's LaunchContext, which the substitutions are performed in

    def modules(self) -> dict[str, types.ModuleType]:
        me = self

        class LaunchConfiguration:
            def __init__(self, name: str) -> None:
                self.name = name

            def value(self) -> str:
                return me.args[self.name] if self.name in me.args else me.declared[self.name]

            def perform(self, context) -> str:
                assert context is me.context
                return self.value()

        class PythonExpression:
            def __init__(self, parts: list) -> None:
                self.parts = parts

            def value(self) -> str:
                return str(eval("".join(resolve(p) for p in self.parts)))  # what launch itself does

        def resolve(v):
            return v.value() if isinstance(v, (LaunchConfiguration, PythonExpression)) else v

        class DeclareLaunchArgument:
            def __init__(self, name: str, default_value: str | None = None, description: str = "") -> None:
                assert description, f"launch argument {name} has no description"
                me.declared[name] = default_value

        class IfCondition:
            def __init__(self, expr) -> None:
                self.expr = expr

            def holds(self) -> bool:
                return resolve(self.expr).lower() == "true"

        class Node:
            def __init__(self, package: str, executable: str, name: str, parameters: list, output: str = "",
                         condition: IfCondition | None = None, namespace: str = "", arguments: list = ()) -> None:
                assert package == "uni_o4_ros"
                self.condition = condition
                files = [Path(p) for p in parameters if isinstance(p, str)]
                assert len(files) == 1, f"{name}: one parameters file, got {files}"
                self.raw = {k: v for d in parameters if isinstance(d, dict) for k, v in d.items()}
                assert not arguments or arguments[0] == "--ros-args", arguments
                self.launched = Launched(executable, name, files[0], namespace=namespace,
                                         ros_args=[resolve(a) for a in arguments[1:]])

            def resolve(self) -> Launched:  # at launch time, as launch does
                # launch_ros reads a substituted value as YAML ("false" -> False)
                self.launched.overrides = {k: yaml.safe_load(resolve(v)) for k, v in self.raw.items()}
                return self.launched

        class OpaqueFunction:
            def __init__(self, function) -> None:
                self.function = function

        def at_launch(entities: list) -> list:  # what launch does with each entity, in order
            out = []
            for e in entities:
                if isinstance(e, OpaqueFunction):
                    out += at_launch(e.function(me.context))
                elif isinstance(e, Node) and (e.condition is None or e.condition.holds()):
                    out.append(e.resolve())
            return out

        class LaunchDescription:
            def __init__(self, entities: list) -> None:
                for name in self.missing(entities):
                    raise AssertionError(f"launch argument {name} is required and was not given")
                self.arguments = dict(me.declared)
                self.nodes = at_launch(entities)

            @staticmethod
            def missing(entities) -> list[str]:
                return [n for n, d in me.declared.items() if d is None and n not in me.args]

        def module(name: str, **attrs) -> types.ModuleType:
            m = types.ModuleType(name)
            m.__dict__.update(attrs)
            return m

        return {
            "launch": module("launch", LaunchDescription=LaunchDescription),
            "launch.actions": module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument,
                                     OpaqueFunction=OpaqueFunction),
            "launch.conditions": module("launch.conditions", IfCondition=IfCondition),
            "launch.substitutions": module("launch.substitutions", LaunchConfiguration=LaunchConfiguration,
                                           PythonExpression=PythonExpression),
            "launch_ros": module("launch_ros"),
            "launch_ros.actions": module("launch_ros.actions", Node=Node),
            "ament_index_python": module("ament_index_python"),
            # The source tree has the installed share folder's layout (launch/, config/).
            "ament_index_python.packages": module("ament_index_python.packages",
                                                  get_package_share_directory=lambda pkg: str(ROOT)),
        }


def described(monkeypatch, file: str, **args: str):
    """`ros2 launch uni_o4_ros FILE name:=value ...`: the description (its declared `arguments` with their
    defaults, and the `nodes` it starts)."""
    stand_in = LaunchStandIn(args)
    for name, module in stand_in.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(file.replace(".", "_"), ROOT / "launch" / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def launch(monkeypatch, file: str, **args: str) -> list[Launched]:
    return described(monkeypatch, file, **args).nodes


SUITE = {"pd_controller_node", "policy_node", "episode_recorder_node", "dataset_logger_node"}


def test_launch_files_start_the_documented_graphs(monkeypatch):
    sim = launch(monkeypatch, "sim.launch.py", policy_dir="/p")
    assert {n.executable for n in sim} == SUITE
    assert {n.params_file.name for n in sim} == {"sim.yaml"}
    by_exe = {n.executable: n for n in sim}
    assert by_exe["pd_controller_node"].overrides == {"backend": "sim"}
    assert by_exe["policy_node"].overrides == {"policy_dir": "/p"}  # deterministic: sim.yaml's value, not undone
    assert node_parameters(yaml.safe_load((ROOT / "config" / "sim.yaml").read_text()), "policy")["deterministic"]

    split = launch(monkeypatch, "sim.launch.py", policy_dir="/p", sim_process="true")
    assert {n.executable for n in split} == SUITE | {"go1_sim_node"}
    assert {n.executable: n for n in split}["pd_controller_node"].overrides == {"backend": "go1_sim"}

    robot = launch(monkeypatch, "robot.launch.py", policy_dir="/p")
    assert {n.executable for n in robot} == SUITE | {"odometry_node"}  # the T265 is read on the robot
    assert {n.params_file.name for n in robot} == {"robot.yaml"}
    assert {n.executable: n for n in robot}["pd_controller_node"].overrides == {}  # robot.yaml's unitree_sdk
    exploring = launch(monkeypatch, "robot.launch.py", policy_dir="/p", deterministic="false")  # online learning
    assert {n.executable: n for n in exploring}["policy_node"].overrides["deterministic"] is False
    assert node_parameters(yaml.safe_load((ROOT / "config" / "robot.yaml").read_text()), "pd_controller")[
        "backend"] == "unitree_sdk"

    learning = launch(monkeypatch, "learning.launch.py", policy_dir="/p")
    # run_dir and hmac_key_file: robot.yaml's values, not undone by a launch default
    assert [(n.executable, n.overrides) for n in learning] == [("learner_node", {"policy_dir": "/p"})]
    learner = node_parameters(yaml.safe_load((ROOT / "config" / "robot.yaml").read_text()), "learner")
    assert (learner["run_dir"], learner["hmac_key_file"]) == ("runs/learner", "auto")
    # A learner on a laptop takes a copy of the robot's key from the launch line.
    laptop = launch(monkeypatch, "learning.launch.py", policy_dir="/p", hmac_key_file="/keys/go1.key")
    assert laptop[0].overrides["hmac_key_file"] == "/keys/go1.key"
    with pytest.raises(AssertionError, match="policy_dir is required"):
        launch(monkeypatch, "robot.launch.py")

    # Every launched executable is installed by CMake (for `ros2 launch`) and runs the node's module.
    cmake = (ROOT / "CMakeLists.txt").read_text()
    installed = set(re.findall(r"scripts/nodes/(\w+)", cmake))
    for n in sim + split + robot + learning:
        assert n.executable in installed, n.executable
        script = (ROOT / "scripts" / "nodes" / n.executable).read_text()
        assert f"from uni_o4_ros.nodes.{n.executable} import main" in script
        assert importlib.util.find_spec(f"uni_o4_ros.nodes.{n.executable}") is not None


@pytest.mark.parametrize("file, config", [("sim.launch.py", "sim.yaml"), ("robot.launch.py", "robot.yaml"),
                                          ("learning.launch.py", "robot.yaml")])
def test_every_launch_file_takes_a_parameters_file_a_namespace_and_a_log_level(monkeypatch, tmp_path, file, config):
    """The arguments a ROS user expects of a launch file: params_file (default the package's file for that graph:
    learning.launch.py beside the robot used to load config/sim.yaml), namespace, log_level; for every node."""
    shipped = launch(monkeypatch, file, policy_dir="/p")
    assert {n.params_file for n in shipped} == {ROOT / "config" / config}
    assert {n.namespace for n in shipped} == {""}
    assert all(n.ros_args == ["--log-level", "info"] for n in shipped)
    mine = tmp_path / "mine.yaml"  # a copy the user edited: their deterministic value is not overridden
    mine.write_text(yaml.safe_dump({node_key("policy"): {"ros__parameters": {"deterministic": False}}}))
    own = launch(monkeypatch, file, policy_dir="/p", params_file=str(mine), namespace="robot1", log_level="debug")
    assert [n.executable for n in own] == [n.executable for n in shipped]
    assert {n.params_file for n in own} == {mine}
    assert {n.namespace for n in own} == {"robot1"}
    assert all(n.ros_args == ["--log-level", "debug"] for n in own)
    assert all("deterministic" not in n.overrides for n in own)


def test_the_learners_run_dir_and_key_come_from_the_parameters_file_unless_given(monkeypatch, tmp_path):
    """learning.launch.py's defaults for run_dir ('runs/learner') and hmac_key_file ('auto') were passed to the
    learner after the parameters file, so a params_file's own run_dir and key were silently undone, as
    deterministic's default once undid the policy's. Unset, they are not passed: the file's values hold."""
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({node_key("learner"): {"ros__parameters": {
        "run_dir": "/data/learner", "hmac_key_file": "/keys/go1.key"}}}))
    desc = described(monkeypatch, "learning.launch.py", policy_dir="/p", params_file=str(mine))
    assert desc.arguments["run_dir"] == desc.arguments["hmac_key_file"] == ""
    [learner] = desc.nodes
    assert learner.params_file == mine and learner.overrides == {"policy_dir": "/p"}
    [given] = launch(monkeypatch, "learning.launch.py", policy_dir="/p", params_file=str(mine), run_dir="/tmp/r",
                     hmac_key_file="/keys/copy.key")
    assert given.overrides == {"policy_dir": "/p", "run_dir": "/tmp/r", "hmac_key_file": "/keys/copy.key"}


def test_the_robot_launch_starts_nothing_of_the_simulator(monkeypatch):
    """robot.launch.py used to be sim.launch.py with robot.yaml, sim_process argument and all: sim_process:=true
    started a MuJoCo go1_sim node beside the Go1, with robot.yaml's values for nodes it has none for."""
    robot = described(monkeypatch, "robot.launch.py", policy_dir="/p", sim_process="true")
    assert set(robot.arguments) == {"params_file", "namespace", "log_level", "policy_dir", "deterministic"}
    assert {n.executable for n in robot.nodes} == SUITE | {"odometry_node"}
    assert all("backend" not in n.overrides for n in robot.nodes)  # robot.yaml's unitree_sdk


def test_every_configured_parameter_is_declared_by_the_node_it_configures(monkeypatch, ros_env, tmp_path):
    """... and refuses a change at run time: every node reads its parameters once, at start, so `ros2 param
    set /pd_controller max_tilt 0.5` used to answer "successful" and change nothing. And explains each one to
    `ros2 param describe` (rqt_reconfigure asks the same service), which said only that it is read at start."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters, SetParameters
    from test_control_loop import Observer

    graphs = [launch(monkeypatch, "sim.launch.py", policy_dir=str(PRETRAINED), sim_process="true"),
              launch(monkeypatch, "robot.launch.py", policy_dir=str(PRETRAINED)),
              launch(monkeypatch, "learning.launch.py", policy_dir=str(PRETRAINED), run_dir=str(tmp_path / "l"))]
    configured: dict[str, set[str]] = {}  # node name -> parameters some file sets for it
    executable: dict[str, str] = {}
    for n in (n for g in graphs for n in g):
        sections = yaml.safe_load(n.params_file.read_text())
        # keyed for any namespace: a bare `name:` is not applied under `ros2 launch ... namespace:=robot1`
        assert node_key(n.name) in sections, f"{n.params_file.name} has no section {node_key(n.name)}"
        configured.setdefault(n.name, set()).update(node_parameters(sections, n.name), n.overrides)
        executable[n.name] = n.executable
    for f in ("sim.yaml", "robot.yaml"):
        unused = set(yaml.safe_load((ROOT / "config" / f).read_text())) - {node_key(n) for n in configured}
        assert not unused, f"config/{f} configures nodes no launch file starts: {unused}"

    # Each node once, under its launched name, as quiet as possible: the sim backend, a camera whose
    # feed never comes (it waits), the shipped policy. What it declares does not depend on the values.
    [feed] = free_udp_ports()
    env = ros_env | {FEED_ENV: f"127.0.0.1:{feed}", "PYTHONPATH": str(STANDIN_MODULES)}
    args = {"policy_node": [f"policy_dir:={PRETRAINED}"], "learner_node": [f"policy_dir:={PRETRAINED}",
                                                                          f"run_dir:={tmp_path / 'learner'}"],
            "dataset_logger_node": [f"directory:={tmp_path / 'data'}"]}
    procs = {name: subprocess.Popen([*node_command(exe, args.get(exe, [])), "-r", f"__node:={name}"], env=env,
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for name, exe in executable.items()}
    obs = Observer()
    try:
        for name, wanted in configured.items():
            client = obs.node.create_client(ListParameters, f"/{name}/list_parameters")
            assert client.wait_for_service(timeout_sec=60), f"{name}: {procs[name].poll()}"
            future = client.call_async(ListParameters.Request())
            obs.wait(future.done)
            declared = [n for n in future.result().result.names if n != "use_sim_time"]  # rclpy's own
            undeclared = wanted - set(declared)
            assert not undeclared, f"{name} does not declare {undeclared}: the files' values would be ignored"
            # What `ros2 param set` does, with each parameter's current value (a valid value of its type).
            values = call(obs, GetParameters, f"/{name}/get_parameters", GetParameters.Request(names=declared))
            sets = call(obs, SetParameters, f"/{name}/set_parameters", SetParameters.Request(parameters=[
                Parameter(name=n, value=v) for n, v in zip(declared, values.values, strict=True)]))
            refused = [n for n, r in zip(declared, sets.results, strict=True)
                       if not r.successful and "read-only" in r.reason]
            assert refused == declared, f"{name}: a change at run time would be accepted and ignored"
            # A simulated clock (a launch's global use_sim_time:=true, a `ros2 param set`) stopped the controller's
            # loop, holding the motors' last targets, with "successful" said: refused, with the reason.
            [sim_time] = call(obs, SetParameters, f"/{name}/set_parameters", SetParameters.Request(parameters=[
                Parameter(name="use_sim_time", value=ParameterValue(type=ParameterType.PARAMETER_BOOL,
                                                                    bool_value=True))])).results
            assert not sim_time.successful and "use_sim_time is not supported" in sim_time.reason, name
            described = call(obs, DescribeParameters, f"/{name}/describe_parameters",
                             DescribeParameters.Request(names=declared)).descriptors
            assert_explained(name, described, dict(zip(declared, values.values)))
    finally:
        obs.close()
        stop_nodes(*procs.values())


@pytest.mark.parametrize("given, said", [
    ("use_sim_time:=true", "use_sim_time is not supported: the control loop, its watchdog"),
    ("max_tlit:=0.5",
     "unknown parameter(s) max_tlit (did you mean max_tilt?): pd_controller has activation_step, backend, "),
])
def test_a_controller_started_on_a_simulated_clock_or_with_a_misspelt_parameter_refuses_to_start(ros_env, given, said):
    """Seen: under use_sim_time:=true without a /clock the controller never ticked, and said nothing; a
    misspelt safety limit (`max_tlit:=0.5`) was ignored and the default kept, unseen."""
    proc = subprocess.run(node_command("pd_controller_node", [given]), env=ros_env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith(f"pd_controller: error: {said}"), proc.stderr


def assert_explained(name: str, descriptors: list, values: dict) -> None:
    """What `ros2 param describe` shows of a running node's parameters (`values`: their ParameterValues): each has
    a line of its own besides the read-at-start note, and each with a rule (its additional_constraints) reports
    that rule's range. (That each node's table describes exactly what it declares: test_parameters.)"""
    import math

    from rclpy.parameter import parameter_value_to_python

    from uni_o4_ros.nodes.params import READ_AT_START, Doc, describe
    from uni_o4_ros.ranges import RANGES

    rules = {f"must be {rng.what}": rule for rule, rng in RANGES.items()}
    ours = {d.name: d for d in descriptors if d.name not in ("use_sim_time", "start_type_description_service")}
    assert ours, name
    for d in ours.values():
        own_line, note = d.description.rsplit(" (", 1) if " (" in d.description else ("", d.description)
        assert d.read_only and note == f"{READ_AT_START})" and len(own_line) > 10, (name, d.name, d.description)
        rule = rules[d.additional_constraints] if d.additional_constraints else ""
        wanted = describe(parameter_value_to_python(values[d.name]), Doc("", rule))
        assert (list(d.floating_point_range), list(d.integer_range)) == (
            list(wanted.floating_point_range), list(wanted.integer_range)), (name, d)
    if name == "pd_controller":  # one in full, as a user reads it
        tilt = ours["max_tilt"]
        assert tilt.description.startswith("rad; |roll| or |pitch| beyond this is a fall")
        assert (tilt.floating_point_range[0].from_value, tilt.floating_point_range[0].to_value) == (0.0, math.pi)
        assert tilt.additional_constraints == "must be in (0, pi]"
        soc = ours["min_battery_soc"].integer_range[0]
        assert (soc.from_value, soc.to_value) == (0, 99)


def call(obs, srv_type, service: str, request):
    """One service call from the observer's node; its response."""
    client = obs.node.create_client(srv_type, service)
    assert client.wait_for_service(timeout_sec=60), f"no {service}"
    future = client.call_async(request)
    obs.wait(future.done)
    return future.result()


def test_the_shipped_parameters_apply_to_nodes_in_a_namespace(ros_env):
    """Seen: under `-r __ns:=/robot2` (a namespaced launch) no value of config/robot.yaml applied: the controller
    ran the MuJoCo backend with the battery limit and silence latch off. With /**/ keys it drives the Go1 (here:
    asks for one, which is not there) as robot.yaml says."""
    proc = subprocess.Popen(node_command("pd_controller_node", params_file=ROOT / "config" / "robot.yaml")
                            + ["-r", "__ns:=/robot2"], env=ros_env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = threading.Timer(60.0, proc.terminate)  # a controller on the sim backend would never say it
    deadline.start()
    try:
        for line in proc.stderr:  # ends when the process does
            if "[robot2.pd_controller]" in line and "no LowState from the Go1 at 192.168.123.10:8007" in line:
                break
        else:
            pytest.fail("the controller under /robot2 never asked for the Go1 of robot.yaml")
    finally:
        deadline.cancel()
        stop_nodes(proc)

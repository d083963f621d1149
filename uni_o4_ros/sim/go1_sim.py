"""MuJoCo Go1 standing in for the robot (and the T265's pose): the motor-side PD law runs at the
simulator rate (dt 0.005, 4 substeps per 50 Hz control tick), as on the real motor drivers.

The model is the mesh-free Menagerie Go1 shipped in `assets/` (never downloaded). Its joints are
already in the package order (FL, FR, RL, RR x hip, thigh, calf); `joint_ids` is read by name so a
reordered model would still map correctly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from ..robot.go1 import DEFAULT_Q, JOINT_NAMES
from ..robot.safety import MotorCommand, pd_torque

ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass
class SimState:
    time: float
    q: np.ndarray
    dq: np.ndarray
    tau: np.ndarray
    quaternion: np.ndarray  # w, x, y, z
    gyroscope: np.ndarray
    accelerometer: np.ndarray
    foot_force: np.ndarray
    foot_contact: np.ndarray
    position: np.ndarray  # world frame base position (what the T265 would track)
    linear_velocity: np.ndarray  # world frame
    angular_velocity: np.ndarray  # body frame
    # Normal force of the trunk on the terrain (N): legged_gym's base contact. A nose brushing the
    # soft mattress pushes with ~0 N, so "on the ground" means over 1 N. A stumble, not a fall: the
    # robot often walks on, and its controller only knows the tilt rule.
    trunk_force: float = 0.0


class Go1Sim:
    CONTROL_DT = 0.02

    def __init__(self, scene: str | Path = ASSETS / "scene_flat.xml", seed: int = 0) -> None:
        self.model = mujoco.MjModel.from_xml_path(str(scene))
        self.data = mujoco.MjData(self.model)
        self.substeps = max(1, round(self.CONTROL_DT / self.model.opt.timestep))
        jids = [self.model.joint(n).id for n in JOINT_NAMES]
        self.qpos_idx = np.array([self.model.jnt_qposadr[j] for j in jids])
        self.qvel_idx = np.array([self.model.jnt_dofadr[j] for j in jids])
        self.act_idx = np.array([self.model.actuator(j.rsplit("_joint", 1)[0]).id for j in JOINT_NAMES])
        self.ctrl_lo, self.ctrl_hi = self.model.actuator_ctrlrange[self.act_idx].T
        self.foot_geoms = [self.model.geom(f).id for f in ("FL", "FR", "RL", "RR")]
        self.floor_geom = self.model.geom("floor").id
        self.trunk_body = self.model.body("trunk").id
        self.rng = np.random.default_rng(seed)
        self.last_tau = np.zeros(12)
        self.reset()

    def reset(self, height: float = 0.34, roll: float = 0.0) -> SimState:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:3] = (0.0, 0.0, height)
        self.data.qpos[3:7] = (np.cos(roll / 2), np.sin(roll / 2), 0.0, 0.0)
        self.data.qpos[self.qpos_idx] = DEFAULT_Q
        mujoco.mj_forward(self.model, self.data)
        self.last_tau[:] = 0.0
        return self.state()

    def step(self, cmd: MotorCommand) -> SimState:
        """One 50 Hz control tick: the PD law and torque limits act at every physics substep."""
        for _ in range(self.substeps):
            q = self.data.qpos[self.qpos_idx]
            dq = self.data.qvel[self.qvel_idx]
            tau = np.clip(pd_torque(cmd, q, dq), self.ctrl_lo, self.ctrl_hi)
            self.data.ctrl[self.act_idx] = tau
            mujoco.mj_step(self.model, self.data)
        self.last_tau = tau
        return self.state()

    def foot_sinkage(self) -> np.ndarray:
        """How far each foot sphere reaches below the ground plane (m, 0 when above it): on rigid
        ground only the contact solver's millimetres, on the mattress several centimetres."""
        z = self.data.geom_xpos[self.foot_geoms, 2] - self.model.geom_size[self.foot_geoms, 0]
        return np.maximum(0.0, -z)

    def state(self) -> SimState:
        d, m = self.data, self.model
        forces, trunk, f = np.zeros(4), 0.0, np.zeros(6)
        for i in range(d.ncon):  # one pass over the contacts for the feet and the trunk
            c = d.contact[i]
            feet = [k for k, g in enumerate(self.foot_geoms) if g in (c.geom1, c.geom2)]  # two if feet touch
            is_trunk = self.floor_geom in (c.geom1, c.geom2) and self.trunk_body in (m.geom_bodyid[c.geom1],
                                                                                    m.geom_bodyid[c.geom2])
            if not feet and not is_trunk:
                continue
            mujoco.mj_contactForce(m, d, i, f)
            for k in feet:
                forces[k] += abs(f[0])
            if is_trunk:
                trunk += abs(f[0])
        quat = d.qpos[3:7].copy()
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, quat)
        rot = rot.reshape(3, 3)
        ang_body = d.qvel[3:6].copy()  # a free joint's angular velocity is in the body frame in MuJoCo
        return SimState(
            time=float(d.time), q=d.qpos[self.qpos_idx].copy(), dq=d.qvel[self.qvel_idx].copy(),
            tau=self.last_tau.copy(), quaternion=quat, gyroscope=ang_body,
            accelerometer=rot.T @ np.array([0, 0, 9.81]), foot_force=forces, foot_contact=forces > 1.0,
            position=d.qpos[:3].copy(), linear_velocity=d.qvel[:3].copy(), angular_velocity=ang_body.copy(),
            trunk_force=trunk,
        )

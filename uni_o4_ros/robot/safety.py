"""Safety rules between a joint command and a motor (numpy, no ROS): joint limits, a torque bound
on the PD law's torque, a rate limit on targets, a command watchdog and fall detection; the robot's
own health (a state that is no state, battery charge, motors that cut out) and who may command it.
Any fault means damping: zero stiffness, positive damping, zero torque."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..ranges import check_ranges
from .go1 import DQ_MAX, JOINTS, KD, KP, Q_MAX, Q_MIN, TAU_MAX


@dataclass(frozen=True)
class SafetyConfig:
    max_target_step: float = 0.2  # rad per 50 Hz tick
    torque_fraction: float = 0.9  # of the motor limit
    watchdog_timeout: float = 0.1  # s without a fresh command -> damping
    max_tilt: float = 1.0  # rad |roll| or |pitch| -> fall
    damping_kd: float = 2.0
    # s; > 0: a policy silent this long after the robot was ACTIVE latches damping until re-armed (the
    # real Go1 has folded up by then, and must not spring up by itself when a policy comes back); 0: the
    # next fresh command re-activates it, whenever it comes (the simulator's default).
    silence_latch: float = 0.0
    # rad per tick; > 0: each time the robot becomes ACTIVE (a re-arm, a policy back SAG_S or more after the
    # watchdog damped),
    # the targets move at most this far a tick until the policy's are within max_target_step of them, or for as
    # many ticks as the first distance takes at this step, then at max_target_step. A Go1 sagged or folded in
    # damping otherwise sprang up at max_target_step, 10 rad/s at the calves; walk-these-ways ramps to its pose in
    # steps of 0.05 rad. (Waiting for the policy's targets alone never ended: a policy whose robot is held back
    # asks for ever larger corrections.) 0: off (the simulator's default, whose resets stand the robot in its pose).
    activation_step: float = 0.0

    def __post_init__(self) -> None:
        # A typo here is a robot that never damps (watchdog_timeout <= 0 reads as never late), falls
        # at every tick (max_tilt <= 0), exceeds its motors' torque (torque_fraction 9) or freezes.
        check_ranges(self, {"max_target_step": ">0", "torque_fraction": "(0,1]", "watchdog_timeout": ">0",
                            "max_tilt": "(0,pi]", "damping_kd": ">0", "silence_latch": ">=0",
                            "activation_step": ">=0"})


# s: damped this long, a Go1 has sagged (activation_step applies); a command later by less, mid-stride, finds the legs
# where the policy left them, and catching up slowly would cost the step
SAG_S = 0.25


@dataclass
class MotorCommand:
    q: np.ndarray
    dq: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    tau: np.ndarray
    damping: bool = False


def damping_command(cfg: SafetyConfig) -> MotorCommand:
    z = np.zeros(12, np.float32)
    return MotorCommand(q=z.copy(), dq=z.copy(), kp=z.copy(), kd=np.full(12, cfg.damping_kd, np.float32),
                        tau=z.copy(), damping=True)


@dataclass
class SafetyFilter:
    cfg: SafetyConfig = field(default_factory=SafetyConfig)
    _last_target: np.ndarray | None = None
    ramping: bool = False  # at activation_step since the last activation, the policy's targets still far
    _ramp_ticks: int | None = None  # ticks the rise may still take (set on its first tick)

    def reset(self, q_now: np.ndarray, ramp: bool = True) -> None:
        """The robot becomes ACTIVE with its joints at `q_now`: the rate limit starts there (at activation_step,
        with `ramp`)."""
        self._last_target = np.asarray(q_now, np.float32).copy()
        self.ramping, self._ramp_ticks = ramp and self.cfg.activation_step > 0, None

    def apply(self, q_des: np.ndarray, q: np.ndarray, dq: np.ndarray, kp: float = KP, kd: float = KD) -> MotorCommand:
        """Clamp a position target so that joint limits, rate and PD torque hold, in that order of precedence:
        where they conflict (a velocity reading far off, the leg pushed), the joint limits and the rate limit
        win, and the torque bound gives way (the motor's driver bounds its torque itself)."""
        q_des = np.asarray(q_des, np.float32)
        if not np.all(np.isfinite(q_des)):
            return damping_command(self.cfg)
        if self._last_target is None:
            self.reset(q)
        # tau = kp (target - q) - kd dq must stay within the bound: clamp the target accordingly. Applied last,
        # one odd dq reading (-1000 rad/s) put a calf's target 22 rad past its joint limit.
        tau_max = self.cfg.torque_fraction * TAU_MAX
        lo = q + (-tau_max + kd * np.asarray(dq)) / kp
        hi = q + (tau_max + kd * np.asarray(dq)) / kp
        target = np.clip(q_des, lo, hi)
        step = self.cfg.max_target_step
        if self.ramping:
            far = float(np.abs(target - self._last_target).max())
            if self._ramp_ticks is None:  # the first active tick: as long as the distance to go takes at that step
                self._ramp_ticks = int(np.ceil(far / self.cfg.activation_step))
            self._ramp_ticks -= 1
            if far <= step or self._ramp_ticks < 0:
                self.ramping = False  # close enough for the usual rate limit, or the rise's time is up
            else:
                step = min(self.cfg.activation_step, step)
        target = np.clip(target, self._last_target - step, self._last_target + step)
        target = np.clip(target, Q_MIN, Q_MAX).astype(np.float32)
        self._last_target = target
        return MotorCommand(q=target, dq=np.zeros(12, np.float32), kp=np.full(12, kp, np.float32),
                            kd=np.full(12, kd, np.float32), tau=np.zeros(12, np.float32))


@dataclass
class Watchdog:
    timeout: float
    last: float | None = None

    def feed(self, now: float) -> None:
        self.last = now

    def expired(self, now: float) -> bool:
        return self.last is None or now - self.last > self.timeout


@dataclass
class RemoteCombo:
    """A button combination held on the robot's own remote (the e-stop's, the re-arm's): the operator's
    hand is enough, no laptop. True once per press of the whole combination (holding it is one press)."""

    combo: frozenset[str]
    _held: bool = False

    def pressed(self, buttons: frozenset[str]) -> bool:
        held = self.held(buttons)
        first, self._held = held and not self._held, held
        return first

    def held(self, buttons: frozenset[str]) -> bool:
        return bool(self.combo) and self.combo <= buttons


@dataclass
class SingleSender:
    """Whether a topic only one node may publish (the policy's joint commands to its controller, the
    controller's robot states to its policy) has a second sender. Two suites on one ROS domain (two
    robots in a lab, a laptop's rehearsal beside the robot: ROS's default domain and discovery reach
    across the network) would otherwise drive each other's motors: a controller applies any command,
    and a policy answers any state. A second sender heard within `window` seconds of another is a
    second source; a new sender after a silence is the same node restarted."""

    window: float = 0.5
    _last: dict[bytes, float] = field(default_factory=dict)

    def senders(self, sender: bytes, now: float) -> int:
        """How many senders were heard within the window, this one included."""
        self._last[sender] = now
        for s in [s for s, t in self._last.items() if now - t > self.window]:
            del self._last[s]
        return len(self._last)


@dataclass
class BatteryGuard:
    """The Go1's battery running low (bms.SOC, %): below `min_soc` it is a fault. A draining Go1's legs
    sag, and the fall that ends the session would be recorded as the policy's; damped first, the episode
    is cut short instead. The fault holds until the charge is `hysteresis` points above the limit, so a
    reading that wobbles around it (it dips under load) does not let the robot be re-armed to walk a few
    more steps. `min_soc` 0: off."""

    min_soc: float = 0.0
    hysteresis: float = 5.0
    low: bool = False
    _warned: set[int] = field(default_factory=set)

    def fault(self, soc: float) -> str | None:
        # 0 with the robot answering is a charge not reported (an empty battery powers nothing): not checked,
        # and a fault already held stays (one reading of 0 must not let a low battery be re-armed).
        if self.min_soc <= 0:
            return None
        if soc <= 0:
            return (f"battery low (below min_battery_soc {self.min_soc:g}%, now reported as 0): lay the robot down "
                    "and swap or charge the battery") if self.low else None
        if soc < self.min_soc:
            self.low = True
        elif soc >= self.min_soc + self.hysteresis:
            self.low = False
        if not self.low:
            return None
        return (f"battery at {soc:.0f}% (min_battery_soc {self.min_soc:g}%, re-arming from "
                f"{self.min_soc + self.hysteresis:g}%): lay the robot down and swap or charge the battery")

    def warning(self, soc: float) -> str | None:
        """Said once as the charge comes within 10 points of the limit and once within 5: time to
        finish the episode at hand."""
        if self.min_soc > 0 and soc <= 0 and 0 not in self._warned:
            self._warned.add(0)
            return "the robot reports no battery charge (bms.SOC 0): min_battery_soc is not checked"
        if self.min_soc <= 0 or not self.min_soc <= soc < self.min_soc + 10:
            return None
        step = 5 if soc < self.min_soc + 5 else 10
        if step in self._warned:
            return None
        self._warned.add(step)
        return f"battery at {soc:.0f}%: the e-stop engages below {self.min_soc:g}%"


@dataclass
class MotorHeatGuard:
    """A motor running hot (deg C, each motor's LowState temperature): at or above `limit` it is a fault, so the
    robot is laid down damped on all four legs before a motor driver's own over-temperature protection cuts
    one leg out mid-stride (MotorDropout: a limp leg, and a fall). The fault holds until the hottest motor is
    `hysteresis` degrees below the limit, so a motor cooling by a degree does not let the robot be re-armed
    into heating it again. Unitree publishes no Go1 threshold (its G1 warns at 90 deg C), so `limit` 0 (off)
    is the default: set it from your motors' documentation or your own logs (diagnostics
    motor_temperature_max). Warned once within 10 degrees of the limit and once within 5, again after each
    cool-down."""

    limit: float = 0.0
    names: tuple[str, ...] = ()
    hysteresis: float = 5.0
    hot: bool = False
    _warned: set[int] = field(default_factory=set)

    def _hottest(self, temperature: np.ndarray) -> tuple[str, float]:
        t = np.asarray(temperature, float)
        i = int(np.argmax(t))
        return (self.names[i] if i < len(self.names) else f"motor {i}"), float(t[i])

    def fault(self, temperature: np.ndarray) -> str | None:
        if self.limit <= 0:
            return None
        name, peak = self._hottest(temperature)
        if peak >= self.limit:
            self.hot = True
        elif peak <= self.limit - self.hysteresis:
            self.hot = False
        if not self.hot:
            return None
        return (f"motor {name} at {peak:.0f} C (max_motor_temperature {self.limit:g} C, re-arming at "
                f"{self.limit - self.hysteresis:g} C or cooler): lay the robot down and let the motors cool")

    def warning(self, temperature: np.ndarray) -> str | None:
        if self.limit <= 0:
            return None
        name, peak = self._hottest(temperature)
        if peak < self.limit - 10:
            self._warned.clear()  # cooled down: the next heating is warned of again
            return None
        step = 5 if peak >= self.limit - 5 else 10
        if step in self._warned or peak >= self.limit:
            return None
        self._warned.add(step)
        return f"motor {name} at {peak:.0f} C: the e-stop engages at {self.limit:g} C (max_motor_temperature)"


@dataclass
class MotorDropout:
    """A motor that left servo mode: its driver cut out and no longer obeys (on Unitree's A1 / Go1 its
    protection for over-temperature, over-current or a lost connection reports mode 0x08 and leaves the
    leg limp; unitree_legged_sdk issue #54). The other eleven would walk the robot on a limp leg into a
    fall, so it is a fault. The rule arms once every motor has reported servo mode, so a robot that does
    not report modes is never stopped for it, and a motor must stay out `ticks` reads in a row, so one
    odd reading does not stop a walk. `ticks` 0: off."""

    servo_mode: int
    names: tuple[str, ...]
    ticks: int = 3
    armed: bool = False
    _out: np.ndarray | None = None

    def fault(self, modes: np.ndarray) -> str | None:
        in_servo = np.asarray(modes) == self.servo_mode
        if self.ticks <= 0:
            return None
        if not self.armed:
            self.armed = bool(in_servo.all())
            self._out = np.zeros(len(in_servo), int)
            return None
        self._out = np.where(in_servo, 0, self._out + 1)
        out = np.flatnonzero(self._out >= self.ticks)
        if not out.size:
            return None
        which = ", ".join(f"{self.names[i]} (mode 0x{int(modes[i]):02X})" for i in out)
        return (f"motor(s) {which} left servo mode 0x{self.servo_mode:02X}: the driver cut out (over-temperature, "
                f"over-current or a lost connection) and the leg is limp; lay the robot down, let it cool, check "
                f"the leg's cable, power-cycle if it stays out")


def fallen(roll: float, pitch: float, max_tilt: float) -> bool:
    return abs(roll) > max_tilt or abs(pitch) > max_tilt


# A joint speed this many times the URDF's limit is no reading of a leg; on FAST_TICKS of FAST_WINDOW ticks (0.5 s
# at 50 Hz), a fault.
DQ_IMPLAUSIBLE = 3.0
FAST_TICKS = 3
FAST_WINDOW = 25
_DQ_LIMIT = DQ_IMPLAUSIBLE * DQ_MAX  # per joint, rad/s


def orientation_problem(quat_wxyz: np.ndarray) -> str | None:
    """Why an orientation is none (None: it is a unit quaternion): an IMU that reports zeros read as upright for
    ever, and a NaN one turned fall detection off (a NaN roll compares False)."""
    quat = np.asarray(quat_wxyz, np.float64)
    if quat.shape != (4,):
        return f"an orientation of {quat.size} numbers (a quaternion has 4)"
    if not np.isfinite(quat).all():
        return "NaN/inf in its orientation"
    if not 0.9 < (norm := float(np.linalg.norm(quat))) < 1.1:
        return f"its orientation is no unit quaternion (norm {norm:.3g}): the IMU"
    return None


def state_problem(quat_wxyz: np.ndarray, q: np.ndarray, dq: np.ndarray) -> str | None:
    """Why a robot state is no state (None: it is one): orientation_problem, or a NaN/inf joint reading (it put
    NaN into the safety filter's rate limit for good)."""
    if problem := orientation_problem(quat_wxyz):
        return problem
    q, dq = np.asarray(q, np.float64), np.asarray(dq, np.float64)
    if q.shape != (12,) or dq.shape != (12,):
        return f"joint readings of {q.size}/{dq.size} numbers (positions 12, velocities 12)"
    for name, x in (("joint positions", q), ("joint velocities", dq)):
        if not np.isfinite(x).all():
            return f"NaN/inf in its {name}"
    return None


def speed_problem(dq: np.ndarray) -> str | None:
    """A joint speed no Go1 leg reaches (DQ_IMPLAUSIBLE times the URDF's limit), None if there is none (or if `dq`
    is no 12 numbers: state_problem says that, and numpy's broadcast error here ended the e-stopped tick)."""
    dq = np.asarray(dq, np.float64)
    if dq.shape != _DQ_LIMIT.shape:
        return None
    fast = np.flatnonzero(np.abs(dq) > _DQ_LIMIT)
    if not fast.size:
        return None
    i = int(fast[0])
    return f"joint {JOINTS[i]} at {dq[i]:.3g} rad/s, over {DQ_IMPLAUSIBLE:g} times its {float(DQ_MAX[i]):g} rad/s limit"


class OddSpeeds:
    """Readings with a joint speed no leg makes (speed_problem) among the last FAST_WINDOW ticks; FAST_TICKS of
    them are a fault. Counted over a window, not in a row: an encoder odd on two ticks of every three never
    made three in a row, and every reader was given 0 for its speed (pd_controller) with no fault said."""

    def __init__(self) -> None:
        self.recent: deque[bool] = deque(maxlen=FAST_WINDOW)
        self.newest = ""  # the newest odd reading, said with the fault

    def see(self, problem: str | None) -> str | None:
        """Count this tick's reading (`problem`: speed_problem's, None if sane); the fault, if it is one now."""
        self.recent.append(problem is not None)
        self.newest = problem or self.newest
        odd = sum(self.recent)
        return f"{self.newest}; {odd} such readings in {len(self.recent)} ticks" if odd >= FAST_TICKS else None

    def clear(self) -> None:
        self.recent.clear()
        self.newest = ""


def plausible_dq(dq: np.ndarray) -> np.ndarray:
    """`dq` with the speeds no leg reaches read as 0: the torque bound is computed from it, and one odd reading
    must not move a target."""
    dq = np.asarray(dq, np.float32)
    return np.where(np.abs(dq) > _DQ_LIMIT, np.float32(0.0), dq)


def pd_torque(cmd: MotorCommand, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
    """The motor-side PD law, shared by the simulator and the SDK stand-in."""
    return cmd.kp * (cmd.q - q) + cmd.kd * (cmd.dq - dq) + cmd.tau

"""The Go1's low-level UDP protocol as unitree_legged_sdk v3.8 puts it on the wire (numpy only).

The SDK's `LowCmd` / `LowState` structs (comm.h) are not what travels: v3.8 compresses them to
614-byte commands and 807-byte states, with some fields in fixed point. The layout below was
measured against the SDK binary itself (the PyPI wheel's `robot_interface`): every byte of a state
datagram was set in turn and read back through `GetRecv`, and commands were captured from `Send`.
The stand-in robot (`uni_o4_ros.sim.go1_udp_robot`) speaks it, and the tests check it against the
binary in both directions, so a change in the SDK shows up as a failing test, not a moving robot.

Motor order on the wire is the SDK's (FR, FL, RR, RL); the first 12 of the 20 motor slots are used.
Fixed point: command tau x 256 (int16), Kp x 32 and Kd x 16 (uint16); state tauEst / 256 (int16).
The SDK wraps values outside those ranges silently (Kp 5000 arrives as 904): `check_wire_range`
is there so nothing reaches a motor that the wire cannot carry.
"""

from __future__ import annotations

import binascii
import struct

import numpy as np

LOWLEVEL = 0xFF
HEAD = (0xFE, 0xEF)
LOW_CMD_LENGTH = 614
LOW_STATE_LENGTH = 807
POS_STOP_F = 2.146e9  # "no position loop" (comm.h PosStopF)
VEL_STOP_F = 16000.0  # "no velocity loop" (comm.h VelStopF)
MODE_SERVO = 0x0A
# The 12 motors in SDK order, named as Unitree (and the MuJoCo model) name their joints.
SDK_MOTOR_NAMES = tuple(f"{leg}_{part}" for leg in ("FR", "FL", "RR", "RL") for part in ("hip", "thigh", "calf"))
MODE_DAMPING = 0x00
TAU_SCALE, KP_SCALE, KD_SCALE = 256.0, 32.0, 16.0
MAX_WIRE = {"tau": 32767 / TAU_SCALE, "kp": 65535 / KP_SCALE, "kd": 65535 / KD_SCALE}

MOTOR_CMD = np.dtype([("mode", "u1"), ("q", "<f4"), ("dq", "<f4"), ("tau", "<i2"), ("kp", "<u2"), ("kd", "<u2"),
                      ("reserve", "<u4", 3)])
LOW_CMD = np.dtype([("head", "u1", 2), ("level_flag", "u1"), ("frame_reserve", "u1"), ("sn", "<u4", 2),
                    ("version", "<u4", 2), ("bandwidth", "<u2"), ("motor", MOTOR_CMD, 20), ("bms", "u1", 4),
                    ("wireless_remote", "u1", 40), ("reserve", "<u4"), ("crc", "<u4")])
MOTOR_STATE = np.dtype([("mode", "u1"), ("q", "<f4"), ("dq", "<f4"), ("ddq", "<i2"), ("tau_est", "<i2"),
                        ("q_raw", "<f4"), ("dq_raw", "<f4"), ("ddq_raw", "<i2"), ("temperature", "i1"),
                        ("reserve", "<u4", 2)])
IMU = np.dtype([("quaternion", "<f4", 4), ("gyroscope", "<f4", 3), ("accelerometer", "<f4", 3), ("rpy", "<f4", 3),
                ("temperature", "i1")])
BMS_STATE = np.dtype([("version_h", "u1"), ("version_l", "u1"), ("status", "u1"), ("soc", "u1"), ("current", "<i4"),
                      ("cycle", "<u2"), ("bq_ntc", "i1", 2), ("mcu_ntc", "i1", 2), ("cell_vol", "u1", 10)])
LOW_STATE = np.dtype([("head", "u1", 2), ("level_flag", "u1"), ("frame_reserve", "u1"), ("sn", "<u4", 2),
                      ("version", "<u4", 2), ("bandwidth", "<u2"), ("imu", IMU), ("motor", MOTOR_STATE, 20),
                      ("bms", BMS_STATE), ("foot_force", "<i2", 4), ("foot_force_est", "<i2", 4), ("tick", "<u4"),
                      ("wireless_remote", "u1", 40), ("reserve", "<u4"), ("crc", "<u4")])
assert LOW_CMD.itemsize == LOW_CMD_LENGTH and LOW_STATE.itemsize == LOW_STATE_LENGTH


# The remote's 40 bytes (joystick.h xRockerBtnDataStruct): head[2], a 16-bit button mask in this
# bit order, then the sticks lx, rx, ry, L2 (analog), ly as floats.
REMOTE_BUTTONS = ("R1", "L1", "start", "select", "R2", "L2", "F1", "F2", "A", "B", "X", "Y", "up", "right",
                  "down", "left")


class WireError(ValueError):
    """A datagram that is not a valid Go1 low-level packet, or a value the wire cannot carry."""


_REFLECTED_BYTE = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def crc32_words(data: bytes) -> int:
    """Unitree's CRC: CRC-32 (poly 0x04C11DB7, init all ones, no reflection, no final xor) fed the
    little-endian 32-bit words most significant bit first, over every whole word of `data`.

    Computed with zlib's reflected CRC-32 (same polynomial): word bytes in big-endian order, each
    byte bit-reversed, zlib's final inversion undone, the result bit-reversed. ~400x faster than the
    bitwise definition (test_unitree_sdk checks both agree); the stand-in computes two per tick."""
    whole = np.frombuffer(data[: len(data) // 4 * 4], "<u4").astype(">u4").tobytes()
    reflected = binascii.crc32(whole.translate(_REFLECTED_BYTE)) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _crc_of(packet: bytes) -> int:
    return crc32_words(packet[: (len(packet) // 4 - 1) * 4])


def _checked(datagram: bytes, dtype: np.dtype, what: str) -> np.ndarray:
    if len(datagram) != dtype.itemsize:
        raise WireError(f"{what}: {len(datagram)} bytes, expected {dtype.itemsize}")
    rec = np.frombuffer(datagram, dtype)[0]
    if tuple(rec["head"]) != HEAD or rec["level_flag"] != LOWLEVEL:
        raise WireError(f"{what}: not a low-level packet (head {bytes(rec['head']).hex()}, "
                        f"level {rec['level_flag']:#x})")
    if int(rec["crc"]) != _crc_of(datagram):
        raise WireError(f"{what}: crc mismatch")
    return rec


def _sealed(rec: np.ndarray) -> bytes:
    rec["crc"] = 0
    raw = bytearray(rec.tobytes())
    struct.pack_into("<I", raw, len(raw) - 4, _crc_of(bytes(raw)))
    return bytes(raw)


def decode_low_cmd(datagram: bytes) -> dict[str, np.ndarray]:
    """The 12 used motor commands of a LowCmd datagram, SDK order, in SI units."""
    m = _checked(datagram, LOW_CMD, "LowCmd")["motor"][:12]
    return {"mode": m["mode"].copy(), "q": m["q"].astype(np.float64), "dq": m["dq"].astype(np.float64),
            "tau": m["tau"] / TAU_SCALE, "kp": m["kp"] / KP_SCALE, "kd": m["kd"] / KD_SCALE}


def encode_low_cmd(mode: np.ndarray, q: np.ndarray, dq: np.ndarray, tau: np.ndarray, kp: np.ndarray,
                   kd: np.ndarray) -> bytes:
    """What the SDK's Send() emits for these 12 motors (SDK order); the rest as InitCmdData leaves them."""
    check_wire_range(tau=tau, kp=kp, kd=kd)
    rec = np.zeros((), LOW_CMD)
    rec["head"], rec["level_flag"] = HEAD, LOWLEVEL
    m = rec["motor"]
    m["mode"], m["q"], m["dq"] = MODE_SERVO, POS_STOP_F, VEL_STOP_F
    m["mode"][:12], m["q"][:12], m["dq"][:12] = mode, q, dq
    m["tau"][:12] = np.trunc(np.asarray(tau) * TAU_SCALE)  # the SDK truncates
    m["kp"][:12] = np.trunc(np.asarray(kp) * KP_SCALE)
    m["kd"][:12] = np.trunc(np.asarray(kd) * KD_SCALE)
    return _sealed(rec)


def parse_buttons(text: str) -> frozenset[str]:
    """A combination such as "L2+B" -> its buttons ("" -> none); unknown names are a WireError."""
    buttons = frozenset(b.strip() for b in str(text).split("+") if b.strip())
    if buttons - set(REMOTE_BUTTONS):
        raise WireError(f"{text!r}: unknown button(s) {sorted(buttons - set(REMOTE_BUTTONS))}; "
                        f"known: {'+'.join(REMOTE_BUTTONS)}")
    return buttons


def encode_remote(buttons: frozenset[str] | set[str] = frozenset()) -> bytes:
    """The wireless remote's 40 bytes with these buttons held (sticks centred)."""
    unknown = set(buttons) - set(REMOTE_BUTTONS)
    if unknown:
        raise WireError(f"unknown remote button(s) {sorted(unknown)}; known: {', '.join(REMOTE_BUTTONS)}")
    mask = sum(1 << REMOTE_BUTTONS.index(b) for b in buttons)
    return bytes(2) + struct.pack("<H", mask) + bytes(36)


def pressed_buttons(remote: bytes | list[int]) -> frozenset[str]:
    """The buttons held, from the remote's 40 bytes as LowState carries them."""
    mask = int(remote[2]) | int(remote[3]) << 8
    return frozenset(b for i, b in enumerate(REMOTE_BUTTONS) if mask >> i & 1)


def encode_low_state(q: np.ndarray, dq: np.ndarray, tau_est: np.ndarray, quaternion: np.ndarray,
                     gyroscope: np.ndarray, accelerometer: np.ndarray, rpy: np.ndarray, foot_force: np.ndarray,
                     tick_us: int, mode: int | np.ndarray = MODE_SERVO, remote: bytes = bytes(40),
                     battery_soc: int = 100, temperature: int | np.ndarray = 35) -> bytes:
    """A LowState datagram as the Go1 sends it: joints in SDK order, quaternion (w, x, y, z); each motor's
    mode and temperature (deg C); the battery's state of charge (%) in bms.SOC."""
    rec = np.zeros((), LOW_STATE)
    rec["head"], rec["level_flag"] = HEAD, LOWLEVEL
    imu = rec["imu"]
    imu["quaternion"], imu["gyroscope"], imu["accelerometer"], imu["rpy"] = quaternion, gyroscope, accelerometer, rpy
    m = rec["motor"]
    m["mode"][:12], m["q"][:12], m["dq"][:12] = mode, q, dq
    m["tau_est"][:12] = np.clip(np.round(np.asarray(tau_est) * TAU_SCALE), -32768, 32767)
    m["q_raw"][:12], m["dq_raw"][:12] = q, dq
    m["temperature"][:12] = np.clip(temperature, -128, 127)
    rec["foot_force"] = np.clip(np.round(foot_force), -32768, 32767)
    rec["foot_force_est"] = rec["foot_force"]
    rec["bms"]["soc"] = int(np.clip(round(battery_soc), 0, 100))
    rec["tick"] = tick_us & 0xFFFFFFFF
    rec["wireless_remote"] = np.frombuffer(remote, np.uint8)
    return _sealed(rec)


def decode_low_state(datagram: bytes) -> dict[str, np.ndarray]:
    rec = _checked(datagram, LOW_STATE, "LowState")
    m = rec["motor"][:12]
    return {"q": m["q"].astype(np.float64), "dq": m["dq"].astype(np.float64), "tau_est": m["tau_est"] / TAU_SCALE,
            "quaternion": rec["imu"]["quaternion"].astype(np.float64), "foot_force": rec["foot_force"].astype(float),
            "tick": int(rec["tick"])}


def check_wire_range(**values: np.ndarray) -> None:
    """Refuse what the fixed-point fields would wrap (tau, kp, kd) or what is not a number."""
    for name, v in values.items():
        v = np.asarray(v, np.float64)
        if not np.all(np.isfinite(v)):
            raise WireError(f"{name} is not finite")
        lo = -MAX_WIRE[name] if name == "tau" else 0.0
        if np.any(v < lo) or np.any(v > MAX_WIRE[name]):
            raise WireError(f"{name} outside what the Go1 wire carries [{lo:g}, {MAX_WIRE[name]:g}]: "
                            f"{v.min():g}..{v.max():g}")

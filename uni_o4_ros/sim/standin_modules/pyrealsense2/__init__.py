"""Stand-in for librealsense's Python module with one T265 attached (uni_o4_ros.sim.t265_standin).

Only what a pose-stream reader uses: context().query_devices(), config().enable_stream(stream.pose),
pipeline().start / try_wait_for_frames / wait_for_frames / stop. It is found only when its folder
comes first on PYTHONPATH; the device exists only while UNI_O4_T265_FEED names where its pose feed
arrives.
"""

import os
from types import SimpleNamespace

from uni_o4_ros.sim import t265_standin as _standin

__version__ = _standin.version()
camera_info = SimpleNamespace(name="name", serial_number="serial_number")
stream = SimpleNamespace(pose="pose")


class _Device:
    def get_info(self, key):
        return {"name": _standin.DEVICE_NAME, "serial_number": "stand-in"}[key]


class context:  # noqa: N801 - librealsense's spelling
    def query_devices(self):
        return [_Device()] if _standin.device_present() else []


class config:  # noqa: N801
    def __init__(self):
        self.streams = []

    def enable_stream(self, kind):
        self.streams.append(kind)


class pipeline:  # noqa: N801
    def __init__(self, ctx=None):
        self._device = None

    def start(self, cfg=None):
        if not _standin.device_present():
            raise RuntimeError("No device connected")
        self._device = _standin.StandInT265(_standin.feed_address(os.environ[_standin.FEED_ENV]))

    def try_wait_for_frames(self, timeout_ms=5000):
        frames = self._device.frame(timeout_ms)
        return (frames is not None, frames)

    def wait_for_frames(self, timeout_ms=5000):
        frames = self._device.frame(timeout_ms)
        if frames is None:
            raise RuntimeError(f"Frame didn't arrive within {timeout_ms}")
        return frames

    def stop(self):
        if self._device is not None:
            self._device.close()
            self._device = None

"""Stand-in for librealsense's Python module with one T265 attached (uni_o4_ros.sim.t265_standin).

Only what a pose-stream reader uses: context().query_devices(), config().enable_stream(stream.pose),
config().resolve(pipeline).get_device().first_pose_sensor().set_option / get_option
(option.enable_pose_jumping: 1 by default, read-only while streaming, as on the device),
pipeline().start / try_wait_for_frames / wait_for_frames / stop (a device unplugged mid-stream stops the
pipeline, as librealsense does: t265_standin.unplugged). It is found only when its folder
comes first on PYTHONPATH; the device exists only while UNI_O4_T265_FEED names where its pose feed
arrives.
"""

import os
from types import SimpleNamespace

from uni_o4_ros.sim import t265_standin as _standin

__version__ = _standin.version()
camera_info = SimpleNamespace(name="name", serial_number="serial_number")
stream = SimpleNamespace(pose="pose")
option = SimpleNamespace(enable_pose_jumping="enable_pose_jumping")


class _Device:
    def __init__(self, pipe=None):
        self._pipe = pipe

    def get_info(self, key):
        return {"name": _standin.DEVICE_NAME, "serial_number": "stand-in"}[key]

    def first_pose_sensor(self):
        return _PoseSensor(self._pipe)


class _PoseSensor:
    def __init__(self, pipe):
        self._pipe = pipe

    def set_option(self, key, value):
        if key not in self._pipe.options:
            raise RuntimeError(f"object doesn't support option #{key}")
        if self._pipe._device is not None:
            raise RuntimeError("Option is read-only while streaming")
        self._pipe.options[key] = float(value)

    def get_option(self, key):
        return self._pipe.options[key]


class _Profile:
    def __init__(self, pipe):
        self._pipe = pipe

    def get_device(self):
        return _Device(self._pipe)


class context:  # noqa: N801 - librealsense's spelling
    def query_devices(self):
        return [_Device()] if _standin.device_present() else []


class config:  # noqa: N801
    def __init__(self):
        self.streams = []

    def enable_stream(self, kind):
        self.streams.append(kind)

    def resolve(self, pipe):
        if not _standin.device_present():
            raise RuntimeError("No device connected")
        return _Profile(pipe)


class pipeline:  # noqa: N801
    def __init__(self, ctx=None):
        self._device = None
        self.options = {option.enable_pose_jumping: 1.0}  # the device's defaults

    def start(self, cfg=None):
        if not _standin.device_present():
            raise RuntimeError("No device connected")
        self._device = _standin.StandInT265(_standin.feed_address(os.environ[_standin.FEED_ENV]),
                                            pose_jumping=bool(self.options[option.enable_pose_jumping]))

    def try_wait_for_frames(self, timeout_ms=5000):
        frames = self._frame("try_wait_for_frames", timeout_ms)
        return (frames is not None, frames)

    def wait_for_frames(self, timeout_ms=5000):
        frames = self._frame("wait_for_frames", timeout_ms)
        if frames is None:
            raise RuntimeError(f"Frame didn't arrive within {timeout_ms}")
        return frames

    def _frame(self, method, timeout_ms):
        if self._device is None:
            raise RuntimeError(f"{method} cannot be called before start()")
        try:
            frames = self._device.frame(timeout_ms)
            if self._device.replugged:  # back within the call: librealsense starts again with the config it had
                self.stop()
                self.options = {option.enable_pose_jumping: 1.0}
                self.start()
                frames = self._device.frame(timeout_ms)
            return frames
        except RuntimeError:
            if self._device.gone:
                # librealsense stops the pipeline when its device is gone and could not be found again within the
                # call; the device that comes back re-enumerates with its default options
                self.stop()
                self.options = {option.enable_pose_jumping: 1.0}
            raise

    def stop(self):
        if self._device is None:
            raise RuntimeError("stop() cannot be called before start()")
        self._device.close()
        self._device = None

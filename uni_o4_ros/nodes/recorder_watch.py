"""The recorder's episode ends, heard from a process that is not a node (`uni-o4 bringup`).

A listener on `recorder_events` spinning on its own thread and context, so the caller keeps its own
loop and signal handling; it only queues what it hears.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from uni_o4_ros.msg import EpisodeEvent

from .dds_transport import without_shared_memory
from .qos import EVENTS

ENDS = frozenset({EpisodeEvent.ENDED, EpisodeEvent.ABORTED_FALL, EpisodeEvent.ABORTED_ESTOP, EpisodeEvent.TIMEOUT})


@dataclass(frozen=True)
class EpisodeEnd:
    episode_id: int
    transitions: int
    reason: str


class RecorderWatch:
    """Queues every episode end the recorder publishes (transient-local: ends before it matched too)."""

    def __init__(self, topic: str = "recorder_events", env: dict[str, str] | None = None) -> None:
        # The nodes' domain and discovery range, when they run with another environment than this process
        # (the field pipeline's), and the transport they use (run_node): so this listener finds them.
        env = os.environ if env is None else env
        os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS")
                           if k in env})
        os.environ.update(without_shared_memory(os.environ).settings)
        self._ends: queue.SimpleQueue[EpisodeEnd] = queue.SimpleQueue()
        self._context = rclpy.Context()
        rclpy.init(context=self._context, signal_handler_options=SignalHandlerOptions.NO)
        self._node = rclpy.create_node("uni_o4_bringup", context=self._context)
        self._node.create_subscription(EpisodeEvent, topic, self._on_event, EVENTS)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._spin, name="recorder_watch", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    def _on_event(self, msg: EpisodeEvent) -> None:
        if msg.event in ENDS:
            self._ends.put(EpisodeEnd(int(msg.episode_id), int(msg.steps), str(msg.reason)))

    def ends(self) -> list[EpisodeEnd]:
        """The ends heard since the last call."""
        out = []
        while True:
            try:
                out.append(self._ends.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self._context.try_shutdown()
        self._thread.join(timeout=5.0)
        self._executor.shutdown()
        self._node.destroy_node()

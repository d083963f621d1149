"""QoS per ARCHITECTURE.md: sensors best-effort keep-last small; commands reliable keep-last 1;
policy updates reliable + transient-local keep-last 1 (a late joiner gets the newest weights);
experience (policy steps, transitions) reliable keep-all. Streams that standard ROS tools read (odom,
joint_states) are published reliable, since rviz and most tools subscribe reliable by default."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
# odom and joint_states: a reliable writer matches reliable readers (rviz's Odometry display, robot_state_publisher,
# `ros2 topic echo`) and best-effort ones (our own nodes subscribe with SENSOR), where a best-effort writer
# matched only the latter: rviz showed nothing. Keep-last: a slow or stopped reader costs the writer its
# oldest sample, never a wait (benchmarks/slow_reader.py); volatile, as tools expect of a stream.
RELIABLE_STREAM = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
# A reader that pairs samples across topics (the recorder: each policy step with the state it answered and that
# moment's odometry) must find them queued after a stall, not overwritten: with depth 5, a stall of 25 ms in the
# 200 Hz lockstep simulation cost the recorder the odometry its steps answered, and it took newer samples
# (rewards that differed between two recordings of one seed, seen on a loaded machine; a 150 ms SIGSTOP does it
# every time, test_bringup). 200 samples: 1 s there, 4 s at 50 Hz. Longer stalls overflow the kernel's UDP
# receive buffer first (a 400 ms one did, at rmem_default 208 KB). Best-effort: it matches writers of both kinds.
SENSOR_BACKLOG = QoSProfile(depth=200, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
COMMAND = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
POLICY_UPDATE = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
# A policy node run's session (policy_update.py): as the newest weights, a learner that joins late must get it.
POLICY_SESSION = POLICY_UPDATE
# Events (falls, episode boundaries, update verdicts) are rare and must reach late joiners: a fall
# detected on the very first tick happened before a just-started recorder had matched.
EVENTS = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL)
# /diagnostics as diagnostic_updater publishes it: reliable, volatile. Transient-local (as EVENTS) handed a late
# monitor that asks for the publisher's durability (`ros2 topic echo`'s best available) up to 50 stale statuses first.
DIAGNOSTICS = RELIABLE_STREAM
# Experience must not be lost to a momentarily slow subscriber (a keep-last-50 queue dropped 81 of
# 24,000 transitions at 50 Hz x 8 robots on an overloaded machine): keep all, reliable.
TRANSITIONS = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)

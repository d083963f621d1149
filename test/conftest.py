"""Shared fixtures: an isolated ROS 2 domain per test and a helper to start Python processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_domain_counter = iter(range(1000))


@pytest.fixture
def ros_env(monkeypatch) -> dict[str, str]:
    """Environment for rclpy processes: own ROS_DOMAIN_ID (1..100), discovery on this host only."""
    domain = 1 + (os.getpid() * 7 + next(_domain_counter)) % 100
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        monkeypatch.setenv(k, env[k])
    return env


def spawn_python(code: str, env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)

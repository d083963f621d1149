"""Uni-O4 learning core: torch only, no ROS import (networks, ensemble BC, IQL, dynamics, AM-Q,
multi-step offline improvement, online PPO)."""

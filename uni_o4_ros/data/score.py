"""D4RL-normalised score: 100 * (return - random) / (expert - random), D4RL's reference returns."""

from __future__ import annotations

import numpy as np

REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}


def reference_returns(env_name: str) -> tuple[float, float]:
    """'Hopper-v5', 'hopper-medium-v2', 'hopper' all map to hopper's (random, expert) returns."""
    key = env_name.lower()
    for name, ref in REFERENCE_RETURNS.items():
        if key.startswith(name):
            return ref
    raise KeyError(f"no D4RL reference returns for {env_name!r}; known: {sorted(REFERENCE_RETURNS)}")


def normalized_score(env_name: str, returns: float | np.ndarray) -> float | np.ndarray:
    lo, hi = reference_returns(env_name)
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)


def score_note(env_name: str) -> str | None:
    """What a normalised score on `env_name` is, said beside it: D4RL's references were measured on its
    v2 tasks (mujoco-py), the returns here on Gymnasium's tasks (MuJoCo bindings)."""
    try:
        lo, hi = reference_returns(env_name)
    except KeyError:
        return None
    note = (f"100 * (return - random) / (expert - random) with D4RL's v2 reference returns (random {lo:g}, expert "
            f"{hi:g}); the return measured on {env_name} (Gymnasium, MuJoCo bindings), not on D4RL's v2 task")
    if env_name.lower().startswith("walker2d") and env_name.endswith("-v5"):
        # Gymnasium's Walker2d-v5 notes: both feet now have friction 1.9 (v2-v4: the right foot 0.9)
        note += "; Walker2d-v5 gave its right foot more friction than D4RL's v2 task had, so not comparable"
    return note

"""Verification of a PolicyUpdate before any of its weights can reach a motor.

A received update is accepted only if: its version is newer than the running one; the sha256 of
the safetensors bytes matches the announced digest; the bytes parse as safetensors (never
pickle); the spec matches the running policy's observation and action sizes; every tensor the
architecture needs is present with the exact shape and nothing else is; all values are finite;
and, when a key is configured, the HMAC-SHA256 signature matches. Anything else is refused with a
reason and the running policy keeps running.

Those checks pass a well-formed update from a learner that diverged (finite but runaway weights), or a
policy for another robot: `joint_target_shift` measures what the motors would feel, how far the update
moves the joint targets from where the running policy puts them on the states it just acted on, and
the runner refuses an update that moves them more than `max_update_shift`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..learning.normalizer import StateNormalizer
from ..learning.policy import GaussianPolicyEnsemble, PolicySpec
from .go1 import action_to_joint_targets


class UpdateRejected(ValueError):
    pass


@dataclass
class VerifiedPolicy:
    version: int
    policy: GaussianPolicyEnsemble
    normalizer: StateNormalizer
    sha256: str


def encode_update(policy: GaussianPolicyEnsemble, normalizer: StateNormalizer, version: int,
                  key: bytes | None = None) -> dict:
    """Fields of a PolicyUpdate message for `policy` (member 0 of its ensemble)."""
    tensors = {f"policy.{k}": v.contiguous() for k, v in policy.state_dict().items()}
    tensors.update({f"normalizer.{k}": v.contiguous() for k, v in normalizer.state_dict().items()
                    if k in ("mean", "std")})
    blob = save_safetensors(tensors)
    digest = hashlib.sha256(blob).hexdigest()
    spec = json.dumps({**policy.spec.to_dict(), "n": policy.n})
    sig = hmac.new(key, blob + spec.encode(), hashlib.sha256).digest() if key else b""
    return {"version": version, "sha256": digest, "safetensors": blob, "spec_json": spec, "signature": sig}


def verify_update(
    version: int, sha256: str, blob: bytes, spec_json: str, signature: bytes,
    *, current_version: int, expected_obs_dim: int, expected_act_dim: int, key: bytes | None = None,
) -> VerifiedPolicy:
    blob = bytes(blob)
    if version <= current_version:
        raise UpdateRejected(f"version {version} is not newer than the running version {current_version}")
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256:
        raise UpdateRejected(f"sha256 mismatch: announced {sha256[:12]}..., received bytes hash to {actual[:12]}...")
    if key is not None:
        expect = hmac.new(key, blob + spec_json.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expect, bytes(signature)):
            raise UpdateRejected("signature does not match the configured key")
    try:
        spec_d = json.loads(spec_json)
        n = int(spec_d.pop("n", 1))
        spec = PolicySpec.from_dict(spec_d)
    except (ValueError, TypeError, KeyError) as exc:
        raise UpdateRejected(f"unreadable spec_json: {exc}") from exc
    if n != 1:
        raise UpdateRejected(f"a deployable policy has one member, got n={n}")
    if (spec.obs_dim, spec.act_dim) != (expected_obs_dim, expected_act_dim):
        raise UpdateRejected(f"policy dims {spec.obs_dim}/{spec.act_dim} do not match the robot's "
                             f"{expected_obs_dim}/{expected_act_dim}")
    try:
        tensors = load_safetensors(blob)
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise UpdateRejected(f"not a valid safetensors payload: {exc}") from exc
    with torch.device("meta"):  # shapes only: no memory, no (discarded) random initialisation
        policy = GaussianPolicyEnsemble(spec, 1)
    wanted = {f"policy.{k}": v.shape for k, v in policy.state_dict().items()}
    wanted.update({"normalizer.mean": torch.Size([spec.obs_dim]), "normalizer.std": torch.Size([spec.obs_dim])})
    if set(tensors) != set(wanted):
        missing, extra = sorted(set(wanted) - set(tensors)), sorted(set(tensors) - set(wanted))
        raise UpdateRejected(f"tensor names differ from the architecture: missing {missing[:3]}, extra {extra[:3]}")
    for name, shape in wanted.items():
        t = tensors[name]
        if t.shape != shape:
            raise UpdateRejected(f"tensor {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        if not t.is_floating_point() or not torch.isfinite(t).all():
            raise UpdateRejected(f"tensor {name} has non-finite or non-float values")
    if (tensors["normalizer.std"] <= 0).any():
        raise UpdateRejected("normalizer.std must be positive")
    policy.load_state_dict({k[len("policy."):]: v for k, v in tensors.items() if k.startswith("policy.")},
                           assign=True)
    normalizer = StateNormalizer(tensors["normalizer.mean"], tensors["normalizer.std"])
    return VerifiedPolicy(version, policy.eval(), normalizer, actual)


def joint_target_shift(running: VerifiedPolicy, candidate: VerifiedPolicy, histories: np.ndarray) -> float:
    """How far `candidate` moves the joint targets (rad) from `running`'s on these observation histories
    (n, obs): per state its largest change over the 12 joints, averaged over the states; inf when the
    candidate's actions are not finite there (finite weights can still overflow)."""
    x = torch.from_numpy(np.ascontiguousarray(histories, np.float32))
    with torch.no_grad():
        old, new = (p.policy.executed(p.policy(p.normalizer(x))[0][0]).numpy() for p in (running, candidate))
    if not np.isfinite(new).all():
        return float("inf")
    return float(np.abs(action_to_joint_targets(new) - action_to_joint_targets(old)).max(axis=1).mean())

"""Verification of a PolicyUpdate before any of its weights can reach a motor.

A received update is accepted only if: it is made for this run of the policy node (its session);
its version is newer than the running one; the sha256 of the safetensors bytes matches the
announced digest; the bytes parse as safetensors (never pickle); the spec matches the running
policy's observation and action sizes; every tensor the architecture needs is present with the
exact shape and nothing else is; all values are finite float32; and the HMAC-SHA256 signature, over the
session, the version, the bytes and the spec, matches the robot's key. Anything else is refused
with a reason and the running policy keeps running.

The session: each policy node run draws a random one and announces it, signed, on `policy_session`;
a learner signs each update for the session it heard, and signs its newest again for a new one (a
restarted policy node). Without it, an update of an earlier run, signed with the same key, passed
under a version higher than the running one: a `ros2 bag play` of yesterday's bag beside the robot
hot-swapped yesterday's policy in.

The key is on by default (`hmac_key_file: auto`): each computer makes its own on first use, in
~/.config/uni_o4_ros/policy_update.key, so a learner on the robot's computer signs with the key the
policy node checks, and anything else on the ROS domain (another robot's learner, a stray tool) is
refused. A learner on another computer needs a copy of that file. `hmac_key_file: ''` turns the
signature off (integrity and plausibility are still checked, authenticity is not).

Those checks pass a well-formed update from a learner that diverged (finite but runaway weights), or a
policy for another robot: `joint_target_shifts` measures what the motors would feel, how far the update
moves the joint targets from where the running policy puts them on the states it just acted on, and
the runner refuses an update that moves them more than `max_update_shift`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..learning.normalizer import StateNormalizer
from ..learning.policy import GaussianPolicyEnsemble, PolicySpec
from .go1 import action_to_joint_targets


class UpdateRejected(ValueError):
    """An update refused, and whether it was authentic: signed with this robot's key (or no key is used), so the
    verdict may be signed for the learner. A verdict on a forgery, signed, would let anyone on the domain make
    the learner throw away its newest version."""

    def __init__(self, message: str, authentic: bool = False, sha256: str = "") -> None:
        super().__init__(message)
        self.authentic, self.sha256 = authentic, sha256  # sha256: of the bytes refused, which a verdict names


@dataclass
class VerifiedPolicy:
    version: int
    policy: GaussianPolicyEnsemble
    normalizer: StateNormalizer
    sha256: str


AUTO_KEY = "auto"
MIN_KEY_BYTES = 32  # HMAC-SHA256's own strength: shorter keys are easier to guess than its output


class UpdateKeyError(ValueError):
    """The configured key cannot be used (a missing, unreadable or empty file, or one open to other users)."""


def default_key_path() -> Path:
    """This computer's own key: $XDG_CONFIG_HOME/uni_o4_ros/policy_update.key (~/.config by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "uni_o4_ros" / "policy_update.key"


def load_update_key(setting: str) -> tuple[bytes | None, Path | None]:
    """The key that signs and checks policy updates, from a node's `hmac_key_file` parameter, and its file.
    'auto': this computer's own key, made on first use; a path: that file, which must exist; '': none."""
    if not setting:
        return None, None
    path = default_key_path() if setting == AUTO_KEY else Path(setting).expanduser()
    if setting == AUTO_KEY and not path.exists():
        _make_key(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        key = path.read_bytes().strip()
    except OSError as exc:
        raise UpdateKeyError(f"hmac_key_file {path}: {exc.strerror} (a key file, 'auto' for this computer's "
                             "own key, or '' for unsigned updates)") from exc
    # Whoever reads the key can sign weights that reach the motors, and whoever writes it can swap in their
    # own: refused as ssh refuses an open private key, with the fix in the message.
    if mode & 0o077:
        raise UpdateKeyError(f"hmac_key_file {path} can be {'written' if mode & 0o022 else 'read'} by other users "
                             f"(mode {mode:o}): anyone who has it can sign policy updates. Run: chmod 600 {path}")
    if path.stat().st_uid != os.geteuid():
        raise UpdateKeyError(f"hmac_key_file {path} belongs to another user (uid {path.stat().st_uid}): whoever owns "
                             "it can swap in their own key. Use a key file of this user's")
    if len(key) < MIN_KEY_BYTES:
        raise UpdateKeyError(f"hmac_key_file {path} holds {len(key)} bytes, fewer than {MIN_KEY_BYTES}: too short to "
                             "keep anyone from guessing it. 'auto' makes a 64-character one")
    return key, path


def key_fingerprint(key: bytes) -> str:
    """A short name for a key that does not give it away: two computers' logs show whether they share one."""
    return hashlib.sha256(b"uni_o4_ros policy_update key\n" + key).hexdigest()[:12]


def _make_key(path: Path) -> None:
    """32 random bytes, readable by this user only. Written aside and linked into place: the policy node and
    the learner often start together, and neither may replace (or read half of) the key the other made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A name no one else writes: the key is linked from it, so rewriting it would rewrite the key.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # made by the other node meanwhile: both use that one
        finally:
            tmp.unlink()
    except OSError as exc:
        raise UpdateKeyError(f"cannot make this computer's update key {path}: {exc.strerror} (set hmac_key_file "
                             "to a key file, or to '' for unsigned updates)") from exc


def _signed_bytes(version: int, blob: bytes, spec_json: str, session: str) -> bytes:
    """What the signature covers. The version too: an update captured from the network and offered again under
    a higher number would otherwise pass; the session, or it would pass in the policy node's next run. Lengths
    first, so no two messages give the same bytes."""
    spec, sess = spec_json.encode(), session.encode()
    # version: the message's uint64
    return struct.pack("<QQQQ", version, len(blob), len(spec), len(sess)) + blob + spec + sess


def _status_bytes(values: dict[str, str], message: str) -> bytes:
    return json.dumps({"values": {k: v for k, v in values.items() if k != "signature"}, "message": message},
                      sort_keys=True).encode()


def sign_status(values: dict[str, str], message: str, key: bytes) -> str:
    """The signature of a policy node's verdict on an update (policy_status), as hex for a KeyValue."""
    return hmac.new(key, _status_bytes(values, message), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Refusal:
    version: int  # refused
    running: int  # what the robot runs instead
    signed: bool  # with the reader's key (or the reader has none): its own robot's verdict
    sha256: str = ""  # of the bytes refused: the learner acts only on a verdict on the update it published


def refusal_in(values: dict[str, str], message: str, key: bytes | None) -> Refusal | None:
    """The refusal a policy_status reports, or None (an acceptance, or not a policy node's status). The learner
    goes back to an older version on a refusal, so it acts only on its own robot's (`signed`): a status from
    another suite on the domain, or a forgery, would have it throw away what it learned."""
    if values.get("accepted") != "False" or values.get("stale_session") == "True":
        return None  # stale_session: an update for an earlier run of the policy node, which the learner re-signs
    try:
        version, running = int(values.get("version", "")), int(values.get("running", ""))
    except ValueError:
        return None
    # As bytes: compare_digest raises on a str with non-ASCII characters, which anyone can publish.
    signed = key is None or hmac.compare_digest(sign_status(values, message, key).encode(),
                                                values.get("signature", "").encode())
    return Refusal(version, running, signed, values.get("sha256", ""))


def encode_update(policy: GaussianPolicyEnsemble, normalizer: StateNormalizer, version: int,
                  key: bytes | None = None, session: str = "") -> dict:
    """Fields of a PolicyUpdate message for `policy` (member 0 of its ensemble), for the policy node run that
    announced `session`."""
    tensors = {f"policy.{k}": v.contiguous() for k, v in policy.state_dict().items()}
    tensors.update({f"normalizer.{k}": v.contiguous() for k, v in normalizer.state_dict().items()
                    if k in ("mean", "std")})
    blob = save_safetensors(tensors)
    digest = hashlib.sha256(blob).hexdigest()
    spec = json.dumps({**policy.spec.to_dict(), "n": policy.n})
    fields = {"version": version, "sha256": digest, "safetensors": blob, "spec_json": spec, "session": session,
              "signature": b""}
    return sign_update(fields, key) if key else fields


def sign_update(fields: dict, key: bytes) -> dict:
    """`fields` (a PolicyUpdate's) signed with `key`: over its version, safetensors bytes, spec and session."""
    blob = bytes(fields["safetensors"])
    signed = _signed_bytes(int(fields["version"]), blob, fields["spec_json"], fields.get("session", ""))
    return {**fields, "signature": hmac.new(key, signed, hashlib.sha256).digest()}


class StaleSession(UpdateRejected):
    """An update signed with this robot's key for another run of the policy node: an old one played again, or
    one its learner signed before it heard this run's session (and signs again once it does). Not `authentic`:
    a signed verdict would have the learner throw its newest version away."""


def verify_update(
    version: int, sha256: str, blob: bytes, spec_json: str, signature: bytes,
    *, current_version: int, expected_obs_dim: int, expected_act_dim: int, key: bytes | None = None,
    expected_spec: PolicySpec | None = None, session: str = "", expected_session: str | None = None,
) -> VerifiedPolicy:
    """The update as a policy ready to run, or UpdateRejected. The signature is checked first: a refusal says
    whether the update was authentic (UpdateRejected.authentic) before anything else is judged. `expected_spec`:
    the running policy's architecture, which an update must keep (a wider log-std range or other layers would
    act differently from what the shift check measures on mean actions). `expected_session`: this policy node
    run's, which the update's `session` must name (StaleSession otherwise); None: not checked."""
    blob = bytes(blob)
    actual = hashlib.sha256(blob).hexdigest()
    try:
        _check_signature(version, blob, spec_json, session, signature, key)
    except UpdateRejected as exc:
        exc.sha256 = actual
        raise
    if expected_session is not None and session != expected_session:
        named = f"session {session[:8]}..." if session else "no session"
        raise StaleSession(f"it is signed for {named}, not this run of the policy node ({expected_session[:8]}..., "
                           "policy_session): an update of an earlier run played again, or one its learner made "
                           "before it heard this run; a learner signs its newest version again for this run",
                           sha256=actual)
    try:  # the signature holds (or no key is used): what is refused from here on is authentic
        return _judge(version, sha256, actual, blob, spec_json, current_version, expected_obs_dim, expected_act_dim,
                      expected_spec)
    except UpdateRejected as exc:
        exc.authentic, exc.sha256 = True, actual
        raise
    except Exception as exc:  # noqa: BLE001 - a check this module lacks; still the robot's own learner's update,
        # whose verdict it must be able to act on (an unsigned one left it waiting)
        raise UpdateRejected(f"checking it failed: {type(exc).__name__}: {exc}", True, actual) from exc


def _check_signature(version: int, blob: bytes, spec_json: str, session: str, signature: bytes,
                     key: bytes | None) -> None:
    if key is not None:
        if not bytes(signature):
            raise UpdateRejected("it is not signed, and this robot takes only updates signed with its key "
                                 "(hmac_key_file): is the learner's hmac_key_file ''?")
        expect = hmac.new(key, _signed_bytes(version, blob, spec_json, session), hashlib.sha256).digest()
        if not hmac.compare_digest(expect, bytes(signature)):
            raise UpdateRejected("its signature does not match this robot's key (hmac_key_file): a learner on "
                                 "another computer, or another robot's, signs with its own key; give it a copy of "
                                 "this robot's key file")


def _judge(version: int, sha256: str, actual: str, blob: bytes, spec_json: str, current_version: int,
           expected_obs_dim: int, expected_act_dim: int, expected_spec: PolicySpec | None) -> VerifiedPolicy:
    if version <= current_version:
        raise UpdateRejected(f"version {version} is not newer than the running version {current_version}")
    if actual != sha256:
        raise UpdateRejected(f"sha256 mismatch: announced {sha256[:12]}..., received bytes hash to {actual[:12]}...")
    try:
        spec_d = json.loads(spec_json)
        if not isinstance(spec_d, dict):
            raise TypeError(f"a JSON {type(spec_d).__name__}, not an object")
        n = int(spec_d.pop("n", 1))
        spec = PolicySpec.from_dict(spec_d)
    except (ValueError, TypeError, KeyError) as exc:
        raise UpdateRejected(f"unreadable spec_json: {exc}") from exc
    if n != 1:
        raise UpdateRejected(f"a deployable policy has one member, got n={n}")
    if (spec.obs_dim, spec.act_dim) != (expected_obs_dim, expected_act_dim):
        raise UpdateRejected(f"policy dims {spec.obs_dim}/{spec.act_dim} do not match the robot's "
                             f"{expected_obs_dim}/{expected_act_dim}")
    if expected_spec is not None and spec.to_dict() != expected_spec.to_dict():
        theirs, ours = spec.to_dict(), expected_spec.to_dict()
        differ = ", ".join(f"{k} {theirs.get(k)!r} (running: {ours.get(k)!r})" for k in sorted(set(theirs) | set(ours))
                           if theirs.get(k) != ours.get(k))
        raise UpdateRejected(f"its architecture differs from the running policy's: {differ}; deploy a new "
                             "architecture by restarting the policy node with it")
    try:
        tensors = load_safetensors(blob)
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise UpdateRejected(f"not a valid safetensors payload: {exc}") from exc
    try:
        with torch.device("meta"):  # shapes only: no memory, no (discarded) random initialisation
            policy = GaussianPolicyEnsemble(spec, 1)
    except (RuntimeError, ValueError, TypeError) as exc:  # e.g. a negative layer width
        raise UpdateRejected(f"spec_json describes no policy that can be built: {exc}") from exc
    wanted = {f"policy.{k}": v.shape for k, v in policy.state_dict().items()}
    wanted.update({"normalizer.mean": torch.Size([spec.obs_dim]), "normalizer.std": torch.Size([spec.obs_dim])})
    if set(tensors) != set(wanted):
        missing, extra = sorted(set(wanted) - set(tensors)), sorted(set(tensors) - set(wanted))
        raise UpdateRejected(f"tensor names differ from the architecture: missing {missing[:3]}, extra {extra[:3]}")
    for name, shape in wanted.items():
        t = tensors[name]
        if t.shape != shape:
            raise UpdateRejected(f"tensor {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        # float32, as the running policy's: a float64 normaliser mean of 1e300 passed as finite and became inf in
        # the policy's float32, and a float16 layer ended the forward pass in a dtype error
        if t.dtype != torch.float32:
            raise UpdateRejected(f"tensor {name} is {str(t.dtype).removeprefix('torch.')}, not float32")
        if not torch.isfinite(t).all():
            raise UpdateRejected(f"tensor {name} has non-finite values")
    if (tensors["normalizer.std"] <= 0).any():
        raise UpdateRejected("normalizer.std must be positive")
    policy.load_state_dict({k[len("policy."):]: v for k, v in tensors.items() if k.startswith("policy.")},
                           assign=True)
    normalizer = StateNormalizer(tensors["normalizer.mean"], tensors["normalizer.std"])
    return VerifiedPolicy(version, policy.eval(), normalizer, actual)


# With sampled actions, the targets at the mean and at two standard deviations either side of it are compared:
# an update that widened the noise from 0.05 to 1 moved the mean by nothing and the joints by up to 1.1 rad a tick.
SAMPLED_SPREAD = (0.0, 2.0, -2.0)


def joint_target_shifts(running: VerifiedPolicy, candidate: VerifiedPolicy, histories: np.ndarray,
                        sampled: bool = False) -> np.ndarray:
    """Per observation history (n, obs), the largest change over the 12 joints of the joint targets (rad)
    from `running`'s to `candidate`'s, at the mean action (and with `sampled`, at mean +- 2 std too); inf where
    the candidate's actions are not finite (finite weights can still overflow), NaN where `running`'s are not
    (nothing to compare with: a running policy broken on a state must not fail every update that is not)."""
    x = torch.from_numpy(np.ascontiguousarray(histories, np.float32))
    shift = np.zeros(len(x))
    bad_old, bad_new = np.zeros(len(x), bool), np.zeros(len(x), bool)
    with torch.no_grad():
        old, new = (p.policy(p.normalizer(x)) for p in (running, candidate))
        for k in SAMPLED_SPREAD if sampled else (0.0,):
            a_old, a_new = (p.policy.executed(m[0] + k * log_std[0].exp()).numpy()
                            for p, (m, log_std) in ((running, old), (candidate, new)))
            bad_old |= ~np.isfinite(a_old).all(axis=1)
            bad_new |= ~np.isfinite(a_new).all(axis=1)
            with np.errstate(invalid="ignore"):
                moved = np.abs(action_to_joint_targets(a_new) - action_to_joint_targets(a_old)).max(axis=1)
            shift = np.maximum(shift, np.where(bad_old | bad_new, 0.0, moved))
    shift[bad_old] = np.nan
    shift[bad_new] = np.inf  # the candidate's own non-finite actions count, whatever the running policy's are
    return shift

"""Checkpoints as safetensors + JSON, never pickle.

A checkpoint is `<name>.safetensors` (tensors only) and `<name>.json` (config, step counters,
anything else plain). Both are written to a temporary file and renamed, so an interrupted run
leaves either the previous checkpoint or the new one, never half of one. Optimizer states are
flattened into tensors plus a JSON description of their param groups.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from ..data.atomic import atomic_write


class CheckpointError(RuntimeError):
    pass


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """Name of the first floating tensor holding NaN or inf, or None."""
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


# What to do after a divergence, for stages cached by the hash of their settings (offline): the
# same command resumes, a lower learning rate makes a new stage beside the old one.
RERUN_ADVICE = "rerun resumes from it; try a lower learning rate"


def save(directory: str | Path, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
         diverged_advice: str = RERUN_ADVICE) -> None:
    """Write atomically; refuse NaN/inf, so a diverged training step never replaces a good checkpoint.
    `diverged_advice` ends that refusal: how this caller's runs can be rerun."""
    d = Path(directory)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    bad = first_non_finite(flat)
    if bad is not None:
        raise CheckpointError(f"not saving {d / name}: tensor {bad!r} has NaN/inf values (training diverged; "
                              f"the previous checkpoint is kept, {diverged_advice})")
    # The two files are replaced one after the other: a crash (a robot's battery) between the renames left new
    # weights beside the settings of the save before (a version label one behind, a learner resuming N+1's weights
    # with N's counters). The weights' header carries the settings too, and both files one save's id: the json
    # of another save is passed over for the header's, and the json stays what a person reads and may edit.
    # The id comes from the content, so a save of the same weights and settings is the same bytes (a policy is
    # known by its file's sha256: the field pipeline's stage markers).
    settings = json.dumps(meta, sort_keys=True)
    meta = {**meta, _SAVE_ID: hashlib.sha256(f"{tensors_digest(flat)}|{settings}".encode()).hexdigest()[:16]}
    header = {_HEADER_KEY: json.dumps(meta, sort_keys=True)}
    # Serialised here and written by us: safetensors' save_file leaves its file 0600 whatever the umask.
    atomic_write(d / f"{name}.safetensors", lambda tmp: Path(tmp).write_bytes(safetensors_bytes(flat, header)))
    # The JSON goes last: its presence marks the checkpoint complete.
    atomic_write(d / f"{name}.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, sort_keys=True)))


_SAVE_ID, _HEADER_KEY = "save_id", "uni_o4_meta"


def _weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """A checkpoint's tensors and the settings its header carries (None: saved before it did, or by another
    program), read through one handle: two opens could read two saves' files, the file replaced in between."""
    with safe_open(str(path), framework="pt") as f:
        text = (f.metadata() or {}).get(_HEADER_KEY)
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safe_open handle, no dict
    meta = json.loads(text) if text is not None else None
    return tensors, meta if isinstance(meta, dict) else None


def exists(directory: str | Path, name: str) -> bool:
    d = Path(directory)
    return (d / f"{name}.json").is_file() and (d / f"{name}.safetensors").is_file()


def load(directory: str | Path, name: str,
         needs: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A checkpoint's tensors and settings; `needs`: the settings its reader goes on with, each present, or a
    CheckpointError (a hand-edited or foreign json ended its reader in a KeyError)."""
    d = Path(directory)
    try:
        meta = json.loads((d / f"{name}.json").read_text())
        tensors, header = _weights(d / f"{name}.safetensors")
    except FileNotFoundError as exc:
        # safetensors' own FileNotFoundError names no file ("is missing: None")
        raise CheckpointError(f"checkpoint {d / name} is missing: {exc.filename or d / f'{name}.safetensors'}") from exc
    except (json.JSONDecodeError, OSError, Exception) as exc:  # safetensors raises its own types
        # Our own writes are atomic, so this is damage from outside (disk, copy, hand edit): say
        # how to recover rather than leave the user to guess whether deleting is safe.
        raise CheckpointError(f"checkpoint {d / name} is unreadable ({exc}); if {d} is a stage of a run (not a "
                              "policy you were given), deleting it makes a rerun redo that stage") from exc
    if not isinstance(meta, dict):  # valid JSON, but not what this project writes
        raise CheckpointError(f"checkpoint {d / name}: {name}.json holds a {type(meta).__name__}, not the mapping "
                              "of settings it is written with")
    if header is not None and _SAVE_ID in meta and header.get(_SAVE_ID) != meta[_SAVE_ID]:
        meta = header  # the json is an earlier save's: the process ended between the two files' renames
    meta.pop(_SAVE_ID, None)
    if missing := [k for k in needs if k not in meta]:
        raise CheckpointError(f"checkpoint {d / name}: {name}.json lacks {', '.join(missing)} (edited, or not written "
                              f"by uni-o4); if {d} is a stage of a run (not a policy you were given), deleting it "
                              "makes a rerun redo that stage")
    return tensors, meta


@contextmanager
def reading(where: str | Path) -> Iterator[None]:
    """Around a reader of a checkpoint's settings past the keys `load(needs=...)` checks (an optimizer's groups, a
    history's lists): what a hand edit or another program's file lacks is one CheckpointError, not a KeyError."""
    try:
        yield
    except (KeyError, TypeError, IndexError, ValueError) as exc:  # ValueError: int("x"), torch's group sizes
        raise CheckpointError(f"checkpoint {where} is damaged ({type(exc).__name__}: {exc}); if it is a stage of a "
                              "run (not a policy you were given), deleting it makes a rerun redo that stage") from None


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """Content hash of named tensors (names, dtypes, shapes and values), e.g. to tell whether a
    resumed run started from the same weights."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def modules_digest(**modules: torch.nn.Module) -> str:
    """`tensors_digest` of several modules' weights, each under its keyword as prefix."""
    return tensors_digest({k: v for name, m in modules.items() for k, v in prefixed(name, m).items()})


# After a divergence, for runs that resume only with their own settings (check_same_run): the
# advice above would be refused in the same run directory.
SAME_RUN_ADVICE = "rerun resumes from it with the same settings; for a lower learning rate use a new run directory"


def check_same_run(where: str | Path, meta: dict[str, Any], start: str, settings: dict[str, Any],
                   seed: int | None = None, may_change: tuple[str, ...] = ()) -> None:
    """Refuse to resume a checkpoint made from other starting weights, another seed or other
    settings (except `may_change`, e.g. how long to train): resuming would splice two different
    experiments into one, or deploy weights the user did not ask for. Checkpoints written before
    these were recorded carry no such keys and pass."""
    head = f"{where} holds another run"
    # The seed first: a run from scratch draws its initial weights from it, so another seed is also another
    # start, and "started from another policy" hid what the user changed.
    if seed is not None and "seed" in meta and meta["seed"] != seed:
        raise ValueError(f"{head}: seed {meta['seed']}, not {seed}; use another run directory")
    if "start" in meta and meta["start"] != start:
        raise ValueError(f"{head}: it started from another policy (weights or state statistics); use another "
                         "run directory, or the same initial policy to resume it")
    old = meta.get("config", {})
    changed = [f"{k} {old[k]!r} -> {settings[k]!r}" for k in sorted(settings)
               if k in old and k not in may_change and old[k] != settings[k]]
    if changed:
        raise ValueError(f"{head}, trained with other settings ({'; '.join(changed)}); use another run "
                         "directory, or the run's settings to resume it")


def prefixed(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def load_prefixed(prefix: str, module: torch.nn.Module, tensors: dict[str, torch.Tensor], assign: bool = False) -> None:
    """Load `prefix.*` of `tensors` into `module`, shapes checked first. assign: the module was built on the meta
    device (shapes only) and takes copies of the tensors as its own."""
    sub = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    missing = set(module.state_dict()) - set(sub)
    if missing:
        raise CheckpointError(f"checkpoint lacks {prefix}: {sorted(missing)[:3]}...")
    # Shapes checked here: torch's own error is a page of size mismatches, and means a spec that is not the
    # weights' (a hand-edited json, or files from two different saves).
    for key, own in module.state_dict().items():
        if tuple(sub[key].shape) != tuple(own.shape):
            raise CheckpointError(f"checkpoint's {prefix}.{key} has shape {tuple(sub[key].shape)}, its spec makes "
                                  f"{tuple(own.shape)}: weights and spec do not belong together")
        # Assigned, a float64 tensor made a float64 layer that torch refused at the first forward pass.
        if sub[key].dtype != own.dtype:
            raise CheckpointError(f"checkpoint's {prefix}.{key} is {str(sub[key].dtype).removeprefix('torch.')}, "
                                  f"this network's is {str(own.dtype).removeprefix('torch.')}: weights saved by "
                                  "another program (convert them, e.g. tensor.float())")
    if assign:
        module.load_state_dict({k: v.clone() for k, v in sub.items()}, assign=True)
    else:
        module.load_state_dict(sub)


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    scalars: dict[str, dict[str, float]] = {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{prefix}.{pid}.{key}"] = val
            else:
                scalars.setdefault(str(pid), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith(prefix + "."):
            pid, key = k[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[key] = v
    for pid, sc in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})

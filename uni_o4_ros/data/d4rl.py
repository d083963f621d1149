"""D4RL-layout datasets in HDF5: read, write (atomically), validate with one-line errors.

Layout (gym-mujoco v2 files): observations (N, obs) float32, actions (N, act) float32,
rewards (N,), terminals (N,) bool, timeouts (N,) bool, next_observations (N, obs), and optional
groups infos/* and metadata/*. Only arrays and scalars are read: no pickle anywhere.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .atomic import atomic_write
from .memory import available_memory

REQUIRED = ("observations", "actions", "rewards", "terminals")
FLOAT_KEYS = ("observations", "actions", "rewards", "next_observations")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Datasets up to this size are built in memory and written in one go (write_hdf5): a logger's episodes, a few MB.
IN_MEMORY_MAX_BYTES = 256 * 2**20


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message names the file and key."""


@dataclass
class OfflineDataset:
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    next_observations: np.ndarray
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        arrays = (self.observations, self.actions, self.rewards, self.terminals, self.timeouts,
                  self.next_observations, *self.infos.values())
        return int(sum(np.asarray(a).nbytes for a in arrays))

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def episode_slices(self) -> list[slice]:
        """Episodes end at a terminal or a timeout; a trailing unfinished episode counts too."""
        ends = np.flatnonzero(np.asarray(self.terminals, bool) | np.asarray(self.timeouts, bool))
        slices, start = [], 0
        for e in ends:
            slices.append(slice(start, int(e) + 1))
            start = int(e) + 1
        if start < len(self):
            slices.append(slice(start, len(self)))
        return slices

    def discounted_returns(self, gamma: float) -> np.ndarray:
        """Monte-Carlo return sum_k gamma^k r_{t+k} from every transition to its episode's end.

        What follows a timeout or a trailing unfinished episode is unknown and counts as 0, so
        those returns are lower bounds.
        """
        out = np.zeros(len(self), dtype=np.float64)
        rewards = np.asarray(self.rewards, dtype=np.float64)
        for sl in self.episode_slices():
            g = 0.0
            for i in range(sl.stop - 1, sl.start - 1, -1):
                g = rewards[i] + gamma * g
                out[i] = g
        return out.astype(np.float32)

    def episode_returns(self) -> np.ndarray:
        return np.array([float(self.rewards[s].sum()) for s in self.episode_slices()])

    @classmethod
    def concatenate(cls, parts: list[OfflineDataset]) -> OfflineDataset:
        if not parts:
            raise DatasetError("nothing to concatenate")
        keys = set(parts[0].infos)
        cat = {k: np.concatenate([getattr(p, k) for p in parts]) for k in
               ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
        infos = {k: np.concatenate([p.infos[k] for p in parts]) for k in keys if all(k in p.infos for p in parts)}
        return cls(**cat, infos=infos, metadata=dict(parts[0].metadata))


def finite_transition(t: dict) -> bool:
    """Every number of one streamed transition (observation, next_observation, action, reward,
    log_prob) is finite. A NaN from a sensor glitch must cost that transition, not the episode it
    is in nor the process recording or learning from it."""
    arrays = (t["observation"], t["next_observation"], t["action"], [t["reward"], t["log_prob"]])
    return all(np.isfinite(np.asarray(a, np.float64)).all() for a in arrays)


def transition_dims(t: dict) -> tuple[int, int] | None:
    """(observation, action) lengths of one streamed transition; None when its arrays cannot be a row of a
    dataset at all (not 1-D, empty, or a next_observation of another length than its observation)."""
    obs, nxt, act = (np.shape(t[k]) for k in ("observation", "next_observation", "action"))
    if len(obs) != 1 or nxt != obs or len(act) != 1 or 0 in (obs[0], act[0]):
        return None
    return obs[0], act[0]


def describe_dims(t: dict) -> str:
    """A transition's observation/next_observation/action lengths, for a message."""
    return "/".join("x".join(map(str, np.shape(t[k]))) for k in ("observation", "next_observation", "action"))


def _fail(path: str | Path, msg: str) -> DatasetError:
    return DatasetError(f"{path}: {msg}")


def _gib(n: int | None) -> str:
    return "an unknown amount" if n is None else f"{n / 2**30:.1f} GiB"


# Reading holds each array twice at its peak (the file's and the float32 copy from_arrays makes): measured 2.2x
# the declared bytes for a 0.7 GB file.
READ_MEMORY_FACTOR = 2


def _check_size(path: str | Path, datasets: Mapping[str, h5py.Dataset]) -> int:
    """The bytes the datasets declare (their shape times their type's size), refused before reading when reading
    them needs more than the memory available: a few KB of HDF5 header can declare any size (chunks never
    written read as the fill value), and reading would end in a MemoryError, or on a robot computer in the OOM
    killer."""
    sizes = {name: (obj.size or 0) * obj.dtype.itemsize for name, obj in datasets.items()}
    total, free = sum(sizes.values()), available_memory()
    if free is not None and total * READ_MEMORY_FACTOR > free:
        largest = sorted(sizes, key=sizes.get, reverse=True)[:3]
        said = ", ".join(f"'{k}' {datasets[k].shape} {datasets[k].dtype} = {_gib(sizes[k])}" for k in largest)
        raise _fail(path, f"its datasets declare {_gib(total)} ({said}); reading takes about "
                    f"{READ_MEMORY_FACTOR}x that, more than the {_gib(free)} of memory available: not read (a "
                    "dataset too large for this computer, or a damaged header)")
    return total


def _check_storage(path: str | Path, name: str, obj: h5py.Dataset) -> None:
    """A dataset's numbers must be inside its file. HDF5 can also take them from other files: external raw
    storage (any local file's bytes, e.g. a key in ~/.config) and virtual datasets (another HDF5 file's
    data). Read as data, such bytes would end up in a trained policy's normaliser, saved and published."""
    if obj.external:
        files = sorted({str(e[0]) for e in obj.external})
        raise _fail(path, f"'{name}' keeps its data outside the file (HDF5 external storage in "
                    f"{', '.join(files[:3])}{' ...' if len(files) > 3 else ''}): refused, a dataset's data must be "
                    "inside the file")
    if obj.is_virtual:
        files = sorted({str(s.file_name) for s in obj.virtual_sources()})
        raise _fail(path, f"'{name}' is a virtual dataset (its data mapped from "
                    f"{', '.join(files[:3])}{' ...' if len(files) > 3 else ''}): refused, a dataset's data must be "
                    "inside the file")


# HDF5's own limit of nested soft links (H5L_NUM_LINKS): a path that needs more goes round a loop.
_SOFT_LINK_LIMIT = 16


def _external(link: h5py.ExternalLink) -> str:
    return (f"a link to another file ({link.filename}:{link.path}): not followed, a dataset's data must be inside "
            "the file")


def _in_file(f: h5py.File, name: str) -> h5py.HLObject | str:
    """The object at `name`, following hard and soft links inside the file; else why there is none, worded to
    follow "a soft link to X, ". The path is walked a link at a time, so that a link to another file on the way
    is refused without HDF5 opening that file (any file: a FIFO would hang the reader)."""
    node, hops = f, 0
    parts = [p for p in name.split("/") if p not in ("", ".")]
    while parts:
        part = parts.pop(0)
        link = node.get(part, getlink=True) if isinstance(node, h5py.Group) else None
        if isinstance(link, h5py.SoftLink):
            hops += 1
            if hops > _SOFT_LINK_LIMIT:
                return f"which goes round a loop (more than {_SOFT_LINK_LIMIT} soft links followed)"
            # an absolute target starts at the root; a relative one in the group that holds the link (node)
            node = f if link.path.startswith("/") else node
            parts = [p for p in link.path.split("/") if p not in ("", ".")] + parts
        elif isinstance(link, h5py.HardLink):
            node = node[part]
        elif isinstance(link, h5py.ExternalLink):
            return f"which leads through {_external(link)}"
        else:  # no such name, a path on through a dataset, or a user-defined link kind
            return "which is not in the file"
    return node


def _soft_link_target(f: h5py.File, name: str, link: h5py.SoftLink) -> h5py.Dataset | str:
    """The dataset the soft link `name` leads to inside the file, or what it is instead (for a message)."""
    target = _in_file(f, name)
    if isinstance(target, h5py.Dataset):
        return target
    if isinstance(target, str):
        return f"a soft link to {link.path}, {target}"
    kind = "a group" if isinstance(target, h5py.Group) else "a named type"
    return f"a soft link to {link.path}, {kind}, not a dataset"


def _datasets(f: h5py.File) -> tuple[dict[str, h5py.Dataset], dict[str, str]]:
    """Every dataset of the file by name, and (name -> what it is) for every link that is not read. A dataset is
    reached by hard links, or by a soft link inside the file: another name for one of the file's datasets, so
    every check applies to it as to that dataset. A link to another file is not followed."""
    found: dict[str, h5py.Dataset] = {}
    groups = [""]

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):  # reached by hard links only, each object once
            found[name] = obj
        elif isinstance(obj, h5py.Group):
            groups.append(name)

    f.visititems(visit)
    unread: dict[str, str] = {}
    for g in groups:
        group = f[g] if g else f
        for k in group:
            name, link = f"{g}/{k}" if g else k, group.get(k, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                unread[name] = _external(link)
            elif isinstance(link, h5py.SoftLink):
                target = _soft_link_target(f, name, link)
                if isinstance(target, h5py.Dataset):
                    found[name] = target
                else:
                    unread[name] = target
    return found, unread


def write_hdf5(path: str | Path, ds: OfflineDataset, overwrite: bool = False, compression: str | None = None,
               make_folder: bool = True) -> Path:
    """Write to a temporary file beside `path`, then rename: readers never see half a file. make_folder False: a
    missing folder is an error (FileNotFoundError), not made again."""
    path = Path(path)
    if os.path.lexists(path) and not overwrite:  # a dangling link is there too: not replaced by a file
        raise FileExistsError(f"{path} exists: not replaced (choose another path, or remove it first)")
    validate(ds, source=str(path))

    def array(f: h5py.File, key: str, data: np.ndarray) -> None:
        # A checksum per chunk: a byte flipped later (disk, copy) is an error when read, not a silently
        # different dataset to learn from. HDF5 cannot chunk an empty array, which has nothing to check.
        f.create_dataset(key, data=data, compression=compression, fletcher32=data.size > 0)

    def fill(f: h5py.File) -> None:
        for key in ("observations", "actions", "rewards", "next_observations"):
            array(f, key, np.asarray(getattr(ds, key), np.float32))
        for key in ("terminals", "timeouts"):
            array(f, key, np.asarray(getattr(ds, key), bool))
        for key, arr in ds.infos.items():
            array(f, f"infos/{key}", np.asarray(arr))
        for key, val in ds.metadata.items():
            f[f"metadata/{key}"] = val if not isinstance(val, str) else np.bytes_(val)

    if ds.nbytes > IN_MEMORY_MAX_BYTES:  # a dataset of the command line's: written as it is built
        def write(tmp: str) -> None:
            with h5py.File(tmp, "w") as f:
                fill(f)

        _check_room(path, ds, compression)
        atomic_write(path, write, make_folder, replace=overwrite)
        return path
    # A disk that filled up while HDF5 wrote its chunks: h5py raised, then ended the process with a segmentation
    # fault as the file closed (h5py 3.16, HDF5 2.0; a full tmpfs), and a dataset logger lost every episode it
    # held for a retry. Built in memory, the file goes to disk as bytes, whose failure is a plain OSError.
    # (the name only tells HDF5's open files apart: two of one name cannot be open at once)
    with h5py.File(f"{path.name}-{secrets.token_hex(8)}", "w", driver="core", backing_store=False) as f:
        fill(f)
        f.flush()
        image = f.id.get_file_image()
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(image), make_folder, replace=overwrite)
    return path


def _check_room(path: Path, ds: OfflineDataset, compression: str | None) -> None:
    """A file too large to build in memory, refused before HDF5 writes it onto a disk without room for it: a disk
    that fills up under HDF5 ends the process with a segmentation fault, not an error (see write_hdf5)."""
    if compression is not None:  # its size is not known beforehand
        return
    folder = path.absolute().parent
    while not folder.is_dir() and folder != folder.parent:  # a folder still to be made: the disk it will be on
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the write says what is wrong with the folder
    # as written: float32 and bool (a float64 dataset takes half its memory on disk); HDF5's own structures and
    # checksums take far less than 16 MB
    needed = 4 * sum(np.size(getattr(ds, k)) for k in ("observations", "actions", "rewards", "next_observations"))
    needed += 2 * len(ds.terminals) + sum(np.asarray(a).nbytes for a in ds.infos.values()) + 16 * 2**20
    if free < needed:
        raise OSError(errno.ENOSPC, f"needs about {needed / 1e6:.0f} MB and {free / 1e6:.0f} MB are free: not "
                                    "written (free some space, or write elsewhere)", str(path))


def read_hdf5(path: str | Path, max_episode_steps: int | None = None) -> OfflineDataset:
    """Read a D4RL-layout file (see `from_arrays` for how rows and episode ends are read). A key may be a soft
    link to a dataset of the same file; a link to another file, and data kept outside the file, are refused."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    flat: dict[str, np.ndarray] = {}
    out_of_memory = False  # raised once the MemoryError (and the arrays its frames hold) is gone
    try:
        with h5py.File(path, "r") as f:
            found, unread = _datasets(f)
            for key in (*REQUIRED, "next_observations", "timeouts"):
                if key in unread:  # said for what it is, not as a missing key
                    raise _fail(path, f"'{key}' is {unread[key]}")
            for name, obj in found.items():
                _check_storage(path, name, obj)
            declared = _check_size(path, found)
            try:
                for name, obj in found.items():
                    flat[name] = obj[()]
            except MemoryError:
                out_of_memory = True
    except OSError as exc:
        if "checksum" in str(exc) or "filter returned failure" in str(exc):  # HDF5's words for a failed check
            raise _fail(path, "its data fails the checksum it was written with: the file was damaged after it "
                        f"was written (disk, copy); use another copy ({exc})") from exc
        raise _fail(path, f"not a readable HDF5 file ({exc})") from exc
    if not out_of_memory:
        try:
            return from_arrays(flat, source=str(path), max_episode_steps=max_episode_steps)
        except MemoryError:
            pass
    flat.clear()
    raise _fail(path, f"ran out of memory reading it (its datasets declare {_gib(declared)}, "
                f"{_gib(available_memory())} available now): too large for this computer")


def from_arrays(arrays: Mapping[str, Any], source: str = "dataset",
                max_episode_steps: int | None = None) -> OfflineDataset:
    """A dataset from D4RL-style arrays: an HDF5 file's keys, or the dict `d4rl`'s get_dataset() or
    qlearning_dataset() returns ('infos/...' and 'metadata/...' keys go to infos and metadata).

    - Columns of shape (N, 1) are read as (N,); terminals and timeouts may be bool, integer or float 0/1.
    - Without next_observations (older D4RL files), s' is the following row, and rows without a
      successor in their episode (timeouts, the last row) are dropped, as d4rl.qlearning_dataset
      does; the row before each dropped one ends its episode (a timeout). A terminal row's s' is
      then the next episode's start: IQL never uses it (it is multiplied by 1 - terminal), and
      metadata next_observations_rebuilt tells the dynamics model to leave those rows out.
    - Episode ends the file does not mark are found, not run across (Monte-Carlo returns would add
      the next episode's rewards): with next_observations, wherever s' is not the next row's state
      (exact); without them and without timeouts, after `max_episode_steps` steps, as D4RL does.
      metadata episode_ends_found counts them.
    """
    flat = {k: v if k.startswith("metadata/") else np.asarray(v) for k, v in arrays.items()}
    missing = [k for k in REQUIRED if k not in flat]
    if missing:
        raise _fail(source, f"missing required key(s) {missing}; found {sorted(k for k in flat if '/' not in k)}")
    for key, rank in (("observations", 2), ("actions", 2), ("rewards", 1), ("terminals", 1), ("timeouts", 1),
                      ("next_observations", 2)):
        if key not in flat:
            continue
        arr = flat[key]
        if rank == 1 and arr.ndim == 2 and arr.shape[1] == 1:
            flat[key] = arr = arr[:, 0]  # D4RL's get_dataset squeezes these too
        if arr.ndim != rank:
            raise _fail(source, f"'{key}' must have rank {rank}, got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
            # complex: numpy's cast to float32 drops the imaginary part, with a warning at most
            raise _fail(source, f"'{key}' holds {arr.dtype} values, not real numbers")
    _check_lengths(source, {k: flat[k] for k in (*REQUIRED, "next_observations", "timeouts") if k in flat})
    for key in ("terminals", "timeouts"):
        if key in flat and not np.isin(flat[key], (0, 1)).all():
            raise _fail(source, f"'{key}' must be 0/1 (or bool); it holds {np.unique(flat[key])[:5].tolist()}")
    # Checked here, before rows are dropped, so the row named is the file's row.
    for key in FLOAT_KEYS:
        if key in flat and not (finite := np.isfinite(flat[key])).all():
            raise _fail(source, f"'{key}' has NaN/inf values (first at row {int(np.argwhere(~finite)[0][0])})")
        # float64 (or int64) values past float32's range become inf in the cast below, and were then called NaN/inf
        # (max and min first: no copy of a large array on the path every good file takes)
        arr = flat.get(key)
        if arr is not None and arr.dtype.itemsize > 4 and arr.size and \
                (arr.max() > _FLOAT32_MAX or arr.min() < -_FLOAT32_MAX):
            fits = np.abs(arr) <= _FLOAT32_MAX
            row = int(np.argwhere(~fits)[0][0])
            raise _fail(source, f"'{key}' has values past float32's range (+-3.4e38), in which it is trained (first "
                                f"at row {row}: {np.ravel(arr[row])[np.argmin(np.ravel(fits[row]))]:g})")
    n = len(flat["observations"])
    terminals = flat["terminals"].astype(bool)
    timeouts = flat["timeouts"].astype(bool) if "timeouts" in flat else np.zeros(n, bool)
    obs = flat["observations"].astype(np.float32)
    infos = {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith("infos/")}
    for key, value in infos.items():  # D4RL's infos are one entry per row (qpos, qvel, a recording's step)
        if value.ndim == 0 or len(value) != n:
            raise _fail(source, f"'infos/{key}' must hold one entry per row ({n}), got shape {value.shape}")
    if "step" in infos and not (np.issubdtype(infos["step"].dtype, np.integer) and infos["step"].ndim == 1):
        raise _fail(source, f"'infos/step' must hold one whole number per row (a recording's step numbers), got "
                    f"{infos['step'].dtype} of shape {infos['step'].shape}")
    metadata = {k.split("/", 1)[1]: _meta_value(v) for k, v in flat.items() if k.startswith("metadata/")}
    cols = {
        "observations": obs,
        "actions": flat["actions"].astype(np.float32),
        "rewards": flat["rewards"].astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }
    found = 0
    if "next_observations" in flat:
        nxt = flat["next_observations"].astype(np.float32)
        cols["next_observations"] = nxt
        if nxt.shape[1:] == obs.shape[1:] and n > 1:
            unmarked = np.any(nxt[:-1] != obs[1:], axis=1) & ~(terminals | timeouts)[:-1]
            if "infos/step" in flat and len(flat["infos/step"]) == n:
                # A recording numbers its steps: a break where the numbers go on (steps that never arrived,
                # a row left out for a NaN) is a gap inside the episode, said by missing_steps, not an end.
                step = flat["infos/step"].astype(np.int64)
                unmarked &= ~(step[1:] > step[:-1])
            found = int(unmarked.sum())
            # A file whose s' rarely equals the next row's state (noise added, another normalisation) says
            # nothing about where episodes end: breaks are read as ends only where they are the exception.
            if found <= max(1, (n - 1) // 2):
                cols["timeouts"] = timeouts.copy()
                cols["timeouts"][:-1] |= unmarked
                if found:
                    metadata["episode_ends_rule"] = "where next_observations is not the next row's state"
            else:
                found = 0
                metadata["episode_ends_not_found"] = ("next_observations do not follow observations row to row: "
                                                      "episode ends are only those the file marks")
    else:
        if "timeouts" not in flat and max_episode_steps:
            timeouts = _timeouts_by_length(terminals, max_episode_steps)
            found = int(timeouts.sum())
            metadata["episode_ends_rule"] = (f"after {max_episode_steps} steps without a terminal (the task's limit; "
                                             "D4RL's rule for files without timeouts)")
        nxt = obs.copy()
        nxt[:-1] = obs[1:]
        keep = ~timeouts | terminals
        keep[-1] = bool(terminals[-1])
        if not keep.any():  # said for what it is, not as "dataset is empty"
            raise _fail(source, "has no next_observations and every row ends its episode by a timeout: no row's "
                        "next state can be rebuilt from the row after it")
        # A dropped row ended its episode, so the row before it ends the episode now.
        dropped = np.flatnonzero(~keep)
        new_end = np.zeros(n, bool)
        new_end[dropped[dropped > 0] - 1] = True
        cols["timeouts"] = (timeouts | new_end) & ~terminals
        cols["next_observations"] = nxt
        cols = {k: v[keep] for k, v in cols.items()}
        infos = {k: v[keep] for k, v in infos.items() if len(v) == n}
        metadata["next_observations_rebuilt"] = True
    if found:
        metadata["episode_ends_found"] = found
    ds = OfflineDataset(**cols, infos=infos, metadata=metadata)
    validate(ds, source=source)
    return ds


def _timeouts_by_length(terminals: np.ndarray, max_episode_steps: int) -> np.ndarray:
    """D4RL's rule for files without timeouts: an episode that has not terminated ends at its
    max_episode_steps-th step (d4rl.qlearning_dataset's final_timestep)."""
    timeouts = np.zeros(len(terminals), bool)
    step = 0
    for i, done in enumerate(terminals):
        if done:
            step = 0
        elif step == max_episode_steps - 1:
            timeouts[i] = True
            step = 0
        else:
            step += 1
    return timeouts


def read_metadata(path: str | Path) -> dict[str, object]:
    """A dataset file's metadata/* alone (an episode file's episode_id, say), without its arrays."""
    try:
        with h5py.File(path, "r") as f:
            # links inside the file are followed, links to other files not, as read_hdf5 does
            group = _in_file(f, "metadata")
            if not isinstance(group, h5py.Group):
                return {}
            out = {}
            for k in group:
                v = _in_file(f, f"metadata/{k}")
                if isinstance(v, h5py.Dataset):
                    _check_storage(path, f"metadata/{k}", v)
                    out[k] = _meta_value(v[()])
            return out
    except OSError as exc:
        raise _fail(path, f"not a readable HDF5 file ({exc})") from exc


def _meta_value(v: object) -> object:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.shape == ():
        return v.item()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _check_lengths(source: str | Path, arrays: dict[str, np.ndarray]) -> None:
    lengths = {k: int(np.asarray(v).shape[0]) if np.asarray(v).ndim else -1 for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise _fail(source, "length mismatch between keys: " + ", ".join(f"{k}={n}" for k, n in lengths.items()))


def validate(
    ds: OfflineDataset,
    obs_dim: int | None = None,
    act_dim: int | None = None,
    action_bound: float | None = None,
    source: str = "dataset",
) -> None:
    """Raise DatasetError naming the first problem: empty, lengths, NaN/inf, dims, action range."""
    if len(ds) == 0:
        raise _fail(source, "dataset is empty")
    arrays = {k: getattr(ds, k) for k in ("observations", "actions", "rewards", "terminals", "timeouts",
                                          "next_observations")}
    for key, rank in (("observations", 2), ("actions", 2), ("rewards", 1), ("terminals", 1), ("timeouts", 1),
                      ("next_observations", 2)):
        if np.ndim(arrays[key]) != rank:  # e.g. rewards (N, 1): broadcast against (N,) in the losses, unseen
            raise _fail(source, f"'{key}' must have rank {rank}, got shape {np.shape(arrays[key])} "
                        "(from_arrays reads (N, 1) columns)")
    _check_lengths(source, arrays)
    for key in FLOAT_KEYS:
        arr = np.asarray(arrays[key])
        bad = ~np.isfinite(arr)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise _fail(source, f"'{key}' has NaN/inf values (first at row {row})")
    if ds.next_observations.shape[1:] != ds.observations.shape[1:]:
        raise _fail(source, f"'next_observations' dim {ds.next_observations.shape[1:]} != observations "
                            f"{ds.observations.shape[1:]}")
    for key in ("observations", "actions"):  # e.g. a bag whose messages carried none: nothing to learn from
        if np.shape(arrays[key])[1] == 0:
            raise _fail(source, f"'{key}' have no columns (dim 0)")
    if obs_dim is not None and ds.obs_dim != obs_dim:
        raise _fail(source, f"observation dim mismatch: environment expects {obs_dim}, dataset has {ds.obs_dim}")
    if act_dim is not None and ds.act_dim != act_dim:
        raise _fail(source, f"action dim mismatch: environment expects {act_dim}, dataset has {ds.act_dim}")
    if action_bound is not None:
        worst = float(np.abs(ds.actions).max())
        if worst > action_bound + 1e-3:
            raise _fail(source, f"'actions' exceed the action bound {action_bound} (max |a| = {worst:.3f})")

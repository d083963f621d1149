"""D4RL-layout HDF5 files on disk: round trips, the original layout, validation errors, atomicity."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from uni_o4_ros.data import DatasetError, OfflineDataset, normalized_score, read_hdf5, validate, write_hdf5


def make_ds(n: int = 10, obs: int = 3, act: int = 2, seed: int = 0) -> OfflineDataset:
    rng = np.random.default_rng(seed)
    o = rng.normal(size=(n + 1, obs)).astype(np.float32)
    term = np.zeros(n, bool)
    term[3] = True
    tout = np.zeros(n, bool)
    tout[-1] = True
    return OfflineDataset(
        observations=o[:-1], actions=rng.uniform(-1, 1, (n, act)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32), terminals=term, timeouts=tout, next_observations=o[1:],
        infos={"qpos": rng.normal(size=(n, 4)).astype(np.float32)},
        metadata={"algorithm": "test", "iteration": 3},
    )


def test_round_trip_is_bit_exact(tmp_path):
    ds = make_ds()
    back = read_hdf5(write_hdf5(tmp_path / "d.hdf5", ds))
    for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ds, key))
        assert getattr(back, key).dtype == getattr(ds, key).dtype
    np.testing.assert_array_equal(back.infos["qpos"], ds.infos["qpos"])
    assert back.metadata == {"algorithm": "test", "iteration": 3}


@pytest.mark.parametrize("key", ["observations", "actions", "rewards", "terminals", "infos/qpos"])
def test_a_byte_flipped_after_writing_is_an_error_not_another_dataset(tmp_path, key):
    """Before, a bit flipped on disk or in a copy changed one number of the dataset and training went on
    with it, unseen. Every array is written with a checksum that reading checks."""
    path = write_hdf5(tmp_path / "d.hdf5", make_ds(n=200))
    with h5py.File(path) as f:
        assert all(f[k].fletcher32 for k in ("observations", "actions", "rewards", "next_observations",
                                             "terminals", "timeouts", "infos/qpos"))
        where = f[key].id.get_chunk_info(0).byte_offset
    raw = bytearray(path.read_bytes())
    raw[where + 3] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="fails the checksum it was written with: the file was damaged"):
        read_hdf5(path)


def test_reads_a_file_in_the_original_d4rl_layout(tmp_path):
    path = tmp_path / "hopper-medium-v2.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = np.arange(12, dtype=np.float32).reshape(4, 3)
        f["actions"] = np.zeros((4, 1), np.float32)
        f["rewards"] = np.ones(4, np.float32)
        f["terminals"] = np.array([0, 1, 0, 0], bool)
        f["timeouts"] = np.array([0, 0, 0, 1], bool)
        f["next_observations"] = np.arange(3, 15, dtype=np.float32).reshape(4, 3)
        f["infos/action_log_probs"] = np.zeros(4, np.float32)
        f["metadata/algorithm"] = np.bytes_("SAC")
        f["metadata/policy/fc0/weight"] = np.zeros((2, 2), np.float32)
    ds = read_hdf5(path)
    assert len(ds) == 4 and ds.obs_dim == 3 and ds.act_dim == 1
    assert ds.metadata["algorithm"] == "SAC" and "policy/fc0/weight" in ds.metadata
    np.testing.assert_array_equal(ds.episode_returns(), [2.0, 2.0])


def test_next_observations_are_rebuilt_when_missing(tmp_path):
    """Episode A: rows 0-1 (row 1 terminal); episode B: rows 2-4 (row 4 a timeout)."""
    path = tmp_path / "old.hdf5"
    obs = np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    with h5py.File(path, "w") as f:
        f["observations"] = obs
        f["actions"] = np.zeros((5, 1), np.float32)
        f["rewards"] = np.arange(5, dtype=np.float32)
        f["terminals"] = np.array([0, 1, 0, 0, 0], bool)
        f["timeouts"] = np.array([0, 0, 0, 0, 1], bool)
    ds = read_hdf5(path)
    # The timeout row has no successor and is dropped; row 3 now closes episode B.
    np.testing.assert_array_equal(ds.rewards, [0, 1, 2, 3])
    np.testing.assert_array_equal(ds.next_observations[[0, 2, 3], 0], [1, 3, 4])
    np.testing.assert_array_equal(ds.terminals, [False, True, False, False])
    np.testing.assert_array_equal(ds.timeouts, [False, False, False, True])
    # Every row a timeout (one-step episodes): nothing can be rebuilt, and the error says why
    with h5py.File(path, "r+") as f:
        f["terminals"][...] = False
        f["timeouts"][...] = True
    with pytest.raises(DatasetError, match="has no next_observations and every row ends its episode by a timeout"):
        read_hdf5(path)


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.__delitem__("actions"), "missing required key(s) ['actions']"),
    (lambda f: (f.__delitem__("rewards"), f.create_dataset("rewards", data=np.zeros(7, np.float32))),
     "length mismatch"),
    (lambda f: f["observations"].__setitem__((5, 1), np.nan), "'observations' has NaN/inf values (first at row 5)"),
    (lambda f: f["rewards"].__setitem__(2, np.inf), "'rewards' has NaN/inf"),
    # float64 values float32 cannot hold: they were called NaN/inf, as the cast made them
    (lambda f: (f.__delitem__("rewards"), f.create_dataset("rewards", data=np.r_[np.zeros(3), -1e39, np.zeros(6)])),
     "'rewards' has values past float32's range (+-3.4e38), in which it is trained (first at row 3: -1e+39)"),
    (lambda f: (f.__delitem__("actions"), f.create_dataset("actions", data=np.zeros(10, np.float32))),
     "'actions' must have rank 2"),
])
def test_broken_files_give_one_clear_error(tmp_path, mutate, message):
    path = write_hdf5(tmp_path / "bad.hdf5", make_ds())
    with h5py.File(path, "a") as f:
        mutate(f)
    with pytest.raises(DatasetError) as info:
        read_hdf5(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_dimension_and_action_range_checks():
    ds = make_ds(obs=3, act=2)
    validate(ds, obs_dim=3, act_dim=2, action_bound=1.0)
    with pytest.raises(DatasetError, match="observation dim mismatch: environment expects 11, dataset has 3"):
        validate(ds, obs_dim=11)
    with pytest.raises(DatasetError, match="action dim mismatch"):
        validate(ds, act_dim=3)
    ds.actions[0, 0] = 1.5
    with pytest.raises(DatasetError, match="exceed the action bound"):
        validate(ds, action_bound=1.0)
    empty = OfflineDataset(*(np.zeros((0, 3)) for _ in range(6)))
    with pytest.raises(DatasetError, match="empty"):
        validate(empty)


@pytest.mark.parametrize("content", [b"not an hdf5 file at all\n", b""])
def test_non_hdf5_and_truncated_files(tmp_path, content):
    path = tmp_path / "x.hdf5"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match="not a readable HDF5 file"):
        read_hdf5(path)
    good = write_hdf5(tmp_path / "good.hdf5", make_ds(n=2000))
    raw = good.read_bytes()
    good.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError):
        read_hdf5(good)
    with pytest.raises(DatasetError, match="no such file"):
        read_hdf5(tmp_path / "missing.hdf5")


def test_failed_write_leaves_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    path = write_hdf5(tmp_path / "d.hdf5", make_ds(seed=1))
    before = path.read_bytes()
    calls = {"n": 0}
    real = h5py.Group.create_dataset

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(self, *a, **k)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError, match="disk full"):
        write_hdf5(path, make_ds(seed=2), overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.hdf5"]
    monkeypatch.setattr(h5py.Group, "create_dataset", real)
    with pytest.raises(FileExistsError):
        write_hdf5(path, make_ds())


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_datasets_and_checkpoints_get_the_users_usual_file_mode(tmp_path, umask, mode):
    """Written atomically, yet with the mode any other file of the user gets. Before, the temporary
    file's 0600 stuck: recorded episodes and saved policies were unreadable to the rest of a team
    sharing the folder (another account, a container with another uid)."""
    import os
    import stat

    import torch

    from uni_o4_ros.learning import checkpoint as ckpt

    previous = os.umask(umask)
    try:
        written = [write_hdf5(tmp_path / "d.hdf5", make_ds())]
        ckpt.save(tmp_path / "run", "policy", {"w": torch.ones(2)}, {"version": 1})
        written += sorted((tmp_path / "run").iterdir())
    finally:
        os.umask(previous)
    assert [p.name for p in written] == ["d.hdf5", "policy.json", "policy.safetensors"]
    assert [oct(stat.S_IMODE(p.stat().st_mode)) for p in written] == [oct(mode)] * 3


def test_datasets_and_checkpoints_reach_the_disk_before_their_name_does(tmp_path, monkeypatch):
    """A power cut (a Go1 whose battery dies) must leave the previous file or the new one whole: the
    new file's data is synced before the rename makes it visible, and the folder (holding the rename)
    before the write returns. Before, nothing was synced; on ext4 a renamed new file can then come
    back from a reboot empty. Observed through the real system calls, in the order the kernel got them."""
    import os

    import torch

    from uni_o4_ros.learning import checkpoint as ckpt

    calls: list[tuple[str, ...]] = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        calls.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    def link(src, dst, **kwargs) -> None:  # a file that must not replace one (a dataset) is put in place so
        calls.append(("link", str(src), str(dst)))
        real_link(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)
    write_hdf5(tmp_path / "d.hdf5", make_ds())
    ckpt.save(tmp_path / "run" / "stage", "policy", {"w": torch.ones(2)}, {"version": 1})
    renames = [c for c in calls if c[0] in ("replace", "link")]
    assert [Path(c[2]).name for c in renames] == ["d.hdf5", "policy.safetensors", "policy.json"]
    for how, tmp, final in renames:
        i = calls.index((how, tmp, final))
        assert ("fsync", tmp) in calls[:i], f"{final} renamed before its data was synced"
        assert ("fsync", str(Path(final).parent)) in calls[i + 1:], f"{final}'s folder not synced after the rename"
    # the folders the checkpoint made, each synced into its parent before a file is put in it
    first = calls.index(renames[1])
    assert ("fsync", str(tmp_path)) in calls[:first] and ("fsync", str(tmp_path / "run")) in calls[:first]
    # and the dataset logger's folder, which it makes at start
    from uni_o4_ros.robot.episodes import EpisodeWriter

    calls.clear()
    EpisodeWriter(tmp_path / "robot" / "today")
    assert calls == [("fsync", str(tmp_path)), ("fsync", str(tmp_path / "robot"))]
    assert len(read_hdf5(tmp_path / "d.hdf5")) == len(make_ds())
    assert ckpt.exists(tmp_path / "run" / "stage", "policy")


def test_a_checkpoint_cut_between_its_two_files_is_read_as_the_newer_save(tmp_path, monkeypatch):
    """A checkpoint is two files, each replaced whole, one after the other: a process that ended between the
    renames (a robot's battery) left new weights beside the settings of the save before, and they were read
    together: a policy folder labelled one version behind its weights, a learner resuming version N+1's weights
    with N's counters. The weights' header carries their settings: the pair is read as the newer save. A json
    edited by hand (the save's id kept) is still what is read."""
    import json
    import os

    import torch

    from uni_o4_ros.learning import checkpoint as ckpt

    run = tmp_path / "run"
    ckpt.save(run, "learner", {"w": torch.ones(2)}, {"version": 1, "updates": 10})
    real_replace = os.replace

    def power_cut_before_the_json(src, dst) -> None:
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt  # the process ends here, its json not yet renamed
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", power_cut_before_the_json)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(run, "learner", {"w": torch.full((2,), 2.0)}, {"version": 2, "updates": 20})
    monkeypatch.setattr(os, "replace", real_replace)
    tensors, meta = ckpt.load(run, "learner")
    assert json.loads((run / "learner.json").read_text())["version"] == 1  # the json the cut left
    assert tensors["w"].tolist() == [2.0, 2.0] and meta == {"version": 2, "updates": 20}
    ckpt.save(run, "learner", {"w": torch.full((2,), 3.0)}, {"version": 3, "updates": 30})
    edited = json.loads((run / "learner.json").read_text())
    (run / "learner.json").write_text(json.dumps({**edited, "updates": 31}))
    assert ckpt.load(run, "learner")[1] == {"version": 3, "updates": 31}
    # the same weights and settings saved again are the same bytes: a policy is known by its file's sha256
    for again in ("a", "b"):
        ckpt.save(tmp_path / again, "policy", {"w": torch.full((2,), 3.0)}, {"version": 3})
    assert (tmp_path / "a" / "policy.safetensors").read_bytes() == (tmp_path / "b" / "policy.safetensors").read_bytes()


def test_normalized_score_reference_points_and_names():
    for env, (lo, hi) in {"hopper": (-20.272305, 3234.3), "halfcheetah": (-280.178953, 12135.0),
                          "walker2d": (1.629008, 4592.3)}.items():
        assert normalized_score(env, lo) == pytest.approx(0.0)
        assert normalized_score(env, hi) == pytest.approx(100.0)
    assert normalized_score("Hopper-v5", 3234.3) == pytest.approx(100.0)
    assert normalized_score("hopper-medium-v2", 1627.0) == pytest.approx(50.62, abs=0.01)
    with pytest.raises(KeyError, match="known"):
        normalized_score("antmaze-umaze-v2", 1.0)


def test_discounted_returns_stop_at_terminals_and_timeouts():
    ds = make_ds(n=7)
    ds.rewards = np.array([1, 2, 3, 4, 5, 6, 7], np.float32)
    ds.timeouts[:] = False
    ds.timeouts[5] = True  # episodes: 0-3 (terminal), 4-5 (timeout), 6 (unfinished)
    g = 0.5
    expected = [1 + g * 2 + g**2 * 3 + g**3 * 4, 2 + g * 3 + g**2 * 4, 3 + g * 4, 4, 5 + g * 6, 6, 7]
    np.testing.assert_allclose(ds.discounted_returns(g), expected, rtol=1e-6)


def test_episode_returns_and_concatenation():
    ds = make_ds()
    np.testing.assert_allclose(ds.episode_returns(), [ds.rewards[:4].sum(), ds.rewards[4:].sum()], rtol=1e-6)
    both = OfflineDataset.concatenate([ds, ds])
    assert len(both) == 20 and len(both.episode_returns()) == 4 and both.infos["qpos"].shape == (20, 4)


# --- D4RL files as researchers have them -----------------------------------------------------------------

def _hopper_rollouts(episodes: int = 12, limit: int = 25, seed: int = 0) -> dict[str, np.ndarray]:
    """Real Hopper-v5 episodes with noisy actions, truncated at `limit` steps (many are, some fall first),
    in D4RL v2's layout; plus each row's true episode index."""
    import gymnasium as gym

    env = gym.make("Hopper-v5", max_episode_steps=limit)
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts",
                                             "next_observations", "episode")}
    for e in range(episodes):
        o, _ = env.reset(seed=seed * 100 + e)
        while True:
            a = np.clip(rng.normal(0, 0.3, 3), -1, 1).astype(np.float32)
            o2, r, term, trunc, _ = env.step(a)
            for k, v in (("observations", o), ("actions", a), ("rewards", r), ("terminals", term),
                         ("timeouts", trunc and not term), ("next_observations", o2), ("episode", e)):
                cols[k].append(v)
            o = o2
            if term or trunc:
                break
    env.close()
    out = {k: np.asarray(v) for k, v in cols.items()}
    for k in ("observations", "actions", "rewards", "next_observations"):
        out[k] = out[k].astype(np.float32)
    return out


def _true_returns(data: dict, gamma: float = 0.99) -> np.ndarray:
    g, out = 0.0, np.zeros(len(data["rewards"]))
    for i in range(len(out) - 1, -1, -1):
        if i == len(out) - 1 or data["episode"][i + 1] != data["episode"][i]:
            g = 0.0
        g = data["rewards"][i] + gamma * g
        out[i] = g
    return out


def test_episode_ends_a_file_does_not_mark_are_found_not_run_across():
    """Seen: a file without `timeouts` (D4RL v0 style) was read with every truncated episode merged into the
    next (871 episodes read as 350 in the audit), so Monte-Carlo returns, the value warm-up's targets, added
    the next episode's rewards; a concatenated file's unmarked end did the same. Nothing was said."""
    from uni_o4_ros.data import from_arrays

    data = _hopper_rollouts()
    truncated = int(data["timeouts"].sum())
    assert truncated >= 6 and data["terminals"].sum() >= 1  # both kinds of end occur in these rollouts
    arrays = {k: data[k] for k in ("observations", "actions", "rewards", "terminals", "next_observations")}
    # with next_observations but no timeouts: every end found exactly where s' is not the next row's state
    ds = from_arrays(arrays)
    np.testing.assert_array_equal(ds.timeouts[:-1], data["timeouts"][:-1])
    assert ds.metadata["episode_ends_found"] == truncated - int(data["timeouts"][-1])
    np.testing.assert_allclose(ds.discounted_returns(0.99), _true_returns(data), rtol=1e-4)
    # neither next_observations nor timeouts: D4RL's rule, the task's step limit, finds the same ends
    old = {k: v for k, v in arrays.items() if k != "next_observations"}
    ds = from_arrays(old, max_episode_steps=25)
    assert ds.metadata["episode_ends_found"] == truncated and ds.metadata["next_observations_rebuilt"]
    kept = ~data["timeouts"].astype(bool)  # as qlearning_dataset: the truncated step has no successor row
    kept[-1] = bool(data["terminals"][-1])
    np.testing.assert_array_equal(ds.observations, data["observations"][kept])
    same_episode = data["episode"][kept][:-1] == data["episode"][kept][1:]
    rebuilt = ds.next_observations[:-1][same_episode & ~ds.terminals[:-1]]
    np.testing.assert_array_equal(rebuilt, data["next_observations"][kept][:-1][same_episode & ~ds.terminals[:-1]])
    assert len(ds.episode_slices()) == data["episode"].max() + 1  # no episode merged into the next
    # a file that marks its ends but lost one (two files concatenated): the unmarked end is found too
    cut = int(np.flatnonzero(data["timeouts"])[0])
    marked = dict(arrays, timeouts=data["timeouts"].copy())
    marked["timeouts"][cut] = False
    ds = from_arrays(marked)
    assert ds.timeouts[cut] and ds.metadata["episode_ends_found"] == 1
    # s' that never equals the next row's state (noise added) says nothing about ends: none is invented
    noisy = dict(marked, next_observations=arrays["next_observations"] + np.float32(1e-3))
    ds = from_arrays(noisy)
    assert not ds.timeouts[cut] and "episode_ends_found" not in ds.metadata and ds.metadata["episode_ends_not_found"]


def test_columns_as_other_writers_store_them_are_read_and_strange_ones_refused(tmp_path):
    """(N, 1) terminals and float 0/1 flags (many D4RL forks) were refused or crashed in episode_slices."""
    from uni_o4_ros.data import from_arrays

    data = _hopper_rollouts(episodes=3)
    base = {k: data[k] for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
    ref = from_arrays(base)
    odd = dict(base, rewards=base["rewards"][:, None], terminals=base["terminals"].astype(np.float32)[:, None],
               timeouts=base["timeouts"].astype(np.uint8), observations=base["observations"].astype(np.float64))
    ds = from_arrays(odd)
    for key in ("observations", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(ds, key), getattr(ref, key))
    assert ds.terminals.dtype == bool and len(ds.episode_slices()) == 3
    with pytest.raises(DatasetError, match=r"'terminals' must be 0/1 \(or bool\)"):
        from_arrays(dict(base, terminals=base["terminals"] * 0.5 + 0.25))
    with pytest.raises(DatasetError, match=re.escape("'terminals' holds |S5 values, not real numbers")):
        from_arrays(dict(base, terminals=np.array([b"False"] * len(base["rewards"]))))
    with pytest.raises(DatasetError, match=re.escape("'observations' holds complex64 values, not real numbers")):
        from_arrays(dict(base, observations=base["observations"] + 1j))  # the imaginary part was dropped unsaid
    # infos are one entry per row: a scalar (or h5py.Empty) ended in len()'s TypeError, step numbers of text in
    # int()'s "invalid literal", step numbers of shape (N, 2) in numpy's broadcast error
    n = len(base["rewards"])
    for step, said in ((np.int64(3), "'infos/step' must hold one entry per row"),
                       (np.arange(n - 1), f"'infos/step' must hold one entry per row ({n}), got shape ({n - 1},)"),
                       (np.array([b"x"] * n), "'infos/step' must hold one whole number per row"),
                       (np.zeros((n, 2), np.int64), "'infos/step' must hold one whole number per row")):
        with pytest.raises(DatasetError, match=re.escape(said)):
            from_arrays(dict(base, **{"infos/step": step}))
    # a NaN is named at the file's row, also where rows are dropped (no next_observations)
    path = tmp_path / "v0.hdf5"
    with h5py.File(path, "w") as f:
        for k in ("observations", "actions", "rewards", "terminals", "timeouts"):
            f[k] = base[k]
        row = int(np.flatnonzero(base["timeouts"])[0]) + 3  # after a dropped timeout row
        f["observations"][row, 2] = np.inf
    with pytest.raises(DatasetError, match=rf"'observations' has NaN/inf values \(first at row {row}\)"):
        read_hdf5(path)


def test_a_dataset_built_in_python_is_checked_before_training(tmp_path):
    """Seen through the Python API: rewards of shape (N, 1) passed and crashed inside IQL with a tensor size
    error; a NaN reward ran until 'training diverged ... try a lower learning rate'."""
    from uni_o4_ros.data import from_arrays
    from uni_o4_ros.learning import OfflineTrainer, budget_overrides, load_config

    data = _hopper_rollouts(episodes=3)
    ds = from_arrays({k: data[k] for k in ("observations", "actions", "rewards", "terminals", "next_observations")})
    cfg = load_config(None, ["env=Hopper-v5"], base=budget_overrides("tiny"))
    ds.rewards = ds.rewards[:, None]
    with pytest.raises(DatasetError, match=r"'rewards' must have rank 1, got shape \(\d+, 1\)"):
        OfflineTrainer(cfg, ds, tmp_path / "a", progress=False)
    ds.rewards = ds.rewards[:, 0].copy()
    with pytest.raises(DatasetError, match=re.escape("'observations' have no columns (dim 0)")):
        from_arrays({k: getattr(ds, k)[:, :0] if k.endswith("observations") else getattr(ds, k)
                     for k in ("observations", "actions", "rewards", "terminals", "next_observations")})
    ds.rewards[7] = np.nan
    with pytest.raises(DatasetError, match=r"'rewards' has NaN/inf values \(first at row 7\)"):
        OfflineTrainer(cfg, ds, tmp_path / "b", progress=False)
    # too few rows for the dynamics model's holdout: said now, not "training diverged" a stage later
    ds.rewards[7] = 0.0
    few = from_arrays({k: getattr(ds, k)[:4] for k in ("observations", "actions", "rewards", "terminals",
                                                        "next_observations")})
    with pytest.raises(ValueError, match=r"4 transition\(s\) are too few: .* it needs at least 5"):
        OfflineTrainer(cfg, few, tmp_path / "c", progress=False)
    OfflineTrainer(cfg, from_arrays({k: getattr(ds, k)[:5] for k in ("observations", "actions", "rewards",
                                                                      "terminals", "next_observations")}),
                   tmp_path / "d", progress=False)  # 5 are enough: one held out, four fit
    # values float32 holds but whose spread it cannot: every state was normalised to 0 or NaN, with no error
    ds.observations[3, 2] = 3e19
    with pytest.raises(ValueError, match=r"mean or spread overflows float32 \(column 2, values up to 3e\+19\)"):
        OfflineTrainer(cfg, ds, tmp_path / "e", progress=False)
    assert not any((tmp_path / x).exists() for x in "abce")


def test_the_dynamics_model_is_not_fit_on_the_next_episodes_start(tmp_path):
    """Without next_observations a terminal row's s' is rebuilt as the next row: the next episode's reset
    state. IQL never uses it; the AM-Q model learned it as where a fall leads. It is left out now, and the
    stage records how many transitions it was fit on."""
    from uni_o4_ros.data import from_arrays
    from uni_o4_ros.learning import OfflineTrainer, budget_overrides, load_config
    from uni_o4_ros.learning import checkpoint as ckpt

    data = _hopper_rollouts(episodes=12)
    cfg = load_config(None, ["env=Hopper-v5", "dynamics.max_epochs=1"], base=budget_overrides("tiny"))
    keys = ("observations", "actions", "rewards", "terminals", "timeouts")
    for name, arrays in (("v2", {k: data[k] for k in (*keys, "next_observations")}),
                         ("v0", {k: data[k] for k in keys})):
        ds = from_arrays(arrays)
        trainer = OfflineTrainer(cfg, ds, tmp_path / name, progress=False)
        _, key = trainer.train_dynamics()
        _, meta = ckpt.load(tmp_path / name / "stages" / f"dynamics-{key}", "stage")
        fit_on = len(ds) - (int(ds.terminals.sum()) if name == "v0" else 0)
        assert ds.terminals.sum() >= 1 and meta["transitions"] == fit_on, name


@pytest.mark.parametrize("how", ["external storage", "virtual dataset", "external link"])
def test_a_dataset_whose_data_is_in_another_file_is_refused_not_read(tmp_path, how):
    """Seen: a 90 KB .hdf5 whose 'observations' were HDF5 external storage pointing at the robot's
    policy-update key (~/.config/uni_o4_ros/policy_update.key) was read as data; the key's bytes became the
    normaliser's mean, saved with the trained policy and published with it. Data from outside the file
    (external storage, a virtual dataset mapping another file) is refused, naming the key; a link to
    another file is not followed, and said to be one."""
    n, obs = 8, 16
    secret = tmp_path / "policy_update.key"
    secret.write_bytes(bytes(range(65, 65 + obs)))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["observations"] = np.ones((n, obs), np.float32)
    path = tmp_path / "evil.hdf5"
    with h5py.File(path, "w") as f:
        if how == "external storage":
            f.create_dataset("observations", shape=(n, obs), dtype="u1", external=[(str(secret), 0, obs)] * n)
        elif how == "virtual dataset":
            layout = h5py.VirtualLayout(shape=(n, obs), dtype="f4")
            layout[:] = h5py.VirtualSource(str(other), "observations", shape=(n, obs))
            f.create_virtual_dataset("observations", layout)
        else:
            f["observations"] = h5py.ExternalLink(str(other), "/observations")
        f["actions"] = np.zeros((n, 2), np.float32)
        f["rewards"] = np.zeros(n, np.float32)
        f["terminals"] = np.zeros(n, bool)
        f["timeouts"] = np.r_[np.zeros(n - 1, bool), True]
        f["next_observations"] = np.zeros((n, obs), np.float32)
    with pytest.raises(DatasetError) as info:
        read_hdf5(path)
    said = str(info.value)
    assert said.startswith(f"{path}: ")
    if how == "external link":
        assert f"'observations' is a link to another file ({other}:/observations): not followed" in said
    else:
        assert f"'observations' {'keeps its data outside the file' if how == 'external storage' else 'is a virtual'}" \
            in said and "a dataset's data must be inside the file" in said
        assert str(secret if how == "external storage" else other) in said


def test_an_episode_files_metadata_is_read_from_the_file_alone(tmp_path):
    """read_metadata (how a bringup matches episode files to episodes) followed links to other files and read
    external storage: it now reads only what is inside the file."""
    from uni_o4_ros.data import read_metadata

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["episode_id"] = 7
    secret = tmp_path / "secret"
    secret.write_bytes(b"\x2a")
    path = tmp_path / "episode_000001.hdf5"
    with h5py.File(path, "w") as f:
        f["metadata/episode_id"] = 1
        f["metadata/linked"] = h5py.ExternalLink(str(other), "/episode_id")
    assert read_metadata(path) == {"episode_id": 1}
    with h5py.File(path, "a") as f:
        f["metadata"].create_dataset("external", shape=(1,), dtype="u1", external=[(str(secret), 0, 1)])
    with pytest.raises(DatasetError, match="'metadata/external' keeps its data outside the file"):
        read_metadata(path)


def test_a_key_that_is_a_soft_link_inside_the_file_is_read_as_its_target(tmp_path):
    """A D4RL file whose 'rewards' was an HDF5 soft link (another name for a dataset of the same file) was
    refused as missing 'rewards'. A soft link inside the file is read as its target, absolute or relative, in a
    chain, in metadata too; every check applies to what it leads to. A link to another file stays refused."""
    from uni_o4_ros.data import read_metadata

    ds = make_ds()
    path = write_hdf5(tmp_path / "linked.hdf5", ds)
    with h5py.File(path, "a") as f:
        f.move("rewards", "data/rewards_target")
        f["data/rewards"] = h5py.SoftLink("rewards_target")  # relative to its group
        f["rewards"] = h5py.SoftLink("/data/rewards")  # a chain of two
        f.move("observations", "data/observations")
        f["observations"] = h5py.SoftLink("/data/observations")
        f["metadata/alias"] = h5py.SoftLink("/metadata/iteration")
    got = read_hdf5(path)
    np.testing.assert_array_equal(got.rewards, ds.rewards)
    np.testing.assert_array_equal(got.observations, ds.observations)
    assert read_metadata(path) == {"algorithm": "test", "iteration": 3, "alias": 3}


@pytest.mark.parametrize("how, said", [
    ("dangling", "'rewards' is a soft link to /nowhere, which is not in the file"),
    ("loop", "'rewards' is a soft link to /rewards, which goes round a loop (more than 16 soft links followed)"),
    ("to a group", "'rewards' is a soft link to /data, a group, not a dataset"),
    ("through another file", "'rewards' is a soft link to /ext/rewards, which leads through a link to another "
                             "file ({other}:/): not followed, a dataset's data must be inside the file"),
    ("to external storage", "'data/secret' keeps its data outside the file"),
])
def test_a_soft_link_to_nothing_or_out_of_the_file_is_refused_saying_so(tmp_path, how, said):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["rewards"] = np.full(10, 7.0, np.float32)
    secret = tmp_path / "secret"
    secret.write_bytes(bytes(range(10)))
    path = write_hdf5(tmp_path / "linked.hdf5", make_ds())
    with h5py.File(path, "a") as f:
        del f["rewards"]
        f["data/x"] = np.zeros(10, np.float32)
        target = {"dangling": "/nowhere", "loop": "/rewards", "to a group": "/data", "through another file":
                  "/ext/rewards", "to external storage": "/data/secret"}[how]
        f["rewards"] = h5py.SoftLink(target)
        f["ext"] = h5py.ExternalLink(str(other), "/")
        if how == "to external storage":  # a dataset of this file whose bytes are another file's
            f["data"].create_dataset("secret", shape=(10,), dtype="u1", external=[(str(secret), 0, 10)])
    with pytest.raises(DatasetError) as info:
        read_hdf5(path)
    assert str(info.value).startswith(f"{path}: ") and said.format(other=other) in str(info.value), str(info.value)


def test_a_metadata_group_in_another_file_is_not_read(tmp_path):
    """read_metadata opened the file's 'metadata' with the links HDF5 follows: a 'metadata' that was a link to
    another file gave that file's episode_id."""
    from uni_o4_ros.data import read_metadata

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["metadata/episode_id"] = 7
    path = tmp_path / "episode_000001.hdf5"
    with h5py.File(path, "w") as f:
        f["metadata"] = h5py.ExternalLink(str(other), "/metadata")
    assert read_metadata(path) == {}


@contextmanager
def address_space_limit(extra: int):
    """This process may allocate only `extra` more bytes (RLIMIT_AS, as `ulimit -v` sets it): an allocation
    beyond is a MemoryError at once, never pages the OOM killer would have to take back."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = int(re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def declaring(path: Path, rows: int, obs: int = 290) -> Path:
    """A few KB of HDF5 declaring `rows` rows (chunked and compressed, never written: they read as zeros)."""
    with h5py.File(path, "w") as f:
        for key, shape in (("observations", (rows, obs)), ("next_observations", (rows, obs)), ("actions", (rows, 12)),
                           ("rewards", (rows,)), ("terminals", (rows,))):
            f.create_dataset(key, shape=shape, dtype="f4", chunks=True, compression="gzip")
    assert path.stat().st_size < 10_000
    return path


def test_a_small_file_declaring_more_than_the_memory_is_refused_before_reading(tmp_path):
    """Seen: a 2.6 KB file declaring 8 GiB of observations ended the read in a raw MemoryError (on a robot
    computer, in the OOM killer). The declared sizes are now compared with the memory available first."""
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    rows = 2 * ram // (290 * 4)
    path = declaring(tmp_path / "huge.hdf5", rows)
    with address_space_limit(2**30), pytest.raises(DatasetError) as info:
        read_hdf5(path)
    said = str(info.value)
    assert said.startswith(f"{path}: its datasets declare ")
    assert f"'observations' ({rows}, 290) float32 = {rows * 290 * 4 / 2**30:.1f} GiB" in said
    assert "of memory available: not read" in said


def _cgroups(tmp_path: Path, v2: bool, levels: dict[str, tuple[str, int, int]]) -> tuple[Path, Path]:
    """A stand-in of /proc/self/cgroup and /sys/fs/cgroup in the kernel's formats: `levels` maps each cgroup
    from the process's own up to its ancestors to (limit, usage, inactive file bytes)."""
    root = tmp_path / "sys_fs_cgroup"
    own = max(levels, key=len)
    for path, (limit, usage, inactive) in levels.items():
        d = root / ("" if v2 else "memory") / path.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        files = ("memory.max", "memory.current", "inactive_file") if v2 else \
            ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        (d / files[0]).write_text(f"{limit}\n")
        (d / files[1]).write_text(f"{usage}\n")
        (d / "memory.stat").write_text(f"anon 1000\n{files[2]} {inactive}\nfile_dirty 0\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(f"0::{own}\n" if v2 else f"12:pids:/\n4:memory:{own}\n1:cpu,cpuacct:/\n0::/\n")
    return proc, root


def test_the_memory_a_cgroup_leaves_is_the_tightest_limit_less_what_cannot_be_dropped(tmp_path):
    from uni_o4_ros.data.memory import cgroup_available

    mib = 2**20
    for v2, unlimited in ((True, "max"), (False, "9223372036854771712")):
        base = tmp_path / ("v2" if v2 else "v1")
        # A container limited to 1 GiB holding 512 MiB, 100 MiB of it page cache the kernel can drop.
        proc, root = _cgroups(base / "a", v2, {"/docker/abc": (str(1024 * mib), 512 * mib, 100 * mib),
                                               "/docker": (unlimited, 4000 * mib, 0)})
        assert cgroup_available(proc, root) == (1024 - 412) * mib
        # The parent's limit is tighter (a systemd slice around several containers).
        proc, root = _cgroups(base / "b", v2, {"/slice/app": (str(4096 * mib), 100 * mib, 0),
                                               "/slice": (str(1024 * mib), 900 * mib, 0)})
        assert cgroup_available(proc, root) == 124 * mib
        proc, root = _cgroups(base / "c", v2, {"/user": (unlimited, 100 * mib, 0)})
        assert cgroup_available(proc, root) is None  # no limit: the computer's free memory decides
    assert cgroup_available(tmp_path / "no_such_file", tmp_path) is None  # no cgroups (not Linux)


def test_a_file_too_large_for_the_containers_memory_limit_is_refused_before_reading(tmp_path, monkeypatch):
    """Seen here in a real cgroup limited to 600 MB (the computer had 24 GB free): a file declaring 1 GiB was
    read, and the kernel's OOM killer ended the process (exit 137, no message). The cgroup's room is now the
    memory available when it is tighter than the computer's."""
    import uni_o4_ros.data.memory as memory

    proc, root = _cgroups(tmp_path, True, {"/docker/abc": (str(600 * 2**20), 10 * 2**20, 0)})
    monkeypatch.setattr(memory, "PROC_CGROUP", proc)
    monkeypatch.setattr(memory, "CGROUP_ROOT", root)
    path = declaring(tmp_path / "big.hdf5", 2**29 // (290 * 4))  # 0.5 GiB each of observations, next_observations
    with pytest.raises(DatasetError) as info:
        read_hdf5(path)
    assert str(info.value).startswith(f"{path}: its datasets declare 1.0 GiB")
    assert "more than the 0.6 GiB of memory available: not read" in str(info.value)


def test_running_out_of_memory_while_reading_is_a_dataset_error(tmp_path, monkeypatch):
    """Memory the check cannot see (a `ulimit -v`) runs out while reading: one line naming the file, not a
    MemoryError traceback."""
    import uni_o4_ros.data.d4rl as d4rl

    monkeypatch.setattr(d4rl, "available_memory", lambda: 2**40, raising=False)
    path = declaring(tmp_path / "big.hdf5", 2**30 // (290 * 4))  # 1 GiB each of observations and next_observations
    with address_space_limit(512 * 2**20), pytest.raises(DatasetError) as info:
        read_hdf5(path)
    assert str(info.value).startswith(f"{path}: ran out of memory reading it (its datasets declare 2.0 GiB")

"""Scalar logs a person can read (CSV, long format) and PNG learning curves."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

from .jsonlines import ends_torn


class ScalarLog:
    """Appends `stage,step,name,value` rows and flushes each one, so a crash keeps every row. A stage resumed
    after a crash logs the steps since its last checkpoint again; `read_log` keeps the later rows."""

    FIELDS = ("stage", "step", "name", "value")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        torn = ends_torn(self.path)  # a process killed mid-row (or a full disk)
        self._fh = self.path.open("a", newline="")
        self._w = csv.writer(self._fh)
        if new:
            self._w.writerow(self.FIELDS)
        elif torn:
            self._fh.write("\n")  # end the torn row on its own line: the rows appended now stay whole
        self._fh.flush()

    def log(self, stage: str, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            self._w.writerow((stage, int(step), k, f"{float(v):.6g}"))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_log(path: str | Path) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """Series per (stage, name). Rows that do not parse (a row torn by a killed process) are
    skipped, so one bad line never costs the plot of a finished run; a file that is not a
    scalars log at all is a clear error."""
    series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    with Path(path).open(newline="", errors="replace") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return series  # created, nothing logged yet
        if tuple(reader.fieldnames) != ScalarLog.FIELDS:
            raise ValueError(f"{path}: not a scalars log (its header is {reader.fieldnames}, expected "
                             f"{','.join(ScalarLog.FIELDS)})")
        for row in reader:
            try:
                point = (int(row["step"]), float(row["value"]))
            except (TypeError, ValueError):
                continue
            if not 0 <= point[0] < 2**63:  # a hand-edited step: matplotlib's OverflowError past float's range
                continue
            points = series[(row["stage"], row["name"])]
            # A stage resumed from a checkpoint (after a crash: Ctrl-C checkpoints where it stops) logs its
            # steps since that checkpoint again: the rerun's rows replace the first run's from there on.
            while points and points[-1][0] >= point[0]:
                points.pop()
            points.append(point)
    return series


Series = dict[tuple[str, str], list[tuple[int, float]]]


def timeline_series(path: str | Path) -> Series:
    """The online learner's timeline.jsonl (one row per published version) as series over the version:
    its batch's return and its PPO statistics, for `uni-o4 plot` of a learner's run folder."""
    from .jsonlines import read_jsonl

    series: Series = defaultdict(list)
    # Rows whose version is no version number (a hand edit, a damaged line: null, 1e400, a list) are left out:
    # they ended the plot in int()'s TypeError or OverflowError, or in "error: version".
    rows = [r for r in read_jsonl(path) if _version(r) is not None]
    for row in rows:
        for name, value in row.items():
            if name not in ("version", "made_from", "time", "batch_size") and isinstance(value, int | float):
                series[("learner", name)].append((_version(row), float(value)))
    refused_file = Path(path).with_name("refused.jsonl")  # written by the learner at the policy node's first refusal
    if refused_file.is_file():
        refused = {_version(r) for r in read_jsonl(refused_file)} - {None}
        series[("learner", "refused by the policy node (1: yes)")] = [
            (_version(r), float(_version(r) in refused)) for r in rows]
    return series


def _version(row: dict) -> int | None:
    """A timeline row's policy version: a whole number >= 0, else None."""
    v = row.get("version")
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if isinstance(v, float):  # an int of 400 digits overflows isfinite: floats only
        if not math.isfinite(v) or v != int(v):
            return None
        v = int(v)
    return v if 0 <= v < 2**63 else None


def plot_log(path: str | Path, out_png: str | Path, title: str = "", max_panels: int = 12) -> Path:
    """One panel per (stage, metric) of a scalars log; long series are smoothed for readability."""
    return plot_series(read_log(path), out_png, title, max_panels, xlabel="step")


def plot_series(series: Series, out_png: str | Path, title: str = "", max_panels: int = 12, xlabel: str = "") -> Path:
    """One panel per (stage, metric) over `xlabel`; long series are smoothed for readability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in series if len(series[k]) > 1][:max_panels] or list(series)[:max_panels]
    cols = 3
    rows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = sorted(series[key])
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, lw=0.8, alpha=0.5 if len(ys) > 50 else 1.0)
        if len(ys) > 50:
            w = max(1, len(ys) // 50)
            sm = [sum(ys[max(0, i - w) : i + 1]) / len(ys[max(0, i - w) : i + 1]) for i in range(len(ys))]
            ax.plot(xs, sm, lw=1.5)
        ax.set_title(f"{key[0]}: {key[1]}", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out

"""Benchmark results as JSON lines, one per finished unit of work, so an interrupted benchmark
resumes: `finished` names the units already in the file, `append` adds (and prints) one."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from pathlib import Path


def finished(path: Path, key: Callable[[dict], Hashable]) -> set:
    if not path.exists():
        return set()
    return {key(json.loads(line)) for line in path.read_text().splitlines() if line.strip()}


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)

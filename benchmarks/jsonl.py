"""Benchmark results as JSON lines, one per finished unit of work, so an interrupted benchmark
resumes: `finished` names the units already in the file, `append` adds (and prints) one. A row
torn by a killed benchmark is skipped, and that unit simply runs again."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from pathlib import Path

from uni_o4_ros.learning.jsonlines import append_jsonl, read_jsonl


def finished(path: Path, key: Callable[[dict], Hashable]) -> set:
    if not path.exists():
        return set()
    return {key(row) for row in read_jsonl(path)}


def append(path: Path, row: dict) -> None:
    append_jsonl(path, row)
    print(json.dumps(row), flush=True)

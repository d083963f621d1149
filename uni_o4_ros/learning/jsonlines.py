"""Append-only JSON-lines logs that survive the writer being killed mid-line.

A process killed while appending can leave its last line torn. Writers start their next line on
a fresh one, and readers skip lines that do not parse, so a crash costs at most the row it was
writing and never the rows after it, nor the reader of a finished run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start_fresh = ends_torn(path)
    with path.open("a") as fh:
        fh.write(("\n" if start_fresh else "") + json.dumps(row) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn row (or a blank line)
        if isinstance(row, dict):
            rows.append(row)
    return rows


def ends_torn(path: str | Path) -> bool:
    """True when an append-only text log ends in an unterminated line (its writer was killed)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) != b"\n"

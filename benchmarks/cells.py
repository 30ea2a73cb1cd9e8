"""Resumable benchmark tables: cells kept in one JSON file, written atomically after each cell."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from datarights.files import write_json


def load_cells(out: str | Path) -> dict:
    """The results file's contents ({"cells": {...}, "machine": ...}), empty if it does not exist yet."""
    out = Path(out)
    results = json.loads(out.read_text()) if out.exists() else {"cells": {}}
    results["machine"] = f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}"
    return results


def save_cells(out: str | Path, results: dict) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, results)


def pending(results: dict, rows: list[str], concepts: list[tuple[str, str, str]], wanted: set[str]):
    """(row, kind, target, anchor, key) of every wanted cell not in the results yet."""
    for row in rows:
        for kind, target, anchor in concepts:
            key = f"{row}|{target}"
            if target in wanted and key not in results["cells"]:
                yield row, kind, target, anchor, key

"""An output file of JSON lines that a run appends to and a later run resumes from (run-batch,
annotate): what is in it already, with a last line cut short by a killed run taken out first, so that
appending starts on a fresh line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def written_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects already in `path` (none if it does not exist); a cut-short last line is removed."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        path.write_bytes(raw)
    items = []
    for text in raw.decode().splitlines():
        try:
            item = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            items.append(item)
    return items

"""`<run_dir>/metrics.json`: one file, one section per stage ("tree", "diffusion", ...)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def update_metrics(run_dir: str | Path, keys: list[str], value: Any) -> Path:
    """Read-modify-write: metrics[keys[0]]...[keys[-1]] = value; other entries are kept.

    The file is replaced atomically; a file that is not valid JSON is left alone (ValueError).
    """
    if not keys:
        raise ValueError("update_metrics: keys must name at least one level")
    path = Path(run_dir) / "metrics.json"
    metrics: dict[str, Any] = {}
    if path.exists():
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); fix or remove it") from e
    node = metrics
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(path)
    return path

"""Checkpoint directories: weights, tree topology, resolved config and metadata.

A checkpoint is written under a temporary name and renamed into place when complete, so a
directory that exists under its final name is always complete; an interrupted write leaves
only a `.tmp-*` directory that loaders ignore.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .tree import Tree

WEIGHTS = "model.pt"
TREE = "tree.json"
CONFIG = "config.json"
META = "meta.json"


@dataclass
class Checkpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]
    tree: Tree
    config: dict[str, Any]
    meta: dict[str, Any]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def move_into_place(tmp: Path, path: Path) -> None:
    """Rename the complete directory `tmp` to `path`; an existing `path` is moved aside first and
    removed only once the new one is in place, so a failure never leaves neither."""
    if path.exists():
        old = path.with_name(f".old-{path.name}-{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old)
    else:
        tmp.rename(path)


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], tree: Tree, config: dict[str, Any],
                    meta: dict[str, Any], extra_files: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write a checkpoint directory atomically; refuses to replace an existing one unless overwrite."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"checkpoint already exists: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        torch.save(state_dict, tmp / WEIGHTS)
        tree.save(tmp / TREE)
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        for name, obj in (extra_files or {}).items():
            torch.save(obj, tmp / name)
        move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {path}")
    missing = [f for f in (WEIGHTS, TREE, CONFIG, META) if not (path / f).exists()]
    if missing:
        raise FileNotFoundError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    try:
        state = torch.load(path / WEIGHTS, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"cannot read weights {path / WEIGHTS}: {e}") from e
    return Checkpoint(path=path, state_dict=state, tree=Tree.load(path / TREE),
                      config=json.loads((path / CONFIG).read_text()), meta=json.loads((path / META).read_text()))

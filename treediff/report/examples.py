"""Per-leaf images kept for the report page, so that it renders from the run directory alone
(after an scp or rsync, without the data set, a model or a GPU).

One .npz per producer: `tree/leaf_examples.npz` (the grow job: real test images routed to each
leaf, and the TreeVAE's own prior samples of it) and `eval/leaf_examples.npz` (the evaluation:
each checkpoint's high-probability diffusion samples per leaf and the TreeVAE decodings of the
same draws). Keys are "<group>/<leaf>", values uint8 (k, 3, H, W).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

TREE_EXAMPLES = Path("tree") / "leaf_examples.npz"
EVAL_EXAMPLES = Path("eval") / "leaf_examples.npz"


def save(path: str | Path, groups: dict[str, dict[int, torch.Tensor | np.ndarray]]) -> Path:
    """groups: name -> leaf -> uint8 images (k, 3, H, W). Written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{group}/{leaf}": np.asarray(images, dtype=np.uint8)
              for group, by_leaf in groups.items() for leaf, images in by_leaf.items() if len(images)}
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    tmp.replace(path)
    return path


def load(path: str | Path) -> dict[str, dict[int, np.ndarray]]:
    """The groups saved at `path` ({} when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, dict[int, np.ndarray]] = {}
    with np.load(path) as data:
        for key in data.files:
            group, _, leaf = key.rpartition("/")
            out.setdefault(group, {})[int(leaf)] = data[key]
    return out

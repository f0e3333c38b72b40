"""Clustering quality of a grown tree: argmax-leaf assignments scored against labels."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..metrics.clustering import clustering_report
from .model import TreeVAE
from .trainer import leaf_assignments


def evaluate_tree(model: TreeVAE, x: torch.Tensor, labels: np.ndarray | None) -> dict[str, Any]:
    """NMI, ACC, ARI, leaf purity and dendrogram purity of the leaf assignments, plus leaf sizes."""
    leaves = leaf_assignments(model, x)
    report: dict[str, Any] = {
        "n": int(len(leaves)),
        "leaves": model.tree.leaves,
        "leaf_sizes": {str(l): int((leaves == l).sum()) for l in model.tree.leaves},
    }
    if labels is not None:
        report.update(clustering_report(np.asarray(labels), leaves, children=model.tree.children_map()))
    return report

"""Leaf purity of generations: per leaf, the histogram of a classifier's predicted classes.

purity = majority fraction (1 for a leaf whose generations are all one class, 1/K when spread
evenly over K classes); entropy in nats (scipy), 0 for a pure leaf, log K when uniform.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import entropy


def class_histogram(predictions, n_classes: int) -> np.ndarray:
    predictions = np.asarray(predictions, dtype=np.int64)
    if predictions.ndim != 1:
        raise ValueError(f"predictions must be 1-D, got shape {predictions.shape}")
    if len(predictions) and (predictions.min() < 0 or predictions.max() >= n_classes):
        raise ValueError(f"predictions must lie in [0, {n_classes}), got [{predictions.min()}, {predictions.max()}]")
    return np.bincount(predictions, minlength=n_classes).astype(np.int64)


def purity(counts) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("purity of an empty histogram")
    return float(counts.max() / counts.sum())


def class_entropy(counts) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("entropy of an empty histogram")
    return float(entropy(counts))


def purity_report(counts_by_leaf: dict[int, np.ndarray]) -> dict[str, Any]:
    """Per leaf: n, histogram, majority class, purity, entropy; plus the size-weighted mean purity
    and entropy, and the class that takes the most generations over all leaves with its share."""
    leaves = {}
    for leaf, counts in sorted(counts_by_leaf.items()):
        counts = np.asarray(counts, dtype=np.int64)
        if counts.sum() == 0:
            continue
        leaves[int(leaf)] = {"n": int(counts.sum()), "histogram": counts.tolist(), "majority": int(counts.argmax()),
                             "purity": purity(counts), "entropy": class_entropy(counts)}
    if not leaves:
        raise ValueError("purity report: no leaf has any generations")
    n = sum(v["n"] for v in leaves.values())
    overall = np.sum([v["histogram"] for v in leaves.values()], axis=0)  # every leaf's generations together
    return {"leaves": leaves, "mean_purity": sum(v["purity"] * v["n"] for v in leaves.values()) / n,
            "mean_entropy": sum(v["entropy"] * v["n"] for v in leaves.values()) / n,
            "largest_class": int(overall.argmax()), "largest_class_share": float(overall.max() / n)}

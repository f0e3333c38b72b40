"""Clustering quality of leaf assignments against labels.

NMI and ARI come from scikit-learn, the matching behind ACC from scipy's Hungarian solver;
leaf purity and dendrogram purity (Kobren et al., 2017) are computed from class counts.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix


def _check(labels, clusters) -> tuple[np.ndarray, np.ndarray]:
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.ndim != 1 or clusters.ndim != 1:
        raise ValueError(f"labels and clusters must be 1-D, got shapes {labels.shape} and {clusters.shape}")
    if len(labels) != len(clusters):
        raise ValueError(f"clusters has {len(clusters)} entries but labels has {len(labels)}")
    if len(labels) == 0:
        raise ValueError("labels is empty")
    return labels, clusters


def nmi(labels, clusters) -> float:
    return float(normalized_mutual_info_score(*_check(labels, clusters)))


def ari(labels, clusters) -> float:
    return float(adjusted_rand_score(*_check(labels, clusters)))


def cluster_acc(labels, clusters) -> float:
    """Accuracy under the best one-to-one cluster -> class matching; extra clusters count as errors."""
    labels, clusters = _check(labels, clusters)
    counts = contingency_matrix(labels, clusters)  # (classes, clusters)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(labels))


def leaf_purity(labels, clusters) -> float:
    """Size-weighted mean majority-class fraction of the clusters."""
    labels, clusters = _check(labels, clusters)
    return float(contingency_matrix(labels, clusters).max(0).sum() / len(labels))


def dendrogram_purity(labels, leaf_of_sample, children: dict[int, list[int]]) -> float:
    """Mean, over same-class sample pairs, of the purity of their lowest common ancestor.

    `children` maps every node id to its child ids (heap order: a parent has a smaller id
    than its children); samples sit at leaves. Pass-through nodes (one child) hold no pairs.
    """
    labels, leaf_of_sample = _check(labels, leaf_of_sample)
    classes, y = np.unique(labels, return_inverse=True)
    unknown = set(np.unique(leaf_of_sample).tolist()) - {n for n, c in children.items() if not c}
    if unknown:
        raise ValueError(f"leaf_of_sample names nodes that are not leaves of the tree: {sorted(unknown)}")
    counts = {n: np.zeros(len(classes), dtype=np.float64) for n in children}
    for leaf in np.unique(leaf_of_sample):
        counts[int(leaf)] = np.bincount(y[leaf_of_sample == leaf], minlength=len(classes)).astype(np.float64)
    total_pairs = float((np.bincount(y) * (np.bincount(y) - 1) / 2).sum())
    if total_pairs == 0:
        return 1.0
    score = 0.0
    for node in sorted(children, reverse=True):  # children before parents
        kids = children[node]
        if kids:
            counts[node] = sum(counts[k] for k in kids)
        n_node = counts[node].sum()
        if n_node == 0:
            continue
        if not kids:
            pairs = counts[node] * (counts[node] - 1) / 2
        elif len(kids) == 2:
            pairs = counts[kids[0]] * counts[kids[1]]
        else:
            continue
        score += float((pairs * counts[node] / n_node).sum())
    return score / total_pairs


def clustering_report(labels, clusters, children: dict[int, list[int]] | None = None) -> dict[str, Any]:
    report = {"nmi": nmi(labels, clusters), "ari": ari(labels, clusters), "acc": cluster_acc(labels, clusters),
              "leaf_purity": leaf_purity(labels, clusters)}
    if children is not None:
        report["dendrogram_purity"] = dendrogram_purity(labels, clusters, children)
    return report

"""Clustering quality of leaf assignments against labels.

NMI and ARI come from scikit-learn, the matching behind ACC from scipy's Hungarian solver;
leaf purity and dendrogram purity (Kobren et al., 2017) are computed from class counts.
All functions take 1-D array-likes of equal, non-zero length and return Python floats.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import bootstrap
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix


def _check(labels, clusters, name: str = "clusters") -> tuple[np.ndarray, np.ndarray]:
    """Validate `labels` against the second argument (called `name` in messages)."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if clusters.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {clusters.shape}")
    if len(labels) != len(clusters):
        raise ValueError(f"{name} has {len(clusters)} entries but labels has {len(labels)}")
    if len(labels) == 0:
        raise ValueError(f"labels and {name} are empty")
    return labels, clusters


def nmi(labels, clusters) -> float:
    """Normalized mutual information (arithmetic-mean normalisation)."""
    labels, clusters = _check(labels, clusters)
    return float(normalized_mutual_info_score(labels, clusters, average_method="arithmetic"))


def nmi_standard_error(labels, clusters, n_resamples: int = 999, seed: int = 0) -> float:
    """How far NMI measured on these samples would move on another sample of the same size: the
    bootstrap standard error (scipy's paired bootstrap over the (label, cluster) pairs). On 360
    test images a 10-leaf tree's NMI moves by about 0.02, on 10,000 by about 0.004. (Simulated,
    it under-states the spread over fresh samples by ~15 % at n = 360; tests/metrics.)"""
    labels, clusters = _check(labels, clusters)
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be >= 2, got {n_resamples}")
    with warnings.catch_warnings():  # a constant bootstrap distribution (one class or one cluster): error 0
        warnings.simplefilter("ignore")
        res = bootstrap((labels, clusters), nmi, paired=True, vectorized=False, n_resamples=n_resamples,
                        method="percentile", rng=np.random.default_rng(seed))
    return float(res.standard_error)


def histogram_pairs(histograms: dict[Any, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, clusters), one pair per sample, from per-cluster class counts (a report's
    `leaf_histograms`: {leaf: [count of class 0, count of class 1, ...]}). Every metric here
    depends only on these counts, so the pairs score as the samples that gave them."""
    if not histograms:
        raise ValueError("histograms is empty")
    labels = [np.repeat(np.arange(len(counts)), counts) for counts in histograms.values()]
    clusters = [np.full(int(np.sum(counts)), int(leaf)) for leaf, counts in histograms.items()]
    return np.concatenate(labels), np.concatenate(clusters)


def ari(labels, clusters) -> float:
    """Adjusted Rand index."""
    return float(adjusted_rand_score(*_check(labels, clusters)))


def cluster_acc(labels, clusters) -> float:
    """Accuracy under the best one-to-one cluster -> class matching; extra clusters count as errors."""
    labels, clusters = _check(labels, clusters)
    counts = contingency_matrix(labels, clusters)  # (classes, clusters), rectangular is fine
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(labels))


def leaf_purity(labels, clusters) -> float:
    """Size-weighted mean majority-class fraction of the clusters (= sum of max counts / N)."""
    labels, clusters = _check(labels, clusters)
    return float(contingency_matrix(labels, clusters).max(axis=0).sum() / len(labels))


def _check_children(children: dict[int, list[int]]) -> dict[int, list[int]]:
    children = {int(n): [int(k) for k in ks] for n, ks in children.items()}
    for node, kids in children.items():
        if len(kids) > 2:
            raise ValueError(f"children: node {node} has {len(kids)} children (at most 2)")
        missing = [k for k in kids if k not in children]
        if missing:
            raise ValueError(f"children: node {node} lists children {missing} that have no entry")
        if any(k <= node for k in kids):
            raise ValueError(f"children: node {node} has children {kids}; heap order needs larger ids")
    return children


def dendrogram_purity(labels, leaf_of_sample, children: dict[int, list[int]]) -> float:
    """Mean, over unordered same-class sample pairs, of the purity of their lowest common ancestor.

    `children` maps every node id to its child ids (heap order: a parent has a smaller id than
    its children); samples sit at leaves (`leaf_of_sample[n]` is a leaf id). The purity of a
    node for class k is the fraction of samples under it with class k. Counts are propagated
    bottom-up: a leaf holds C(n_k, 2) class-k pairs, a two-child node n_k(left) * n_k(right),
    a pass-through node (one child) holds none. Runs in O(N + nodes * classes).
    If no class has two samples there are no pairs and the result is 1.0.
    """
    labels, leaf_of_sample = _check(labels, leaf_of_sample, name="leaf_of_sample")
    children = _check_children(children)
    _, y = np.unique(labels, return_inverse=True)
    leaf_ids, leaf_idx = np.unique(leaf_of_sample, return_inverse=True)
    not_leaves = sorted(int(n) for n in leaf_ids if children.get(int(n), [None]) != [])
    if not_leaves:
        raise ValueError(f"leaf_of_sample names nodes that are not leaves of the tree: {not_leaves}")

    n_classes = int(y.max()) + 1
    class_totals = np.bincount(y, minlength=n_classes).astype(np.int64)
    total_pairs = int((class_totals * (class_totals - 1) // 2).sum())
    if total_pairs == 0:
        return 1.0

    per_leaf = np.zeros((len(leaf_ids), n_classes), dtype=np.int64)
    np.add.at(per_leaf, (leaf_idx, y), 1)
    counts = {n: np.zeros(n_classes, dtype=np.int64) for n in children}
    for i, leaf in enumerate(leaf_ids):
        counts[int(leaf)] = per_leaf[i]

    score = 0.0
    for node in sorted(children, reverse=True):  # heap order: children before parents
        kids = children[node]
        if kids:
            counts[node] = sum((counts[k] for k in kids), np.zeros(n_classes, dtype=np.int64))
        if len(kids) == 0:
            pairs = counts[node] * (counts[node] - 1) // 2
        elif len(kids) == 2:
            pairs = counts[kids[0]] * counts[kids[1]]
        else:  # pass-through: transparent, its pairs have their LCA further down
            continue
        n_node = int(counts[node].sum())
        if n_node:
            score += float((pairs * counts[node]).sum()) / n_node
    return score / total_pairs


def clustering_report(labels, clusters, children: dict[int, list[int]] | None = None) -> dict[str, Any]:
    """NMI, ARI, ACC and leaf purity; plus dendrogram purity when `children` is given
    (then `clusters` are leaf ids of that tree)."""
    labels, clusters = _check(labels, clusters)
    report = {"nmi": nmi(labels, clusters), "ari": ari(labels, clusters), "acc": cluster_acc(labels, clusters),
              "leaf_purity": leaf_purity(labels, clusters)}
    if children is not None:
        report["dendrogram_purity"] = dendrogram_purity(labels, clusters, children)
    return report
